"""Whole-head motion: a motion field over the whole photo, shared by every renderer.

The face renderers (warp or generator) draw the face in a crop that follows the head. Everything
else a user sees move, hair, ears, the head's outline, the neck, is this stage's job:

- once per photo (``HeadLayers.from_photo``): the person is segmented (a small pretrained network,
  ``person_matte``; without its weights OpenCV's GrabCut seeded by the face's landmarks), a *head
  weight* says how much each pixel follows the head (1 on the head, a smooth fall-off down the neck,
  0 on the shoulders and beyond, and at the photo's side edges beside the face), the matte is continued
  above the photo's top edge where the frame cuts the crown (``matte_above``), and a *background plate*
  is the photo with the moving part of the person filled in from the surrounding background (its structure
  continued near the hole's edge, a push-pull fill deeper in: ``fill_continuing_edges``), for what the moving
  head uncovers;
- per frame (``HeadMotion.render``): the head's similarity S (rotation, scale, translation; for
  the outline, less the sideways shift a turn gives the face alone: ``outline_similarity``) gives
  a backward motion field ``p -> p - w (S x - x)`` solved by a few fixed-point steps on a coarse
  grid (the field is smooth), and where they do not converge through the share w itself; the photo
  and its person matte are resampled through it and laid over the plate. The background never moves,
  the head moves rigidly, the neck follows partly.

Only the region that can change (the head's support, moved and unmoved) is computed, so a large
photo costs about as much as a small one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..landmarks.crop import face_size
from ..landmarks.retarget import STABLE_POINTS, fit_similarity

log = logging.getLogger(__name__)

# Head weight in face sizes (the larger side of the landmarks' box): 1 down to NECK_START below
# the chin, 0 from NECK_END below it; sideways 1 within SIDE_START of the face centre, 0 beyond
# SIDE_END (shoulders and raised hands stay put).
NECK_START = 0.05
NECK_END = 0.85
SIDE_START = 1.2
SIDE_END = 2.0
# ... and 0 at the photo's side edges, rising to full over this many face sizes from them.
EDGE_FADE = 0.1
# The weight is smooth on the scale of that fade: it is computed on nodes at most this share of the fade apart
# and enlarged (a 2048 px photo's map cost half a second a photo at every pixel; one of 512 px is made per pixel).
WEIGHT_NODE_SHARE = 1 / 16
# Above the photo's top edge (a head moving down in a photo whose frame cuts its hair) the person goes on as the
# crown's outline does: an ellipse of the head prior's aspect (CROWN_ASPECT, width over height) fitted to the
# outline within CROWN_BAND face sizes of the edge, continued over CROWN_ROWS face sizes above it. Inside it the
# matte (and the photo) mirrored at the edge, outside it the background plate.
CROWN_BAND = 0.2
CROWN_ROWS = 0.5
CROWN_ASPECT = 0.72 / 0.88
# Beyond the photo's edge (a head moved down in a photo whose frame cuts its hair) the photo is mirrored, so hair
# goes on as hair; repeating the edge's pixels drew streaks above the head.
PHOTO_BORDER = cv2.BORDER_REFLECT_101
# Variants measured and dropped here (the body following the chin, and more): docs/findings.md, "Whole-head motion".
# Share of the jaw's width that the face's landmarks shift per unit of yaw proxy while the head's
# outline stays (see ``outline_similarity``). Full-frame self-reenactment, face-box SSIM on three
# talking videos (liveportrait_d10, tpsmm_driving, vretalking_face4) at shares 0 / 0.5 / 0.75 / 1:
# 0.784 / 0.789 / 0.785 / 0.776, 0.809 / 0.812 / 0.813 / 0.811, 0.651 / 0.657 / 0.662 / 0.665.
YAW_SHIFT_SHARE = 0.5
# Segmentation runs on the photo shrunk to about this longest side (GrabCut is slow at full size).
SEGMENT_SIDE = 320
GRABCUT_ITERATIONS = 4
# GrabCut starts its colour models with k-means from OpenCV's per-thread random generator: seeded
# before each segmentation, a photo gets the same matte whatever ran before it in the process (a
# batch, an eval over many videos).
GRABCUT_SEED = 0
# The background plate is filled from pixels the matte calls background (below this).
BACKGROUND_MATTE = 0.5
# The matte's edge is softened by this fraction of the face size.
MATTE_SOFTNESS = 0.015
# The plate is filled where the person's moving part is, grown by this fraction of the face size
# (the matte's soft edge and hair strands beyond it).
PLATE_GROW = 0.06
# How the plate's hole is filled (``fill_continuing_edges``). A moving head uncovers only a sliver near the hole's
# edge, where the background's structure must go on (push-pull alone averaged a flag's stripes into a smear). Telea
# inpainting continues it there, up to EDGE_FILL_FULL face sizes from the known background, fading into the push-pull
# fill by EDGE_FILL_END: deeper in it draws streaks and bends blinds' slats along the hole's outline (wider bands
# measured and dropped: docs/findings.md, "2026-12-07 (last)"). It runs on the region shrunk to EDGE_FILL_SIDE px
# on its longest side, with OpenCV's neighbourhood radius EDGE_FILL_RADIUS px there, and is enlarged.
EDGE_FILL_FULL = 0.04
EDGE_FILL_END = 0.12
EDGE_FILL_SIDE = 400
EDGE_FILL_RADIUS = 3
# Over that, up to PATCH_FILL_BAND face sizes from the known background, the background's own patches go on into
# the hole (``fill_from_patches``, an exemplar fill after Criminisi, Perez and Toyama 2004): a flag's stripes and
# blinds' slats continue where Telea fanned them out and push-pull averaged them. On the region shrunk so the face
# is PATCH_FILL_FACE px (what a turn uncovers is mostly out of focus), with PATCH_FILL_SIZE px patches, each taken
# from at most PATCH_FILL_REACH px away (a nearby piece of the same background, never a far object), PATCH_FILL_STEP
# patches a round; fading into the fills above over the band's last PATCH_FILL_FADE.
PATCH_FILL_BAND = 0.22
PATCH_FILL_FADE = 0.04
PATCH_FILL_FACE = 110
PATCH_FILL_SIZE = 7
PATCH_FILL_REACH = 48
PATCH_FILL_STEP = 4
# Of patches that match about as well the nearest is taken: each px of distance squared costs this much squared
# difference (summed over the channels) per known pixel (at the reach's end about 9 grey levels a channel).
PATCH_FILL_NEAR = 0.05
# The copied pixels are blurred this much (px at the shrunk size) where patches meet.
PATCH_FILL_SEAMS = 1.0
# Backward field: grid step in pixels (at least; ``field_step``) and fixed-point iterations.
GRID_STEP = 4
# ... and at most this share of the face size: the field is smooth over the neck's fall-off (most of a face) and
# its steepest fade (EDGE_FADE) spans three nodes, so a large photo's head is solved on as many nodes as a small
# one's (1/64 changed no self-reenactment video's face-box SSIM by 0.0002: docs/findings.md).
FIELD_STEP_FACE = 1 / 32
FIELD_ITERATIONS = 4
# The fixed-point steps converge where the head's weight changes slowly against the motion. Where a head moves far
# against a steep weight (a photo's still edge beside a face that moves by more than EDGE_FADE) they do not: a node
# still off by more than SOLVED_PIXELS is solved by its share instead (``_solve_by_share``): SHARE_SAMPLES shares
# tried, then SHARE_HALVINGS bisections (a share to 0.0005: a twentieth of a pixel for a move of 100), each pixel found
# for the head's similarity and corrected by SHARE_CORRECTIONS steps through a 3D head's motion.
SOLVED_PIXELS = 0.25
SHARE_SAMPLES = 9
SHARE_HALVINGS = 8
SHARE_CORRECTIONS = 4
# cv2.remap takes maps of fewer than 32767 columns and rows: ``sample_at`` lays any other in rows of this many.
SAMPLE_ROW = 1024
# A segmentation that covers less than this share of the head prior, or more than this share of
# the image, is not believed; the prior shapes are used instead.
MIN_HEAD_COVERAGE = 0.45
MAX_PERSON_SHARE = 0.97


def lattice_nodes(roi: tuple[int, int, int, int], lattice: int) -> tuple[int, int]:
    """(columns, rows) of the nodes every ``lattice`` pixels from ``roi``'s corner that cover it (the last
    node at or beyond its last pixel); ``lattice`` 1: its pixels."""
    x0, y0, x1, y1 = roi
    return -(-(x1 - x0 - 1) // lattice) + 1, -(-(y1 - y0 - 1) // lattice) + 1


def enlarge(coarse: np.ndarray, size: tuple[int, int], ratio: float, offset: tuple[float, float] = (0.0, 0.0),
            ) -> np.ndarray:
    """``coarse`` (float32, node (i, j) at i, j) sampled bilinearly at ``offset + ratio * (x, y)`` for every
    pixel (x, y) of an image of ``size`` (width, height), edges replicated."""
    matrix = np.array([[ratio, 0.0, offset[0]], [0.0, ratio, offset[1]]])
    return cv2.warpAffine(coarse, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def field_step(points: np.ndarray) -> int:
    """The backward field's grid step (pixels) for a face with (68, 2) ``points``."""
    return max(GRID_STEP, int(FIELD_STEP_FACE * face_size(np.asarray(points, np.float64))))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def head_similarity(photo_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """The head's motion from the photo to a target as a 2x3 similarity, fitted to the stable points
    (upper jaw, eye corners, nose) as relative retargeting does, so an opening mouth does not move the head."""
    src = np.asarray(photo_points, np.float64)[STABLE_POINTS]
    dst = np.asarray(target_points, np.float64)[STABLE_POINTS]
    a, b = fit_similarity(src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1])
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def head_similarities(photo_points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, 2, 3) head similarities for (T, 68, 2) target points."""
    return np.stack([head_similarity(photo_points, t) for t in targets]) if len(targets) else np.zeros((0, 2, 3))


def outline_similarity(matrix: np.ndarray, photo_points: np.ndarray, target_points: np.ndarray,
                       yaw_share: float | None = None) -> np.ndarray:
    """The head similarity for the head's outline (hair, ears): ``matrix`` less the sideways shift
    that a turn of the head (yaw) gives the face's landmarks but not its silhouette.

    Landmarks sit on the front of the head, so a turn moves them sideways while the outline of a
    turning head stays nearly where it was; the shift is ``yaw_share`` x the change of the yaw
    proxy (nose offset between the jaw's ends, over the jaw's width) x the jaw's width.
    """
    from ..landmarks.reference import pose_features

    share = YAW_SHIFT_SHARE if yaw_share is None else yaw_share
    if share == 0:
        return np.asarray(matrix, np.float64)
    target = np.asarray(target_points, np.float64)
    both = pose_features(np.stack([np.asarray(photo_points, np.float64), target]))
    right = target[45] - target[36]
    right /= max(float(np.linalg.norm(right)), 1e-6)
    width = float(np.linalg.norm(target[16] - target[0]))
    out = np.array(matrix, np.float64)
    out[:, 2] -= share * float(both["yaw"][1] - both["yaw"][0]) * width * right
    return out


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def _face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Face centre, unit right and down vectors (from the eye line), and the face size."""
    points = np.asarray(points, np.float64)
    right = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    right /= max(float(np.linalg.norm(right)), 1e-6)
    down = np.array([-right[1], right[0]])
    return points.mean(axis=0), right, down, face_size(points)


