"""A weights-free renderer: piecewise-affine warp of a face crop driven by 68 landmarks.

Used three ways: as a renderer on its own, as the generator's "warped source" input and for
training augmentation, so one frame must cost a few milliseconds on one CPU core.

The mesh is built once per source image: the 68 source points, fixed anchors on the image border
and a ring of anchors around the face (forehead included) that follow the face's similarity
motion, so hair and neck move with the head while the frame edge stays put. Each frame computes
a dense backward map (per-pixel source coordinates, one affine per triangle, triangle ids
rasterised into an index image) and does one ``cv2.remap``.

The mouth and the eyes are handled explicitly: the inner-lip and eye outlines are forced to be
mesh edges, so no triangle spans a mouth opening and smears lips across it, and a blink closes
the eye with the lid-skin triangles. Lids closing slide over the eye: between them the source's eye
shows where it was between its corners, not squashed into the narrower gap. When the target mouth
opens wider than the source's, the opening is painted with a synthetic interior (``fill_mouth_interior``).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..landmarks.crop import face_size
from ..landmarks.retarget import lid_gap

logger = logging.getLogger(__name__)

# iBUG-68 groups (kept here so this module does not depend on the landmarks backends).
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
UPPER_INNER_LIP = (60, 61, 62, 63, 64)
LOWER_INNER_LIP = (60, 67, 66, 65, 64)
# Inner-lip pairs facing each other across the opening (upper, lower).
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
# Points that do not move when the mouth opens or the eyes blink: the similarity motion of the
# head (which drives the anchor ring) is fitted to these.
STABLE_POINTS = (0, 1, 2, 3, 13, 14, 15, 16, *BROWS, *NOSE, 36, 39, 42, 45)

# Lid-crease vertices (upper-lid point, brow point above it) sit CREASE_FRACTION of the way from
# the lid to the brow, attached to the brow and following the lid only by CREASE_FOLLOW: a blink
# then stretches only the lid skin below the crease, and the brow keeps its shape.
CREASE_PAIRS = ((37, 19), (38, 20), (43, 23), (44, 24))
CREASE_FRACTION = 0.6
CREASE_FOLLOW = 0.35
# Forehead anchors sit this fraction of the face size above the brows; the ring around the face
# is the face outline (jaw + forehead) scaled by RING_SCALE about its centre.
FOREHEAD_RAISE = 0.3
RING_RAISE = 0.35
RING_SCALE = 1.3
# Anchors closer than this fraction of the crop to its border are dropped (the border anchors
# already hold that area, and near-duplicate points make slivers).
ANCHOR_BORDER_MARGIN = 0.04
# Target triangles with less area than this (pixels^2) or flipped fall back to the global motion.
MIN_TRIANGLE_AREA = 1e-3
# The synthetic mouth interior fades in as the target opening exceeds the source's by this range
# (fractions of the face size), so a slowly opening mouth does not pop.
MOUTH_FILL_START = 0.01
MOUTH_FILL_FULL = 0.04


def _smoothstep(x: np.ndarray | float, edge0: float, edge1: float) -> np.ndarray | float:
    t = np.clip((np.asarray(x, np.float32) - edge0) / max(edge1 - edge0, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Whether two segments cross at a point inside both (touching at an end does not count)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def _orient(points: np.ndarray, tri: list[int]) -> list[int]:
    """The triangle with positive signed area (the orientation every mesh triangle shares)."""
    a, b, c = tri
    return [a, b, c] if _cross(points[a], points[b], points[c]) > 0 else [a, c, b]


def _recover_edges(points: np.ndarray, triangles: list[list[int]],
                   edges: list[tuple[int, int]]) -> list[list[int]]:
    """Force ``edges`` into a triangulation by edge flips (Lawson's constraint recovery).

    Delaunay nearly always contains the lip and eye outlines already; this makes it certain,
    so no triangle straddles a lip line.
    """
    tris = [list(t) for t in triangles]
    for a, b in edges:
        for _ in range(4 * len(tris)):
            if any(a in t and b in t for t in tris):
                break
            flipped = False
            for ti, tri in enumerate(tris):
                for k in range(3):
                    x, y, p = tri[k], tri[(k + 1) % 3], tri[(k + 2) % 3]
                    if {x, y} & {a, b} or not _segments_cross(points[a], points[b], points[x], points[y]):
                        continue
                    tj = next((j for j, t in enumerate(tris) if j != ti and x in t and y in t), None)
                    if tj is None:
                        continue
                    q = next(v for v in tris[tj] if v not in (x, y))
                    if _segments_cross(points[p], points[q], points[x], points[y]):  # convex quad
                        tris[ti] = _orient(points, [p, x, q])
                        tris[tj] = _orient(points, [q, y, p])
                        flipped = True
                        break
                if flipped:
                    break
            if not flipped:
                logger.warning("could not force mesh edge %d-%d; the warp may smear there", a, b)
                break
    return tris


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst as 2x3."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum()
    if var < 1e-9:
        return np.array([[1.0, 0.0, mu_d[0] - mu_s[0]], [0.0, 1.0, mu_d[1] - mu_s[1]]])
    # Closed form for the complex-number model z' = (a + ib) z + t.
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / var
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _up_vector(points: np.ndarray) -> np.ndarray:
    """Unit vector from the eyes towards the forehead (image y points down)."""
    axis = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    axis = axis / max(float(np.linalg.norm(axis)), 1e-6)
    return np.array([axis[1], -axis[0]], np.float64)


def mouth_opening(points: np.ndarray) -> float:
    """Mean gap between the inner lips as a fraction of the face size (0 when closed)."""
    points = np.asarray(points, np.float64)
    axis = points[64] - points[60]
    axis = axis / max(float(np.linalg.norm(axis)), 1e-6)
    down = np.array([-axis[1], axis[0]])
    gaps = [float((points[lo] - points[up]) @ down) for up, lo in INNER_LIP_PAIRS]
    return max(float(np.mean(gaps)), 0.0) / face_size(points)


def _canonical_features(points: np.ndarray) -> np.ndarray:
    """Points with open eyes and an open mouth, used only to pick the mesh topology.

    With a closed mouth or eye the inner points nearly coincide and Delaunay would be degenerate;
    triangulating a canonical open layout gives the same clean topology for every source.
    """
    layout = points.astype(np.float64).copy()
    for outer, inner, upper, lower in ((36, 39, (37, 38), (41, 40)), (42, 45, (43, 44), (47, 46))):
        a, b = layout[outer], layout[inner]
        width = max(float(np.linalg.norm(b - a)), 1e-3)
        axis = (b - a) / width
        up = np.array([axis[1], -axis[0]])
        for frac, u_idx, l_idx in ((1 / 3, upper[0], lower[0]), (2 / 3, upper[1], lower[1])):
            layout[u_idx] = a + axis * width * frac + up * 0.18 * width
            layout[l_idx] = a + axis * width * frac - up * 0.15 * width
    outer = layout[48:60]
    centre = outer.mean(axis=0)
    axis = layout[54] - layout[48]
    axis = axis / max(float(np.linalg.norm(axis)), 1e-6)
    perp = np.array([-axis[1], axis[0]])
    matched = [layout[48], (layout[49] + layout[50]) / 2, layout[51], (layout[52] + layout[53]) / 2,
               layout[54], (layout[55] + layout[56]) / 2, layout[57], (layout[58] + layout[59]) / 2]
    for index, point in zip(INNER_LIPS, matched):
        rel = point - centre
        layout[index] = centre + axis * (rel @ axis) * 0.75 + perp * (rel @ perp) * 0.45
    return layout


def _border_anchors(height: int, width: int, per_edge: int) -> np.ndarray:
    xs = np.linspace(0, width - 1, per_edge)
    ys = np.linspace(0, height - 1, per_edge)
    pts = [(x, 0.0) for x in xs] + [(x, height - 1.0) for x in xs]
    pts += [(0.0, y) for y in ys[1:-1]] + [(width - 1.0, y) for y in ys[1:-1]]
    return np.array(pts, np.float64)


def _moving_anchors(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Forehead points and a ring around the face outline, inside the image."""
    points = points.astype(np.float64)
    size = face_size(points)
    up = _up_vector(points)
    brows = np.array([points[17], points[19], (points[21] + points[22]) / 2, points[24], points[26]])
    forehead = brows + up * FOREHEAD_RAISE * size
    outline = np.vstack([points[0:17:2], (brows + up * RING_RAISE * size)[::-1]])
    centre = outline.mean(axis=0)
    ring = centre + (outline - centre) * RING_SCALE
    anchors = np.vstack([forehead, ring])
    margin = ANCHOR_BORDER_MARGIN * min(height, width)
    inside = ((anchors[:, 0] > margin) & (anchors[:, 0] < width - 1 - margin)
              & (anchors[:, 1] > margin) & (anchors[:, 1] < height - 1 - margin))
    return anchors[inside]


class FaceWarper:
    """Piecewise-affine warp of one source face crop to any target landmarks.

    ``source_image`` is (H, W, 3) uint8, ``source_points`` (68, 2) in its pixel coordinates.
    ``border_points`` is the number of fixed anchors on each image edge, corners included.
    Build once per source; ``warp`` is then cheap per frame.
    """

    def __init__(self, source_image: np.ndarray, source_points: np.ndarray, border_points: int = 3):
        image = np.asarray(source_image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"source_image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        points = _check_points(source_points, "source_points")
        if border_points < 2:
            raise ValueError(f"border_points must be at least 2 (the corners), got {border_points}")
        self.image = np.ascontiguousarray(image)
        self.height, self.width = image.shape[:2]
        self.source_points = points
        self.face_size = face_size(points)

        border = _border_anchors(self.height, self.width, border_points)
        moving = _moving_anchors(points, self.height, self.width)
        lids, brows = (points[[pair[i] for pair in CREASE_PAIRS]].astype(np.float64) for i in (0, 1))
        creases = lids + CREASE_FRACTION * (brows - lids)
        self._crease_offsets = creases - brows
        self._num_moving = len(moving)
        self.source_vertices = np.vstack([points, creases, moving, border]).astype(np.float64)
        self._border = border

        layout = np.vstack([_canonical_features(points), creases, moving, border])
        triangles = [_orient(layout, list(t)) for t in Delaunay(layout).simplices]
        constraints = []
        for group in (OUTER_LIPS, INNER_LIPS, RIGHT_EYE, LEFT_EYE):
            constraints += [(group[i], group[(i + 1) % len(group)]) for i in range(len(group))]
        triangles = _recover_edges(layout, triangles, constraints)
        # Degenerate layout triangles (collinear border anchors) would never rasterise; drop them.
        triangles = [t for t in triangles if _cross(*layout[t]) > 1e-6]
        self.triangles = np.array(triangles, np.int32)
        centroids = layout[self.triangles].mean(axis=1)

        def inside(group: tuple[int, ...]) -> np.ndarray:
            outline = layout[list(group)].astype(np.float32)
            return np.array([cv2.pointPolygonTest(outline, (float(c[0]), float(c[1])), False) > 0 for c in centroids])

        self.mouth_triangles = inside(INNER_LIPS)
        # Each eye's opening: its triangles, and how open the photo's is.
        self._eyes = [(eye, inside(eye), float(lid_gap(points, eye[0]))) for eye in (RIGHT_EYE, LEFT_EYE)]

        self._grid_x, self._grid_y = np.meshgrid(np.arange(self.width, dtype=np.float32),
                                                 np.arange(self.height, dtype=np.float32))
        self._source_opening = mouth_opening(points)
        self.teeth_color = _source_teeth_color(self.image, points)

    def _head_motion(self, target_points: np.ndarray) -> np.ndarray:
        """Similarity (2x3) source -> target fitted to the points that lids and jaw do not move."""
        return _similarity(self.source_points[list(STABLE_POINTS)], target_points[list(STABLE_POINTS)])

    def target_vertices(self, target_points: np.ndarray) -> np.ndarray:
        """All mesh vertices for a target: its 68 points, lid creases, the moved ring, the fixed border."""
        target_points = target_points.astype(np.float64)
        motion = self._head_motion(target_points)
        lid_index = [pair[0] for pair in CREASE_PAIRS]
        lid_motion = target_points[lid_index] - _apply(motion, self.source_points[lid_index])
        creases = (target_points[[pair[1] for pair in CREASE_PAIRS]] + self._crease_offsets @ motion[:, :2].T
                   + CREASE_FOLLOW * lid_motion)
        first = 68 + len(CREASE_PAIRS)
        moving = _apply(motion, self.source_vertices[first:first + self._num_moving])
        return np.vstack([target_points, creases, moving, self._border])

    def backward_map(self, target_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel source coordinates (map_x, map_y), float32 (H, W), for ``cv2.remap``."""
        target_points = _check_points(target_points, "target_points")
        target = self.target_vertices(target_points)
        source = self.source_vertices
        tri_t = target[self.triangles]                       # (M, 3, 2)
        tri_s = source[self.triangles]
        e1, e2 = tri_t[:, 1] - tri_t[:, 0], tri_t[:, 2] - tri_t[:, 0]
        area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]     # same sign as the layout when valid
        valid = area > MIN_TRIANGLE_AREA

        # Affine target -> source per triangle: [x_s y_s] = A @ [x_t y_t 1].
        count = len(self.triangles)
        affines = np.empty((count + 1, 2, 3), np.float64)
        affines[:] = cv2.invertAffineTransform(self._head_motion(target_points))
        homo = np.concatenate([tri_t, np.ones((count, 3, 1))], axis=2)   # (M, 3, 3) rows = vertices
        if valid.any():
            # Solve homo @ A^T = tri_s for the valid triangles.
            affines[:count][valid] = np.linalg.solve(homo[valid], tri_s[valid]).transpose(0, 2, 1)
        for eye, opening, photo_gap in self._eyes:
            if lid_gap(target_points, eye[0]) < photo_gap:
                # Lids closing slide over the eye: what shows between them is the photo's eye where it was between
                # its corners, not squashed (a squashed iris read as a smear once redrawn), and the lids' edges
                # cover the rest.
                corners = [eye[0], eye[3]]
                affines[:count][opening] = _similarity(target_points[corners], self.source_points[corners])

        # Rasterise triangle ids. Invalid (flipped or collapsed) ones first, with the global
        # motion, so valid neighbours overwrite the area they fold over: no holes, no garbage.
        # Valid ones go from the thinnest up: a sliver (a closing eye or mouth) has a steep
        # affine, and the boundary pixels it shares with a regular neighbour must take the
        # neighbour's gentle one rather than sample far off.
        index = np.full((self.height, self.width), count, np.int32)
        fixed = np.round(tri_t * 16.0).astype(np.int32)
        thinness = area / np.maximum((e1 ** 2).sum(axis=1) + (e2 ** 2).sum(axis=1), 1e-9)
        order = np.concatenate([np.flatnonzero(~valid), np.flatnonzero(valid)[np.argsort(thinness[valid])]])
        for tri_id in order:
            cv2.fillConvexPoly(index, fixed[tri_id], int(tri_id) if valid[tri_id] else count,
                               lineType=cv2.LINE_8, shift=4)

        # One gather of all six coefficients per pixel (the fastest form in numpy).
        coeffs = np.take(np.ascontiguousarray(affines.reshape(count + 1, 6).T, dtype=np.float32), index, axis=1)
        map_x = coeffs[0] * self._grid_x
        map_x += coeffs[1] * self._grid_y
        map_x += coeffs[2]
        map_y = coeffs[3] * self._grid_x
        map_y += coeffs[4] * self._grid_y
        map_y += coeffs[5]
        return map_x, map_y

    def warp(self, target_points: np.ndarray, fill_mouth: bool = True) -> np.ndarray:
        """The source face moved to ``target_points`` (68, 2): uint8 (H, W, 3). ``fill_mouth=False``
        leaves a mouth that opens wider than the source's unfilled (the learned mouth paints it)."""
        return self.warp_with_map(target_points, fill_mouth)[0]

    def warp_with_map(self, target_points: np.ndarray, fill_mouth: bool = True,
                      alpha_out: np.ndarray | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``warp`` and the backward map it used (so the same motion can resample a larger photo);
        ``alpha_out`` (H, W) float32 takes where the synthetic interior was painted."""
        map_x, map_y = self.backward_map(target_points)
        out = cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if fill_mouth:
            self.fill_mouth(out, target_points, alpha_out)
        return out, (map_x, map_y)

    def fill_mouth(self, image: np.ndarray, target_points: np.ndarray, alpha_out: np.ndarray | None = None) -> None:
        """Paint the synthetic interior into a warped ``image`` in place where the target's mouth opens
        wider than the source's (``alpha_out``: see ``warp_with_map``)."""
        _fill_mouth_inplace(image, np.asarray(target_points, np.float64), self._source_opening, self.teeth_color,
                            alpha_out)


def _source_teeth_color(image: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """The colour of the teeth visible in an open source mouth, or None when none show.

    Painting the person's own teeth colour keeps the synthetic interior consistent with the
    source when the mouth opens further.
    """
    if mouth_opening(points) < 0.02:
        return None
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(INNER_LIPS)] * 16).astype(np.int32)], 255, shift=4)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    pixels = image[mask > 0].astype(np.float32)
    if len(pixels) < 8:
        return None
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = pixels[luma >= max(float(np.percentile(luma, 60)), 110.0)]
    if len(bright) < 5:
        return None
    return np.median(bright, axis=0).astype(np.float32)


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points)
    if points.shape != (68, 2):
        raise ValueError(f"{name} must be (68, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return points.astype(np.float32)


def warp_face(source_image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """One-shot warp of ``source_image`` from ``source_points`` to ``target_points``."""
    return FaceWarper(source_image, source_points).warp(target_points)


# Mouth-interior palette (RGB, for a well-lit face; scaled by the local brightness).
_INTERIOR_EDGE = np.array([144.0, 60.0, 57.0], np.float32)
_INTERIOR_CENTRE = np.array([68.0, 24.0, 28.0], np.float32)
_TONGUE = np.array([128.0, 58.0, 62.0], np.float32)
_UPPER_TEETH = np.array([226.0, 220.0, 204.0], np.float32)
_LOWER_TEETH = np.array([200.0, 194.0, 178.0], np.float32)
# Brightness (mean luma around the mouth) at which the palette is used as is.
_REFERENCE_LUMA = 150.0
# The teeth's bands: the upper one under the upper lip, this share of the opening tall and at most the second
# (of the face size, about a front tooth's length); the lower one above the lower lip likewise, when the mouth is
# wide open: the lower teeth and the tongue fade in as the opening (of the face size) grows over WIDE_OPENING. The
# upper band's share and the interior's colours are fitted to real open mouths (docs/findings.md, "2026-12-08"):
# on 750 mouth crops of 11 talking videos the synthetic crops come nearer the real ones, and the share of the
# opening darker than half the lips comes to about real mouths'.
UPPER_TEETH_BAND = (0.6, 0.065)
LOWER_TEETH_BAND = (0.12, 0.03)
WIDE_OPENING = (0.08, 0.16)


# Where one tooth meets the next, seen from the front, as fractions of the half-width from the
# middle of the mouth to a corner: upper teeth narrow from the central incisors outwards in about
# the golden proportion (the arch turns away from the camera); the lower incisors are narrow and even.
UPPER_TOOTH_EDGES = (0.0, 0.335, 0.556, 0.707, 0.807, 0.88)
LOWER_TOOTH_EDGES = (0.0, 0.2, 0.39, 0.56, 0.7)


def _tooth_gaps(u: np.ndarray, centre: float, length: float, edges: tuple[float, ...],
                spread: float = 1.0) -> np.ndarray:
    """0-1 lines where teeth meet, at ``edges`` either side of ``centre`` (u: 0 at one mouth corner,
    1 at the other; ``length`` the corners' distance in pixels), about a pixel wide (x ``spread``)."""
    width = spread * max(0.6, 0.006 * length) / length
    places = np.array(sorted({place for fraction in edges
                              for place in (centre - fraction * centre, centre + fraction * (1.0 - centre))}),
                      dtype=u.dtype)
    # The line nearest each pixel is the brightest (one exp per pixel, not one per line: the same values).
    after = np.minimum(np.searchsorted(places, u), len(places) - 1)
    before = np.maximum(after - 1, 0)
    offset_after, offset_before = u - places[after], u - places[before]
    nearest = np.where(np.abs(offset_before) < np.abs(offset_after), offset_before, offset_after)
    return np.exp(-(nearest / width) ** 2)


def mouth_fill_strength(source_opening: float, target_opening: float) -> float:
    """How much of a new interior a mouth opening from ``source_opening`` to ``target_opening`` (both of
    the face size) gets: 0 up to MOUTH_FILL_START wider than the source, 1 from MOUTH_FILL_FULL."""
    return float(_smoothstep(target_opening - source_opening, MOUTH_FILL_START, MOUTH_FILL_FULL))


def fill_mouth_interior(image: np.ndarray, target_points: np.ndarray, source_points: np.ndarray,
                        teeth_color: np.ndarray | None = None) -> np.ndarray:
    """Paint a plausible mouth interior inside the target inner lips where the mouth opened.

    Applies when the target's inner-lip opening exceeds the source's (both as fractions of the
    face size); otherwise the warped source interior is kept and ``image`` is returned as a copy.
    As real open mouths show (docs/findings.md, "2026-12-08"): an upper-teeth band under the upper lip that
    grows with the opening, a red-brown gap below it (darker towards the centre), lower teeth and a tongue hint
    when wide open, and ~1 px feathered edges. ``teeth_color`` (RGB) replaces the default off-white, e.g. the
    colour of the teeth showing in the source. Returns a new image.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    target = _check_points(target_points, "target_points").astype(np.float64)
    source = _check_points(source_points, "source_points")
    _fill_mouth_inplace(out, target, mouth_opening(source), teeth_color)
    return out


def _fill_mouth_inplace(image: np.ndarray, target: np.ndarray, source_opening: float,
                        teeth_color: np.ndarray | None = None, alpha_out: np.ndarray | None = None) -> None:
    """Paint the synthetic interior into ``image``; ``alpha_out`` (H, W) float32, when given, takes the
    share of each pixel that was painted (the largest so far)."""
    opening = mouth_opening(target)
    strength = mouth_fill_strength(source_opening, opening)
    if strength <= 0.0:
        return
    height, width = image.shape[:2]
    polygon = target[list(INNER_LIPS)]
    x0 = max(int(np.floor(polygon[:, 0].min())) - 3, 0)
    y0 = max(int(np.floor(polygon[:, 1].min())) - 3, 0)
    x1 = min(int(np.ceil(polygon[:, 0].max())) + 4, width)
    y1 = min(int(np.ceil(polygon[:, 1].max())) + 4, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi = image[y0:y1, x0:x1]
    size = face_size(target)

    # Soft polygon mask: anti-aliased fill, then ~1 px feather.
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round((polygon - (x0, y0)) * 16).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.8) * strength

    # Mouth coordinates: u along the corners (0 at 60, 1 at 64), v down across the opening.
    corner_a, corner_b = target[60], target[64]
    axis = corner_b - corner_a
    length = max(float(np.linalg.norm(axis)), 1e-3)
    axis = axis / length
    down = np.array([-axis[1], axis[0]])
    # Only the pixels the fill reaches are computed (a thin opening covers a small part of its box).
    painted = alpha > 0
    rows, cols = np.nonzero(painted)
    ys, xs = (rows + y0).astype(np.float32), (cols + x0).astype(np.float32)
    rel_x, rel_y = xs - corner_a[0], ys - corner_a[1]
    u = (rel_x * axis[0] + rel_y * axis[1]) / length
    v = rel_x * down[0] + rel_y * down[1]

    def lip_curve(indices: tuple[int, ...]) -> np.ndarray:
        rel = target[list(indices)] - corner_a
        pu, pv = rel @ axis / length, rel @ down
        order = np.argsort(pu)
        return np.interp(u, pu[order], pv[order]).astype(np.float32)

    upper, lower = lip_curve(UPPER_INNER_LIP), lip_curve(LOWER_INNER_LIP)
    gap = np.maximum(lower - upper, 1e-3)
    depth = np.clip((v - upper) / gap, 0.0, 1.0)           # 0 at the upper lip, 1 at the lower

    # Match the photo's lighting: a dim photo gets a dim interior and dull teeth (teeth sampled
    # from the photo already carry its lighting).
    ring = mask == 0
    luma = roi[ring].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    light = float(np.clip((luma.mean() if len(luma) else _REFERENCE_LUMA) / _REFERENCE_LUMA, 0.5, 1.1))
    upper_teeth = _UPPER_TEETH * light if teeth_color is None else np.asarray(teeth_color, np.float32)
    lower_teeth = upper_teeth * (_LOWER_TEETH / _UPPER_TEETH)

    # Dark interior, darkest at the centre of the opening.
    radius = np.sqrt(((u - 0.5) / 0.5) ** 2 + ((depth - 0.5) / 0.5) ** 2)
    centre_weight = np.clip(1.0 - radius, 0.0, 1.0)[..., None] ** 0.8
    colour = (_INTERIOR_EDGE * (1.0 - centre_weight) + _INTERIOR_CENTRE * centre_weight) * light

    # Tongue hint low in the mouth when it is wide open.
    wide = float(_smoothstep(opening, *WIDE_OPENING))
    if wide > 0:
        tongue = (wide * 0.55 * _smoothstep(depth, 0.55, 0.9)
                  * _smoothstep(u, 0.2, 0.4) * (1.0 - _smoothstep(u, 0.6, 0.8)))[..., None]
        colour = colour * (1.0 - tongue) + _TONGUE * light * tongue

    # Upper teeth: a band under the upper lip, taller as the mouth opens, soft at its lower edge
    # and fading towards the corners (the corners stay dark), split into single teeth.
    centre = float((target[62] - corner_a) @ axis / length)     # the middle of the upper inner lip
    upper_gaps = _tooth_gaps(u, centre, length, UPPER_TOOTH_EDGES)
    band = np.minimum(UPPER_TEETH_BAND[0] * gap, UPPER_TEETH_BAND[1] * size) * (
        1.0 - 0.12 * _tooth_gaps(u, centre, length, UPPER_TOOTH_EDGES, spread=2.5))
    below_lip = v - upper
    teeth = ((1.0 - _smoothstep(below_lip - band, -0.7, 0.7)) * _smoothstep(u, 0.1, 0.28)
             * (1.0 - _smoothstep(u, 0.72, 0.9)))
    # Darker at the sides and in the lip's shadow; the gaps darkest towards the biting edge.
    edge = np.clip(below_lip / np.maximum(band, 1e-3), 0.0, 1.0)
    sides = 0.78 + 0.22 * (1.0 - np.abs(u - 0.5) * 2.0)
    shade = (sides * (0.88 + 0.12 * edge) * (1.0 - (0.25 + 0.25 * edge) * upper_gaps))[..., None]
    teeth = teeth[..., None]
    colour = colour * (1.0 - teeth) + upper_teeth * shade * teeth

    # Lower teeth: a thinner band above the lower lip, only when wide open.
    if wide > 0:
        lower_band = np.minimum(LOWER_TEETH_BAND[0] * gap, LOWER_TEETH_BAND[1] * size)
        lower_teeth_alpha = (wide * (1.0 - _smoothstep((lower - v) - lower_band, -0.6, 0.6))
                             * _smoothstep(u, 0.22, 0.36) * (1.0 - _smoothstep(u, 0.64, 0.78)))[..., None]
        lower_shade = (sides * (1.0 - 0.35 * _tooth_gaps(u, centre, length, LOWER_TOOTH_EDGES)))[..., None]
        colour = colour * (1.0 - lower_teeth_alpha) + lower_teeth * lower_shade * lower_teeth_alpha
    colour = np.clip(colour, 0.0, 255.0)

    a = alpha[painted][:, None]
    if alpha_out is not None:
        region = alpha_out[y0:y1, x0:x1]
        region[painted] = np.maximum(region[painted], a[:, 0])
    roi[painted] = np.clip(roi[painted].astype(np.float32) * (1.0 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)