def head_weight_map(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """(H, W) float32: how much each pixel follows the head, from the photo's (68, 2) landmarks."""
    height, width = shape
    centre, right, down, size = _face_frame(points)
    fade = max(EDGE_FADE * size, 1.0)
    step = max(1, int(fade * WEIGHT_NODE_SHARE))
    columns, rows = lattice_nodes((0, 0, width, height), step)
    ys, xs = np.mgrid[0:rows, 0:columns].astype(np.float32)
    if step > 1:
        xs *= step
        ys *= step
    chin = float(np.asarray(points, np.float64)[8] @ down)
    along = (xs * down[0] + ys * down[1] - chin) / size
    side = np.abs((xs - centre[0]) * right[0] + (ys - centre[1]) * right[1]) / size
    vertical = 1.0 - _smoothstep((along - NECK_START) / (NECK_END - NECK_START))
    lateral = 1.0 - _smoothstep((side - SIDE_START) / (SIDE_END - SIDE_START))
    # The photo's side edges stay put: what lies beyond them (hair cut by the frame) is unknown, so a head moving
    # away from an edge stretches what is between instead of revealing it. The face itself always moves. Above the
    # top edge the crown goes on (``matte_above``): a head moving down shows its top instead of a stretched strip.
    edge = _smoothstep(np.minimum(xs, width - 1 - xs) / fade)
    hull = np.ones((rows, columns), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(np.asarray(points) / step).astype(np.int32)), 0)
    distance = cv2.distanceTransform(hull, cv2.DIST_L2, 3)
    face = 1.0 - _smoothstep(distance * step / fade)
    weight = (vertical * lateral * np.maximum(edge, face)).astype(np.float32)
    return weight if step == 1 else enlarge(weight, (width, height), 1.0 / step)


def row_runs(touched: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of True along each row of ``touched`` (R, C): (row, first, end) arrays, ends excluded."""
    padded = np.zeros((touched.shape[0], touched.shape[1] + 2), np.int8)
    padded[:, 1:-1] = touched
    change = np.diff(padded, axis=1)
    rows, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)
    return rows, starts, ends


def _crown_runs(person: np.ndarray, centre_x: float, reach: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The person's extent (first, end) in each row of ``person`` (boolean rows from the photo's top edge) that is
    connected to the run of its top row nearest ``centre_x`` (within ``reach``); None if no such run."""
    rows, firsts, ends = row_runs(person)
    lefts, rights = [], []
    low, high = centre_x - reach, centre_x + reach
    for row in range(person.shape[0]):
        starts, stops = firsts[rows == row], ends[rows == row]
        touching = (stops > low) & (starts < high)
        if not touching.any():
            break
        if not lefts:
            # The crown: of the top row's runs near the face, the one nearest its centre.
            nearest = np.argmin(np.maximum(np.maximum(starts - centre_x, centre_x - stops), 0) + ~touching * 1e9)
            touching = np.arange(len(starts)) == nearest
        low, high = starts[touching].min(), stops[touching].max()
        lefts.append(low)
        rights.append(high)
    return (np.array(lefts, np.float64), np.array(rights, np.float64)) if lefts else None


def matte_above(matte: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(rows, W) float32: the person's matte continued above the photo's top edge, the farthest row first.

    Where the crown meets the edge, the outline within CROWN_BAND face sizes of it is fitted by an ellipse of
    CROWN_ASPECT (upright, least squares): inside it the matte mirrored at the edge, outside nothing (the plate
    shows there). A crown that reaches the photo's side as well (a face filling the frame) goes on mirrored; where
    no crown meets the edge, nothing of the person lies beyond it."""
    height, width = matte.shape
    points = np.asarray(points, np.float64)
    size = face_size(points)
    rows = int(np.clip(np.ceil(CROWN_ROWS * size), 1, height - 1))
    mirrored = matte[rows:0:-1]
    band = int(np.clip(round(CROWN_BAND * size), 3, height))
    runs = _crown_runs(matte[:band] >= 0.5, float(points[:, 0].mean()), size)
    if runs is None:
        return np.zeros((rows, width), np.float32)
    lefts, ends = runs
    if lefts[0] <= 0 or ends[0] >= width:
        return np.ascontiguousarray(mirrored, np.float32)
    # An upright ellipse of aspect k through the top row's ends, (x - x_c)^2 / k^2 + (y - y_c)^2 = R^2, its centre
    # x_c theirs: the half-widths h below give (h^2 - h_0^2) / k^2 + y^2 = 2 y y_c, fitted by least squares.
    k = CROWN_ASPECT
    half_widths = 0.5 * (ends - lefts)
    centre_x = 0.5 * (lefts[0] + ends[0]) - 0.5
    y = np.arange(len(lefts), dtype=np.float64)
    centre_y = float(y @ ((half_widths ** 2 - half_widths[0] ** 2) / k ** 2 + y ** 2)) / max(2.0 * float(y @ y), 1e-9)
    if centre_y <= 0:
        # The outline does not widen below the edge (straight, or narrowing): it goes on mirrored.
        return np.ascontiguousarray(mirrored, np.float32)
    radius2 = (half_widths[0] / k) ** 2 + centre_y ** 2
    soft = max(2.0, 2.0 * MATTE_SOFTNESS * size)
    above = -np.arange(rows, 0, -1, dtype=np.float64)[:, None]
    inside = radius2 - (above - centre_y) ** 2
    half = np.where(inside > 0, k * np.sqrt(np.maximum(inside, 0.0)), -soft)
    beyond = np.abs(np.arange(width, dtype=np.float64)[None] - centre_x) - half
    dome = 1.0 - _smoothstep(beyond / soft + 0.5)
    return np.minimum(mirrored, dome).astype(np.float32)


def _prior_shapes(shape: tuple[int, int], points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 masks: the sure person (landmark hull, the neck and the middle of the chest below it),
    the likely head (an ellipse over face, hair and ears) and the likely body (the neck widening
    into shoulders)."""
    height, width = shape
    points = np.asarray(points, np.float64)
    centre, right, down, size = _face_frame(points)
    sure = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(sure, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    chin = points[8]
    far = 4.0 * max(height, width)
    # The neck and the middle of the chest below it: a shirt the colour of the wall must not be cut
    # in two (one half moving with the head, the other left behind).
    torso = np.array([chin - right * 0.15 * size, chin + right * 0.15 * size,
                      chin + right * 0.8 * size + down * 1.0 * size, chin + right * 0.8 * size + down * far,
                      chin - right * 0.8 * size + down * far, chin - right * 0.8 * size + down * 1.0 * size])
    cv2.fillPoly(sure, [np.round(torso).astype(np.int32)], 1)
    head = np.zeros(shape, np.uint8)
    head_centre = centre - down * 0.22 * size
    angle = float(np.degrees(np.arctan2(right[1], right[0])))
    cv2.ellipse(head, (int(round(head_centre[0])), int(round(head_centre[1]))),
                (int(round(0.72 * size)), int(round(0.88 * size))), angle, 0, 360, 1, -1)
    body = np.zeros(shape, np.uint8)
    shoulders = chin + down * 0.9 * size
    polygon = np.array([chin - right * 0.35 * size, chin + right * 0.35 * size,
                        shoulders + right * 1.6 * size, shoulders + right * 1.9 * size + down * far,
                        shoulders - right * 1.9 * size + down * far, shoulders - right * 1.6 * size])
    cv2.fillPoly(body, [np.round(polygon).astype(np.int32)], 1)
    return sure, head, body


def segment_person(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A soft (H, W) float32 matte of the person whose face has these landmarks.

    The person-matte network (``person_matte``: hair, headscarves and clothes included) gives each pixel a
    probability; the part of it connected to the face is kept (another person beside them stays put), its
    holes filled. Without the network's weights, GrabCut seeded by the landmarks does it by colour
    (``_grabcut``). When the answer is implausible (most of the head missing, or everything the person) the
    prior shapes themselves are the matte.
    """
    height, width = image.shape[:2]
    scale = min(1.0, SEGMENT_SIDE / max(height, width))
    small_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    small_points = (np.asarray(points, np.float64) + 0.5) * (small_size[0] / width, small_size[1] / height) - 0.5
    sure, head, body = _prior_shapes(small.shape[:2], small_points)
    probability = _network_probability(image)
    if probability is None:
        found = _grabcut(small, sure, head, body)
    else:
        reduced = cv2.resize(probability, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else probability
        found = _component_with(reduced > 0.5, sure > 0)
    if not _plausible(found, head):
        return _soft(np.maximum(head, body).astype(bool), points, (width, height))
    if probability is None:
        return _soft(found, points, (width, height))
    # The person's part the face belongs to, a little grown so its soft edge is kept; the network's own soft
    # edge, and the holes it left (eyes, a mouth) filled.
    kept = cv2.resize(cv2.dilate(found.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_LINEAR)
    inside = cv2.resize(found.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 1.0
    return np.clip(np.maximum(probability, inside) * kept, 0.0, 1.0).astype(np.float32)


def _plausible(found: np.ndarray, head: np.ndarray) -> bool:
    coverage = (found & (head > 0)).sum() / max(int((head > 0).sum()), 1)
    if found.any() and coverage >= MIN_HEAD_COVERAGE and found.mean() <= MAX_PERSON_SHARE:
        return True
    log.debug("segmentation implausible (head coverage %.2f, image share %.2f)", coverage, found.mean())
    return False


def _soft(mask: np.ndarray, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A small boolean ``mask`` at the photo's (width, height), its edge softened (MATTE_SOFTNESS)."""
    matte = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    sigma = max(MATTE_SOFTNESS * face_size(points), 0.6)
    return np.clip(cv2.GaussianBlur(matte, (0, 0), sigma), 0.0, 1.0)


def _network_probability(image: np.ndarray) -> np.ndarray | None:
    """The person-matte network's probability for ``image``, or None (and a warning) without its weights."""
    from .person_matte import person_probability, weights_path

    path = weights_path()
    if not path.is_file():
        log.warning("%s: no person-matte weights; segmenting by colour instead (hair may be left behind)", path)
        return None
    try:
        return person_probability(image, path)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        log.warning("%s: unreadable person-matte weights (%s); segmenting by colour instead", path, error)
        return None


def _grabcut(small: np.ndarray, sure: np.ndarray, head: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The person by colour: GrabCut on the shrunk photo, seeded with the landmark hull as sure foreground and
    a head ellipse and body shape as likely foreground; the component holding the face, holes filled (all
    False if GrabCut cannot model the photo, e.g. one colour)."""
    likely = np.maximum(head, body)
    mask = np.where(likely > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[sure > 0] = cv2.GC_FGD
    try:
        background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.setRNGSeed(GRABCUT_SEED)
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, None, background_model, foreground_model,
                    GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error as error:  # a degenerate image (one colour): GrabCut cannot model it
        log.debug("GrabCut failed (%s)", error)
        return np.zeros(small.shape[:2], bool)
    found = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return _component_with(found, sure > 0)


def _component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected parts of ``mask`` that touch ``seed`` (the face), holes filled."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[seed & mask])
    keep = keep[keep > 0]
    out = np.isin(labels, keep) if len(keep) else mask
    # Fill holes (eyes, mouth, glasses that GrabCut called background): background not reachable from the border.
    inverse = (~out).astype(np.uint8)
    count, labels = cv2.connectedComponents(inverse, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = (inverse > 0) & ~np.isin(labels, border)
    return out | holes


def fill_from_surroundings(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the pixels where ``known`` is False smoothly from the known ones (push-pull).

    Known pixels are unchanged; a hole gets the known colours around it, averaged over ever
    larger scales towards its middle: no streaks, no copy of what was in the hole.
    """
    image = np.asarray(image, np.float32)
    known = np.asarray(known, bool)
    if known.all():
        return image.copy()
    if not known.any():
        return np.full_like(image, 127.0)
    return _push_pull(image, known.astype(np.float32))


def fill_continuing_edges(image: np.ndarray, known: np.ndarray, size: float) -> np.ndarray:
    """Fill the pixels where ``known`` is False. Up to PATCH_FILL_BAND of the face ``size`` from the known ones: the
    background's own patches (``fill_from_patches``); deeper in, a smooth push-pull fill (``fill_from_surroundings``)
    that goes on from them. Where no patch could be taken at all: near the known pixels Telea's inpainting continues
    the background's structure, fading into push-pull from EDGE_FILL_FULL to EDGE_FILL_END. Known pixels are
    unchanged; float32 like that fill."""
    smooth = fill_from_surroundings(image, known)
    known = np.asarray(known, bool)
    if known.all() or not known.any():
        return smooth
    height, width = known.shape
    ratio = min(1.0, EDGE_FILL_SIDE / max(height, width))
    small = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    # A shrunk pixel is known only where all it covers is: no colour of the hole's content enters the inpainting.
    small_known = cv2.resize(known.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.999
    if not small_known.any():
        return smooth
    source = np.clip(np.asarray(image, np.float32) + 0.5, 0, 255).astype(np.uint8)
    # Distance (px) of each hole pixel to the nearest known one, in face sizes.
    distance = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5) / max(size, 1.0)
    patches, reached = _patch_fill(source, known, size)
    if patches is not None:
        share = reached * (1.0 - _smoothstep((distance - PATCH_FILL_BAND + PATCH_FILL_FADE) / PATCH_FILL_FADE))
        # Deeper in, the push-pull fill goes on from the patches' colours where the band ends, not from the
        # background beyond it: no outline of the band where a far-moving head uncovers its end. (Push-pull reads
        # only the pixels it is told are known.)
        full = known | (share >= 0.999)
        band = np.where(full[..., None], patches, smooth)
        band[known] = smooth[known]
        inner = fill_from_surroundings(band, full)
        filled = inner + (patches - inner) * share[..., None]
    else:
        small_image = cv2.resize(source, small, interpolation=cv2.INTER_AREA)
        inpainted = cv2.inpaint(small_image, (~small_known).astype(np.uint8), EDGE_FILL_RADIUS, cv2.INPAINT_TELEA)
        edge = cv2.resize(inpainted, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        share = 1.0 - _smoothstep((distance - EDGE_FILL_FULL) / (EDGE_FILL_END - EDGE_FILL_FULL))
        filled = smooth + (edge - smooth) * share[..., None]
    filled[known] = smooth[known]
    return filled


def _patch_fill(image: np.ndarray, known: np.ndarray, size: float) -> tuple[np.ndarray | None, np.ndarray]:
    """``fill_from_patches`` on ``image`` (uint8) shrunk so the face ``size`` is PATCH_FILL_FACE px, over the
    hole's band PATCH_FILL_BAND face sizes deep, enlarged back: (the filled image, float32, None if nothing was
    filled; the share of each pixel that was filled, 0-1)."""
    height, width = known.shape
    ratio = min(1.0, PATCH_FILL_FACE / max(size, 1.0))
    small = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    small_known = cv2.resize(known.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.999
    if not small_known.any() or small_known.all():
        return None, np.zeros(known.shape, np.float32)
    depth = cv2.distanceTransform((~small_known).astype(np.uint8), cv2.DIST_L2, 5)
    band = ~small_known & (depth < PATCH_FILL_BAND * size * ratio)
    small_image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    patched, reached = fill_from_patches(small_image, small_known, band)
    if not (reached & band).any():
        return None, np.zeros(known.shape, np.float32)
    # The hole's pixels no patch reached hold the person: they take their filled neighbours' colours before the
    # blur and the enlargement mix them in.
    patched = fill_from_surroundings(patched, reached)
    # Patches copied from different places meet at seams that the enlargement would show as a pattern of blocks.
    copied = reached & ~small_known
    patched[copied] = cv2.GaussianBlur(patched, (0, 0), PATCH_FILL_SEAMS)[copied]
    patched = cv2.resize(patched, (width, height), interpolation=cv2.INTER_LINEAR)
    share = cv2.resize(copied.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return patched, share


def fill_from_patches(image: np.ndarray, known: np.ndarray, target: np.ndarray,
                      patch: int = PATCH_FILL_SIZE, reach: int = PATCH_FILL_REACH,
                      per_round: int = PATCH_FILL_STEP) -> tuple[np.ndarray, np.ndarray]:
    """Fill the ``target`` pixels (bool, outside ``known``) of ``image`` (H, W, 3 uint8) patch by patch from the
    known ones: the hole's edge is filled first where it is most surrounded by what is known and where a line of
    the background (an isophote) runs into it, each time with the unknown pixels of the known ``patch`` x ``patch``
    patch within ``reach`` px that best matches the known part around it (Criminisi, Perez and Toyama 2004).
    Returns the image (float32, the target filled where a patch was found, elsewhere unchanged) and the mask of
    what is known or filled."""
    filled_image = np.asarray(image, np.float32).copy()
    height, width = known.shape
    half = patch // 2
    filled = np.asarray(known, bool).copy()
    wanted = np.asarray(target, bool) & ~filled
    target = wanted.copy()
    confidence = filled.astype(np.float32)
    # Where a patch may come from: wholly known in the photo itself (never from what was filled).
    source = known.astype(np.uint8)
    energy = cv2.multiply(filled_image, filled_image).sum(axis=2)
    # The background's lines where they meet the hole: the grey gradient of the known pixels, spread a little into
    # the hole; the isophote runs across it.
    grey = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    inner = cv2.erode(source, np.ones((3, 3), np.uint8)).astype(bool)
    gradient_x = np.where(inner, cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), 0.0).astype(np.float32)
    gradient_y = np.where(inner, cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3), 0.0).astype(np.float32)
    gradient_x = cv2.GaussianBlur(gradient_x, (0, 0), 2.0) / (8.0 * 255.0)
    gradient_y = cv2.GaussianBlur(gradient_y, (0, 0), 2.0) / (8.0 * 255.0)
    # The front's normal: across the hole's own edge (the front moves in about parallel to it).
    depth = cv2.GaussianBlur(cv2.distanceTransform((~filled).astype(np.uint8), cv2.DIST_L2, 5), (0, 0), 1.5)
    normal_x, normal_y = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    length = np.hypot(normal_x, normal_y) + 1e-6
    # A line of the background runs into the hole where its isophote (across the gradient) meets the normal.
    isophote = (np.abs(gradient_x * normal_y - gradient_y * normal_x) / length).astype(np.float32) + 1e-3
    while target.any():
        front = target & cv2.dilate(filled.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ys, xs = np.nonzero(front)
        if len(ys) == 0:
            break
        surrounded = cv2.boxFilter(confidence, -1, (patch, patch), borderType=cv2.BORDER_CONSTANT)[ys, xs]
        priority = surrounded * isophote[ys, xs]
        taken = np.zeros(known.shape, bool)
        chosen = 0
        for k in np.argsort(-priority):
            y, x = int(ys[k]), int(xs[k])
            if taken[y, x]:
                continue
            box = (max(y - half, 0), min(y + half + 1, height), max(x - half, 0), min(x + half + 1, width))
            y0, y1, x0, x1 = box
            # The next patches of this round neither overlap this one nor match against what it fills.
            taken[max(y0 - half, 0):y1 + half, max(x0 - half, 0):x1 + half] = True
            new = _copy_best_patch(filled_image, filled, wanted, source, energy, box, reach)
            if new is not None:
                confidence[y0:y1, x0:x1][new] = surrounded[k]
            target[y0:y1, x0:x1] = False
            chosen += 1
            if chosen == per_round:
                break
    return filled_image, filled


def _copy_best_patch(image: np.ndarray, filled: np.ndarray, wanted: np.ndarray, source: np.ndarray,
                     energy: np.ndarray, box: tuple[int, int, int, int], reach: int) -> np.ndarray | None:
    """Fill the ``wanted`` unknown pixels of ``box`` (y0, y1, x0, x1) of ``image`` (float32, in place) from the
    wholly known patch within ``reach`` px whose pixels best match the box's known ones (sum of squared
    differences); ``filled`` marks them known. ``source``: where patches may come from (uint8 0/1); ``energy``: the
    image's sum of squares over its channels (unchanged where ``source`` is). Returns which of the box's pixels
    were filled; None (nothing copied, left to the smoother fills) where no wholly known patch lies within reach
    or the box has no known pixel to match."""
    y0, y1, x0, x1 = box
    height, width = filled.shape
    rows, columns = y1 - y0, x1 - x0
    sy0, sy1 = max(y0 - reach, 0), min(y1 + reach, height)
    sx0, sx1 = max(x0 - reach, 0), min(x1 + reach, width)
    # Top-left corners whose whole patch lies in the photo's known pixels.
    whole = cv2.erode(source[sy0:sy1, sx0:sx1], np.ones((rows, columns), np.uint8), anchor=(0, 0),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    corners = whole[:sy1 - sy0 - rows + 1, :sx1 - sx0 - columns + 1].astype(bool)
    template = image[y0:y1, x0:x1]
    mask = filled[y0:y1, x0:x1].copy()
    if not corners.any() or not mask.any():
        return None
    # Sum over the known pixels of (patch - template)^2, less the template's own sum of squares (the same for
    # every patch): sum(mask * patch^2) - 2 sum(mask * template * patch), as correlations with the patch's
    # top-left corner at each pixel (a third of cv2.matchTemplate's masked cost here).
    area = image[sy0:sy1, sx0:sx1]
    weight = mask.astype(np.float32)
    scores = cv2.filter2D(energy[sy0:sy1, sx0:sx1], -1, weight, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    for channel in range(3):
        scores -= 2.0 * cv2.filter2D(area[..., channel], -1, weight * template[..., channel], anchor=(0, 0),
                                     borderType=cv2.BORDER_CONSTANT)
    # Of patches that match about as well, the nearest: a template with few known pixels matches many patches
    # exactly, and the first found may lie across an edge the hole's side does not have.
    dy = np.arange(corners.shape[0], dtype=np.float32)[:, None] + (sy0 - y0)
    dx = np.arange(corners.shape[1], dtype=np.float32)[None, :] + (sx0 - x0)
    scores = scores[:corners.shape[0], :corners.shape[1]] + PATCH_FILL_NEAR * float(mask.sum()) * (dy * dy + dx * dx)
    scores = np.where(corners, scores, np.inf)
    ry, rx = np.unravel_index(int(np.argmin(scores)), scores.shape)
    new = ~mask & wanted[y0:y1, x0:x1]
    template[new] = image[sy0 + ry:sy0 + ry + rows, sx0 + rx:sx0 + rx + columns][new]
    filled[y0:y1, x0:x1] |= new
    return new


def _push_pull(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    height, width = weight.shape
    if min(height, width) <= 2:
        total = float(weight.sum())
        mean = (image * weight[..., None]).sum(axis=(0, 1)) / max(total, 1e-6)
        filled = image.copy()
        filled[weight < 1] = filled[weight < 1] * weight[weight < 1, None] + mean * (1 - weight[weight < 1, None])
        return filled
    half = (max(1, (width + 1) // 2), max(1, (height + 1) // 2))
    small_weight = cv2.resize(weight, half, interpolation=cv2.INTER_AREA)
    small_image = cv2.resize(image * weight[..., None], half, interpolation=cv2.INTER_AREA)
    small_image = small_image / np.maximum(small_weight, 1e-6)[..., None]
    coarse = _push_pull(small_image, np.clip(small_weight * 4.0, 0.0, 1.0))
    up = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return image * weight[..., None] + up * (1.0 - weight[..., None])


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def sample_at(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The one-channel float32 ``image`` sampled bilinearly (its edge repeated beyond it) at pixels (x, y) of
    any one shape: float64 of that shape."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    if x.ndim == 2 and max(x.shape) < 32767:
        return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
    count = x.size
    width = min(max(count, 1), SAMPLE_ROW)
    rows = -(-count // width)
    maps = []
    for values in (x, y):
        padded = np.zeros(rows * width, np.float32)
        padded[:count] = values.reshape(-1)
        maps.append(padded.reshape(rows, width))
    sampled = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(-1)[:count].reshape(x.shape).astype(np.float64)


def _solve_by_share(head: Callable, weight: Callable, matrix: np.ndarray, px: np.ndarray, py: np.ndarray,
                    corrections: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo pixels x that the head's field sends to output pixels (px, py): x + w(x) (S x - x) = p, for
    ``head`` S (x, y) -> (x', y') (``matrix``, a 2x3 similarity, or nearly it) and ``weight`` w (x, y) -> w.
    Solved through the share s = w(x): for a given s the pixel x(s) = p - s (S x - x) is exact for the
    similarity and then corrected by ``corrections`` fixed-point steps through S, and w(x(s)) - s is positive
    at s = 0 and not at s = 1, so it has a root between. Where there are several (the head folds over a still
    edge) the largest share is taken: the head is in front. Arrays of any one shape."""
    (a, b, c), (d, e, f) = np.asarray(matrix, np.float64)

    def at_share(share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (I + s (A - I)) x = p - s t, A = [[a, b], [d, e]], t = (c, f).
        m00, m01, m10, m11 = 1 + share * (a - 1), share * b, share * d, 1 + share * (e - 1)
        rx, ry = px - share * c, py - share * f
        det = m00 * m11 - m01 * m10
        x, y = (m11 * rx - m01 * ry) / det, (m00 * ry - m10 * rx) / det
        for _ in range(corrections):
            sx, sy = head(x, y)
            x, y = px - share * (sx - x), py - share * (sy - y)
        return x, y

    shares = np.linspace(0.0, 1.0, SHARE_SAMPLES)
    # All the shares at once (one call per step on SHARE_SAMPLES x the pixels, not SHARE_SAMPLES calls): per pixel the
    # same arithmetic, so the same answer.
    tried = np.broadcast_to(shares.reshape((-1,) + (1,) * px.ndim), (SHARE_SAMPLES, *px.shape))
    above = weight(*at_share(tried)) >= tried
    # The last share at which w(x(s)) >= s, with the next one below it (or the head's own pixel).
    last = SHARE_SAMPLES - 1 - np.argmax(above[::-1], axis=0)
    low = shares[last]
    high = np.minimum(low + shares[1], 1.0)
    for _ in range(SHARE_HALVINGS):
        middle = 0.5 * (low + high)
        holds = weight(*at_share(middle)) >= middle
        low, high = np.where(holds, middle, low), np.where(holds, high, middle)
    return at_share(0.5 * (low + high))


@dataclass
class HeadLayers:
    """What a photo's head motion needs, made once per photo: the photo, the person's matte, how
    much each pixel follows the head, and the background plate (the photo with the moving part of
    the person filled in). ``support`` (x0, y0, x1, y1) bounds the pixels that can move."""

    image: np.ndarray          # (H, W, 3) uint8
    matte: np.ndarray          # (H, W) float32 in [0, 1]
    weight: np.ndarray         # (H, W) float32 in [0, 1]
    plate: np.ndarray          # (H, W, 3) uint8
    support: tuple[int, int, int, int] | None
    above: np.ndarray | None = None   # (rows, W) float32: the matte above the top edge (``matte_above``)

    def __post_init__(self):
        # The matte with the rows above the top edge, sampled by ``matte_at``.
        self._matte_source = self.matte if self.above is None else np.vstack([self.above, self.matte])

    def matte_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The matte at photo pixels (``x``, ``y``; float32 arrays) bilinearly: above the top edge the crown's
        continuation (``above``), beyond the other edges their pixels repeated (a portrait's shoulders leave the
        frame)."""
        rows = 0 if self.above is None else len(self.above)
        return cv2.remap(self._matte_source, x, y + np.float32(rows) if rows else y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    @classmethod
    def from_photo(cls, image: np.ndarray, points: np.ndarray, matte: np.ndarray | None = None) -> "HeadLayers":
        """Segment (unless ``matte`` is given), weigh and fill once for the photo ``image`` whose face
        has the (68, 2) ``points``."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        points = np.asarray(points, np.float64)
        if points.shape != (68, 2) or not np.isfinite(points).all():
            raise ValueError(f"points must be finite (68, 2), got {points.shape}")
        shape = image.shape[:2]
        matte = segment_person(image, points) if matte is None else np.clip(np.asarray(matte, np.float32), 0, 1)
        weight = head_weight_map(shape, points)
        moving = (matte > 0.02) & (weight > 0.01)
        grow = max(1, int(round(PLATE_GROW * face_size(points))))
        moving = cv2.dilate(moving.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))).astype(bool)
        support = mask_bounds((weight > 1e-3) & moving)
        plate = image.copy()
        hole = mask_bounds(moving)
        if hole is not None:
            # Fill inside the hole's box plus a margin of known background around it.
            x0, y0, x1, y1 = hole
            margin = 2 * grow
            x0, y0 = max(x0 - margin, 0), max(y0 - margin, 0)
            x1, y1 = min(x1 + margin, shape[1]), min(y1 + margin, shape[0])
            region = plate[y0:y1, x0:x1]
            # Only the background is known: the body below the neck (a white shirt) bled into the fill as a
            # light smear beside the neck where hair had been.
            known = ~moving[y0:y1, x0:x1] & (matte[y0:y1, x0:x1] < BACKGROUND_MATTE)
            filled = fill_continuing_edges(region, known, face_size(points))
            # The body keeps its own pixels (it does not move; the fill only had to ignore it).
            body = ~moving[y0:y1, x0:x1] & ~known
            filled[body] = region[body]
            plate[y0:y1, x0:x1] = np.clip(filled + 0.5, 0, 255).astype(np.uint8)
        return cls(image=image, matte=matte, weight=weight, plate=plate, support=support,
                   above=matte_above(matte, points))


class HeadMotion:
    """Moves a photo's head by a similarity per frame over a still background (see the module doc)."""

    def __init__(self, layers: HeadLayers, grid_step: int = GRID_STEP, iterations: int = FIELD_ITERATIONS):
        self.layers = layers
        self.grid_step = max(1, int(grid_step))
        self.iterations = max(1, int(iterations))
        self.height, self.width = layers.image.shape[:2]
        self._image = layers.image
        self._plate = layers.plate.astype(np.float32)

    def roi(self, matrix: np.ndarray) -> tuple[int, int, int, int] | None:
        """The output pixels a head motion can change: the moving support, where it was and where it goes."""
        if self.layers.support is None:
            return None
        x0, y0, x1, y1 = self.layers.support
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
        moved = apply_affine(matrix, corners)
        allx = np.concatenate([corners[:, 0], moved[:, 0]])
        ally = np.concatenate([corners[:, 1], moved[:, 1]])
        pad = self.grid_step + 2
        rx0, ry0 = max(int(np.floor(allx.min())) - pad, 0), max(int(np.floor(ally.min())) - pad, 0)
        rx1, ry1 = min(int(np.ceil(allx.max())) + pad, self.width), min(int(np.ceil(ally.max())) + pad, self.height)
        return (rx0, ry0, rx1, ry1) if rx1 > rx0 and ry1 > ry0 else None

    def moved_roi(self, forward: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                  samples: int = 48) -> tuple[int, int, int, int] | None:
        """``roi`` for a motion given as a function (x, y) -> (x', y') (a 3D head turning): the moving
        support and where a lattice of its points goes, each followed by its head weight."""
        if self.layers.support is None:
            return None
        x0, y0, x1, y1 = self.layers.support
        gx, gy = np.meshgrid(np.linspace(x0, x1 - 1, samples), np.linspace(y0, y1 - 1, samples))
        w = cv2.remap(self.layers.weight, gx.astype(np.float32), gy.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
        fx, fy = forward(gx, gy)
        allx = np.concatenate([[x0, x1], (gx + w * (fx - gx)).ravel()])
        ally = np.concatenate([[y0, y1], (gy + w * (fy - gy)).ravel()])
        pad = self.grid_step + 2 + int(np.ceil(max(x1 - x0, y1 - y0) / samples))
        rx0, ry0 = max(int(np.floor(allx.min())) - pad, 0), max(int(np.floor(ally.min())) - pad, 0)
        rx1, ry1 = min(int(np.ceil(allx.max())) + pad, self.width), min(int(np.ceil(ally.max())) + pad, self.height)
        return (rx0, ry0, rx1, ry1) if rx1 > rx0 and ry1 > ry0 else None

    def backward_map(self, matrix: np.ndarray, roi: tuple[int, int, int, int],
                     forward: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                     lattice: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Per output pixel of ``roi``, the photo pixel it shows: (map_x, map_y) float32 for cv2.remap
        (with ``lattice`` > 1: for every ``lattice``-th pixel of ``roi`` from its corner, ``lattice_nodes``).

        The forward motion of a photo pixel x is ``x + w(x) (S x - x)``; its inverse at output pixel
        p is the fixed point of ``x = p - w(x) (S x - x)``, found on a coarse grid and upsampled: by
        fixed-point steps from the pixel the head alone would bring there, and where they do not converge
        (a steep weight against a far move) through the share w (``_solve_by_share``).
        ``forward`` (x, y) -> (x', y'), when given, is the head's motion S instead of the similarity
        ``matrix`` (a 3D head turning; ``matrix`` is then its nearest similarity, the first guess).
        """
        x0, y0, x1, y1 = roi
        step = self.grid_step
        gx = np.arange(x0, x1 + step, step, dtype=np.float64)
        gy = np.arange(y0, y1 + step, step, dtype=np.float64)
        px, py = np.meshgrid(gx, gy)
        inverse = invert_affine(matrix)
        a, b, c = matrix[0]
        d, e, f = matrix[1]

        def head(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return forward(x, y) if forward is not None else (a * x + b * y + c, d * x + e * y + f)

        def weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return sample_at(self.layers.weight, x, y)

        # From the pixel following the head fully: where the head covers the node, that is the answer.
        x = inverse[0, 0] * px + inverse[0, 1] * py + inverse[0, 2]
        y = inverse[1, 0] * px + inverse[1, 1] * py + inverse[1, 2]
        for _ in range(self.iterations + 1):
            w = weight(x, y)
            sx, sy = head(x, y)
            moved_x, moved_y = x + w * (sx - x), y + w * (sy - y)
            x, y = x + px - moved_x, y + py - moved_y
        # Off by more than SOLVED_PIXELS before the last step: not converged.
        missed = np.hypot(moved_x - px, moved_y - py) > SOLVED_PIXELS
        if missed.any():
            x[missed], y[missed] = _solve_by_share(head, weight, matrix, px[missed], py[missed],
                                                   0 if forward is None else SHARE_CORRECTIONS)
        # Coarse node (i, j) sits at pixel (x0 + i * step, ...); resize maps pixel centres, so the finer
        # lattice is sampled exactly by an affine warp instead.
        size = lattice_nodes(roi, lattice)
        return (enlarge(x.astype(np.float32), size, lattice / step),
                enlarge(y.astype(np.float32), size, lattice / step))

    def render(self, matrix: np.ndarray) -> np.ndarray:
        """The photo with its head moved by the 2x3 similarity ``matrix``: a new (H, W, 3) uint8 frame."""
        frame = self._image.copy()
        roi = self.roi(np.asarray(matrix, np.float64))
        if roi is None:
            return frame
        x0, y0, x1, y1 = roi
        map_x, map_y = self.backward_map(np.asarray(matrix, np.float64), roi)
        moved = cv2.remap(self._image, map_x, map_y, cv2.INTER_LINEAR, borderMode=PHOTO_BORDER)
        # The matte where each pixel came from; beyond the photo's edges as ``HeadLayers.matte_at`` continues it.
        alpha = self.layers.matte_at(map_x, map_y)[..., None]
        plate = self._plate[y0:y1, x0:x1]
        blended = plate + alpha * (moved.astype(np.float32) - plate)
        frame[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return frame
