"""The head as a 3D proxy, so a turn of the driver's head turns the photo's head.

Once per photo (``Head3D.from_photo``): a 68-point mean 3D face (``MEAN_FACE_68``) is fitted to the
photo's landmarks by a weak-perspective camera (scale, rotation, translation), which gives each landmark a
depth in the photo's pixels (the per-person depth scale is the face's size); a head ellipsoid of human
proportions (``HEAD_CENTRE``, ``HEAD_RADII``, in the mean face's units and frame) is placed behind the face
in the same pose. The photo's depth map is the ellipsoid's front surface, with the landmarks' own depths
relative to it spread over the face (nose, brows, jaw), and the ellipsoid's centre depth beyond its
outline, so hair, ears and the neck beside the head move as points at the head's middle depth.

Per frame (``Head3D.motion``): the retargeted landmarks are explained by one rigid motion of those 3D points
(rotation, scale, translation, fitted to the points that lids and jaw do not move); what is left is the
expression, brought back into the photo's frame. ``RigidMotion.forward`` moves any photo pixel by the
rotation at its depth: the face turns as a face (the nose moves sideways more than the cheeks, the outline
less), not as a flat mask sheared in the image.

The outline (landmarks 0-16) is no set of points on the face but where its side meets what lies behind it:
every fit of the mean face takes it where the fitted view shows it (``mean_face_seen``, ``fit_mean_face``), and
a turn slides it over the face (``outline_shift``), so a 3/4 view turned further towards profile narrows its far
cheek instead of swinging its outline in over the nose and lips.

MEAN_FACE_68 was derived by this project (``scripts/derive_mean_face.py``): 400 LFW photos, one per person,
dlib's 68 landmarks each given the depth of MediaPipe's face mesh at that place, brought to a common frame
(outer eye corners one unit apart, level, centred on the stable points) and averaged, then made left-right
symmetric. Units: the outer eye corners' distance; x right, y down, z towards the camera. The head's
proportions are anthropometric means (head breadth about 15.5 cm, length 19.5 cm, height chin to vertex
23 cm, against an outer eye-corner distance of about 9 cm), the ellipsoid a little larger for hair.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..landmarks.retarget import STABLE_POINTS, map_openings, uncross_lids_and_lips
from .head_motion import sample_at

MEAN_FACE_68 = np.array([
    [-0.8557, -0.2601, -0.3902],
    [-0.8482, -0.0369, -0.4179],
    [-0.8270, +0.1869, -0.3943],
    [-0.7850, +0.4067, -0.3526],
    [-0.7040, +0.6132, -0.3165],
    [-0.5739, +0.7945, -0.2155],
    [-0.4075, +0.9435, -0.0938],
    [-0.2173, +1.0613, +0.0266],
    [+0.0000, +1.0965, +0.0605],
    [+0.2173, +1.0613, +0.0266],
    [+0.4075, +0.9435, -0.0938],
    [+0.5739, +0.7945, -0.2155],
    [+0.7040, +0.6132, -0.3165],
    [+0.7850, +0.4067, -0.3526],
    [+0.8270, +0.1869, -0.3943],
    [+0.8482, -0.0369, -0.4179],
    [+0.8557, -0.2601, -0.3902],
    [-0.6674, -0.4379, -0.0565],
    [-0.5688, -0.5344, +0.0678],
    [-0.4266, -0.5704, +0.1614],
    [-0.2753, -0.5560, +0.2111],
    [-0.1348, -0.5014, +0.2251],
    [+0.1348, -0.5014, +0.2251],
    [+0.2753, -0.5560, +0.2111],
    [+0.4266, -0.5704, +0.1614],
    [+0.5688, -0.5344, +0.0678],
    [+0.6674, -0.4379, -0.0565],
    [+0.0000, -0.3353, +0.2381],
    [+0.0000, -0.1975, +0.3183],
    [+0.0000, -0.0594, +0.4251],
    [+0.0000, +0.0831, +0.4835],
    [-0.1662, +0.1936, +0.2755],
    [-0.0869, +0.2241, +0.3140],
    [+0.0000, +0.2498, +0.3197],
    [+0.0869, +0.2241, +0.3140],
    [+0.1662, +0.1936, +0.2755],
    [-0.5000, -0.2970, +0.0125],
    [-0.4126, -0.3488, +0.0780],
    [-0.3094, -0.3501, +0.0893],
    [-0.2176, -0.2875, +0.0606],
    [-0.3144, -0.2684, +0.0740],
    [-0.4155, -0.2673, +0.0522],
    [+0.2176, -0.2875, +0.0606],
    [+0.3094, -0.3501, +0.0893],
    [+0.4126, -0.3488, +0.0780],
    [+0.5000, -0.2970, +0.0125],
    [+0.4155, -0.2673, +0.0522],
    [+0.3144, -0.2684, +0.0740],
    [-0.3246, +0.4913, +0.0840],
    [-0.2092, +0.4258, +0.2001],
    [-0.0881, +0.3975, +0.2796],
    [+0.0000, +0.4160, +0.2859],
    [+0.0881, +0.3975, +0.2796],
    [+0.2092, +0.4258, +0.2001],
    [+0.3246, +0.4913, +0.0840],
    [+0.2131, +0.6031, +0.1577],
    [+0.0952, +0.6511, +0.2066],
    [+0.0000, +0.6599, +0.2163],
    [-0.0952, +0.6511, +0.2066],
    [-0.2131, +0.6031, +0.1577],
    [-0.2737, +0.4933, +0.1060],
    [-0.0891, +0.4672, +0.2386],
    [+0.0000, +0.4751, +0.2520],
    [+0.0891, +0.4672, +0.2386],
    [+0.2737, +0.4933, +0.1060],
    [+0.0910, +0.5463, +0.2072],
    [+0.0000, +0.5567, +0.2218],
    [-0.0910, +0.5463, +0.2072],
])
# The head ellipsoid in the mean face's frame and units: centre and semi-axes (x, y, z).
HEAD_CENTRE = np.array([0.0, -0.2, -0.85])
HEAD_RADII = np.array([0.95, 1.35, 1.15])
# The landmarks' depths relative to the ellipsoid are spread over the face by a Gaussian of this width
# (units of the eye-corner distance).
FACE_SPREAD = 0.25
# Newton steps of ``Head3D.inverse``, from the photo's own landmarks (6 left under 0.01 px at a 25-degree turn, the
# outline sliding; 8 for a margin).
INVERSE_ITERATIONS = 8
# The depth map is kept at about this many samples on the photo's longer side (it is smooth).
DEPTH_SAMPLES = 384
# A turn or nod (the fitted rotation's out-of-plane part) of a few degrees is mostly the landmarks' scatter: a
# pixel of the nose against the jaw's ends reads as a degree or more, and it moved the head's outline against
# the face on calm clips. It is shrunk towards none (``quiet_turn``: a * a^2 / (a^2 + noise^2) with noise this
# many degrees: 1 degree keeps a tenth, 6 degrees four fifths, 15 degrees 96 %). Measured: docs/findings.md.
TURN_NOISE_DEGREES = 3.0
# A face seen from a side (a 3/4 view) given a frontal driver's landmark motion in 2D turns less than the driver
# (at 35 degrees, 0.70 of the yaw as the mean face reads it), and the driver's turns and nods, left in its 2D
# expression deltas, bulge the 3/4 face's near cheek past its outline. Where the photo's view and the driver
# reference's differ by more than VIEW_START degrees, the motion is carried over in 3D (``carry_in_3d``), in full
# from VIEW_FULL degrees.
VIEW_START = 5.0
VIEW_FULL = 20.0
# dlib's outline (points 0-16) is where the face's side meets what is behind it as seen, not fixed points of
# the face: turned, the far cheek's outline stays near the cheek while a point of the face there would swing
# behind it. Each outline point is the silhouette of a level ellipse through its mean-face point (the outline
# seen from the front), centred on the face's middle line, its depth OUTLINE_DEPTH times its half-width
# (``mean_face_seen``). Measured on 1495 LFW faces (dlib landmarks; docs/findings.md): 0.8 fits the stable
# points of faces turned over 30 degrees 25 % closer than fixed points (0: 0.054, 0.8: 0.040 eye-corner
# distances) and 0.6 or 1.0 less well.
OUTLINE_DEPTH = 0.8
# Fits of the mean face alternate the pose and the outline seen at it this many times.
OUTLINE_FITS = 4
_STABLE = np.asarray(STABLE_POINTS)
_OUTLINE = np.arange(17)


def _least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The least-squares solutions of ``design`` x = ``values`` (..., M, K), one for each leading frame of
    ``values``, the smallest where several fit (as ``np.linalg.lstsq`` with ``rcond=None``): through the
    design's SVD, a (M, N) design decomposed once for all frames, a (..., M, N) one each frame's own."""
    u, sigma, vt = np.linalg.svd(design, full_matrices=False)
    kept = sigma > np.finfo(np.float64).eps * max(design.shape[-2:]) * sigma[..., :1]
    inverse = np.where(kept, 1.0 / np.where(kept, sigma, 1.0), 0.0)
    return np.swapaxes(vt, -1, -2) @ (inverse[..., None] * (np.swapaxes(u, -1, -2) @ values))


def scaled_rotation(affine: np.ndarray) -> tuple[float | np.ndarray, np.ndarray]:
    """The scale and 3x3 rotation nearest a 2x3 affine camera: its rows made orthonormal (SVD), the third
    row their cross product. Stacked cameras (..., 2, 3) give scales (...) and rotations (..., 3, 3)."""
    u, sigma, vt = np.linalg.svd(np.asarray(affine, np.float64), full_matrices=False)
    rows = u @ vt
    third = np.cross(rows[..., 0, :], rows[..., 1, :])
    return sigma.mean(axis=-1), np.concatenate([rows, third[..., None, :]], axis=-2)


def weak_perspective(model: np.ndarray, points: np.ndarray) -> tuple[float | np.ndarray, np.ndarray, np.ndarray]:
    """Scale s, rotation R (3x3) and 2D offset t with ``points`` ~ s (R ``model``)[:, :2] + t, least squares
    on an affine camera, then its nearest scaled rotation (``model`` (N, 3), ``points`` (N, 2)). Frames stacked
    on leading axes of ``points`` (and of ``model``, or one model for all) give one fit each."""
    model_mean, points_mean = model.mean(axis=-2), points.mean(axis=-2)
    affine = _least_squares(model - model_mean[..., None, :], points - points_mean[..., None, :])
    scale, rotation = scaled_rotation(np.swapaxes(affine, -1, -2))
    return scale, rotation, points_mean - np.asarray(scale)[..., None] * np.matvec(rotation, model_mean)[..., :2]


def mean_face_seen(rotation: np.ndarray) -> np.ndarray:
    """MEAN_FACE_68 (68, 3) with its outline points moved to where a face turned by ``rotation`` (face to
    image, 3x3) shows its outline: the extreme of each point's level ellipse (OUTLINE_DEPTH) along the
    direction the face's own x axis takes in the image. The identity gives MEAN_FACE_68 back. Stacked
    rotations (..., 3, 3) give (..., 68, 3)."""
    rotation = np.asarray(rotation, np.float64)
    x_axis, z_axis = rotation[..., :2, 0], rotation[..., :2, 2]
    across = x_axis / np.maximum(np.linalg.norm(x_axis, axis=-1), 1e-9)[..., None]
    # How far the face's x and z axes reach along ``across``.
    reach_x, reach_z = np.vecdot(across, x_axis)[..., None], np.vecdot(across, z_axis)[..., None]
    seen = np.broadcast_to(MEAN_FACE_68, rotation.shape[:-2] + MEAN_FACE_68.shape).copy()
    half = np.abs(MEAN_FACE_68[_OUTLINE, 0])
    side = np.sign(MEAN_FACE_68[_OUTLINE, 0])
    length = np.maximum(np.hypot(reach_x * half, reach_z * OUTLINE_DEPTH * half), 1e-12)
    seen[..., _OUTLINE, 0] = side * reach_x * half * half / length
    seen[..., _OUTLINE, 2] += side * reach_z * (OUTLINE_DEPTH * half) ** 2 / length
    return seen


def fit_mean_face(points: np.ndarray, index: np.ndarray = _STABLE) -> tuple[float | np.ndarray, np.ndarray, np.ndarray]:
    """``weak_perspective`` of the mean face on the (68, 2) ``points``' ``index`` points, the outline taken
    where the fitted pose shows it (``mean_face_seen``): pose and outline alternate OUTLINE_FITS times. Frames
    stacked on leading axes (..., 68, 2) are fitted each on its own, all at once."""
    points = np.asarray(points, np.float64)[..., index, :]
    scale, rotation, offset = weak_perspective(MEAN_FACE_68[index], points)
    for _ in range(OUTLINE_FITS):
        scale, rotation, offset = weak_perspective(mean_face_seen(rotation)[..., index, :], points)
    return scale, rotation, offset


def outline_shift(before: np.ndarray, after: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """(68, 2) image pixels: how far beyond a rigid turn from rotation ``before`` to ``after`` (face to image)
    each landmark of a face seen at ``scale`` pixels per mean-face unit moves: the outline's silhouettes slide
    over the face, every other point stays zero. Frames stacked on leading axes (of ``after`` and ``scale``,
    and of ``before`` or one for all) give (..., 68, 2)."""
    after = np.asarray(after, np.float64)
    change = mean_face_seen(after) - mean_face_seen(before)
    return np.asarray(scale)[..., None, None] * (change @ np.swapaxes(after, -1, -2))[..., :2]


def quiet_turn(rotation: np.ndarray, noise_degrees: float = TURN_NOISE_DEGREES) -> np.ndarray:
    """``rotation`` (3x3) with its out-of-plane part (about the image's x and y axes) shrunk as
    ``TURN_NOISE_DEGREES`` says; the roll (in the image plane) is kept."""
    vector = cv2.Rodrigues(np.asarray(rotation, np.float64))[0].ravel()
    noise = np.radians(noise_degrees)
    if noise > 0:
        vector[:2] = vector[:2] ** 3 / (vector[:2] ** 2 + noise * noise)
    return cv2.Rodrigues(vector)[0]


def carry_in_3d(photo_points: np.ndarray, targets: np.ndarray, driver_points: np.ndarray, reference: int,
                expression_reference: int | None = None, full_closure: bool = False) -> np.ndarray:
    """(T, 68, 2) ``targets`` (the driver's landmark motion carried onto the photo in 2D, ``retarget_relative``)
    carried over in 3D instead, where the photo's view and the driver reference's differ.

    The mean face is fitted to the photo and to every driver frame (weak perspective). A driver frame's expression
    is what its landmarks show beyond its fitted face, taken back into the face's own frame (the 2D residual lifted
    onto the plane facing the camera) and compared with the ``expression_reference`` frame's; it is laid onto the
    photo's landmarks (at the mean face's depths) in the photo's own frame, so a frontal driver's smile widens a
    3/4 face as a 3/4 face widens, and the driver's turns and nods leave nothing behind in it. The photo's head
    then turns by the driver's yaw, pitch and roll, scales by its size and moves by its place (its stable points'
    mean), each relative to the driver's typical (median) one; its outline slides to where the turned face shows
    it. With ``full_closure`` the lid and lip gaps follow ``map_openings``, as in 2D.

    Blended with the 2D targets by the angle between the photo's and the reference's forward directions: none
    within VIEW_START degrees (a driver seen as the photo is: its 2D motion is exact), all from VIEW_FULL."""
    photo = np.asarray(photo_points, np.float64)
    targets = np.asarray(targets, np.float64)
    driver = np.asarray(driver_points, np.float64)
    expression_reference = reference if expression_reference is None else expression_reference
    if not all(np.isfinite(driver[i]).all() for i in (reference, expression_reference)):
        return targets
    photo_scale, photo_rotation, _ = fit_mean_face(photo)
    points3d = np.column_stack([photo, photo_scale * (mean_face_seen(photo_rotation) @ photo_rotation.T)[:, 2]])
    centre = points3d[_STABLE].mean(axis=0)
    _, reference_rotation, _ = fit_mean_face(driver[reference])
    # The angle between the two faces' forward directions (a roll alone changes nothing here).
    view = np.degrees(np.arccos(np.clip(photo_rotation[:, 2] @ reference_rotation[:, 2], -1.0, 1.0)))
    share = float(np.clip((view - VIEW_START) / (VIEW_FULL - VIEW_START), 0.0, 1.0))
    if share == 0.0:
        return targets
    fitted = np.flatnonzero(np.isfinite(driver).all(axis=(1, 2)) & np.isfinite(targets).all(axis=(1, 2)))
    shapes = np.zeros((len(driver), 68, 3))
    # Every finite driver frame's fit at once: scales (F,), rotations (F, 3, 3), offsets (F, 2).
    scales, rotations, offsets = fit_mean_face(driver[fitted])
    seen_fits = scales[:, None, None] * (mean_face_seen(rotations) @ np.swapaxes(rotations, 1, 2))[..., :2]
    residual = driver[fitted] - seen_fits - offsets[:, None]
    # The driver's face in the mean face's frame: its residual (beyond the outline its view shows) lifted onto
    # the plane facing the camera.
    shapes[fitted] = MEAN_FACE_68 + residual @ rotations[:, :2] / scales[:, None, None]
    angles = np.array([yaw_pitch_roll(rotation) for rotation in rotations]).reshape(-1, 3)
    places = driver[fitted][:, _STABLE].mean(axis=1)
    # The driver's face as the photo's view would show it (photo pixels, about the photo's own landmarks).
    seen = photo_scale * (shapes @ photo_rotation.T)
    moved = points3d + (seen - seen[expression_reference])
    if full_closure:
        flat = map_openings(moved[..., 0] + 1j * moved[..., 1], photo[:, 0] + 1j * photo[:, 1],
                            seen[..., 0] + 1j * seen[..., 1], expression_reference)
        moved[..., 0], moved[..., 1] = flat.real, flat.imag
    # The photo's pose is the driver's typical one (its median pose, size and place), not the reference frame's:
    # a reference picked for a 2D transfer (the frame turned most like a 3/4-view photo) may be nodding, and every
    # frame would then nod the photo's head by its difference.
    typical_scale = float(np.median(scales))
    typical_angles = np.median(angles, axis=0)
    typical_place = np.median(places, axis=0)
    photo_angles = np.array(yaw_pitch_roll(photo_rotation))
    carried = targets.copy()
    turns = np.array([rotation_from(*angle) for angle in photo_angles + angles - typical_angles]).reshape(-1, 3, 3)
    rigid = RigidMotion(turns @ photo_rotation.T, scales / typical_scale, np.zeros((len(fitted), 2)), centre)
    anchors = centre[:2] + (places - typical_place) * photo_scale / typical_scale
    # The photo's outline is where its view shows it; the turn slides it over the face.
    slides = outline_shift(photo_rotation, turns, photo_scale * rigid.scale)
    placed = _placed(rigid, moved[fitted], anchors - slides[:, _STABLE].mean(axis=1))
    carried[fitted] = placed.project(moved[fitted]) + slides
    out = (targets + share * (carried - targets)).astype(np.float32)
    uncross_lids_and_lips(out)
    return out


def yaw_pitch_roll(rotation: np.ndarray) -> tuple[float, float, float]:
    """Angles (a, b, c) in radians of a face-to-image rotation written as R = Rz(c) Ry(a) Rx(b): a nod b about
    the ear-to-ear axis, a turn a about the vertical axis, then a tilt c in the image plane (mean face's frame:
    x right, y down, z towards the camera)."""
    a = float(np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0)))
    return a, float(np.arctan2(rotation[2, 1], rotation[2, 2])), float(np.arctan2(rotation[1, 0], rotation[0, 0]))


def rotation_from(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(roll) Ry(yaw) Rx(pitch), radians: the inverse of ``yaw_pitch_roll``."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return rz @ ry @ rx


def _fit_rigid(points3d: np.ndarray, target: np.ndarray, centre: np.ndarray) -> "RigidMotion":
    """The rigid motion (rotation, scale, shift about ``centre``) that best carries the stable points of
    ``points3d`` (68, 3) onto ``target`` (68, 2): least squares on an affine camera, then its nearest scaled
    rotation, the shift matching the stable points' mean. Targets of T frames (T, 68, 2) give their motions
    stacked."""
    source = points3d[_STABLE] - centre
    design = np.column_stack([source, np.ones(len(source))])
    solution = _least_squares(design, target[..., _STABLE, :] - centre[:2])
    scale, rotation = scaled_rotation(np.swapaxes(solution[..., :3, :], -1, -2))
    return _placed(RigidMotion(rotation, scale, np.zeros(np.shape(scale) + (2,)), centre), points3d,
                   target[..., _STABLE, :].mean(axis=-2))


def _placed(rigid: "RigidMotion", points3d: np.ndarray, anchor: np.ndarray) -> "RigidMotion":
    """``rigid`` shifted so the stable points of ``points3d`` land with their mean on ``anchor`` (2,) (stacked
    motions: an anchor (T, 2) each, and the points shared or each frame's own (T, 68, 3))."""
    shift = anchor - rigid.project(points3d[..., _STABLE, :]).mean(axis=-2)
    return RigidMotion(rigid.rotation, rigid.scale, rigid.shift + shift, rigid.centre)


@dataclass(frozen=True)
class RigidMotion:
    """One frame's head motion: photo point X (x, y, depth) -> scale * rotation (X - centre) + centre + shift,
    seen from the front (x, y).

    The motions of T frames stack as one: ``rotation`` (T, 3, 3), ``scale`` (T,), ``shift`` (T, 2) and the
    head's one ``centre``; its methods then answer for every frame at once, and ``frames`` splits it."""

    rotation: np.ndarray            # (3, 3); stacked (T, 3, 3)
    scale: float | np.ndarray       # stacked (T,)
    shift: np.ndarray               # (2,); stacked (T, 2)
    centre: np.ndarray              # (3,) the head's centre in the photo (pixels; depth in pixels too)

    def project(self, points3d: np.ndarray) -> np.ndarray:
        """(N, 2): where the (N, 3) photo points go, seen from the front; stacked, (T, N, 2), for points shared by
        the frames or each frame's own (T, N, 3)."""
        linear = np.asarray(self.scale)[..., None, None] * self.rotation[..., :2, :]
        moved = (np.asarray(points3d, np.float64) - self.centre) @ np.swapaxes(linear, -1, -2)
        return moved + self.centre[:2] + (self.shift if np.ndim(self.scale) == 0 else self.shift[..., None, :])

    def moved(self, x: np.ndarray, y: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where photo pixels (x, y) at ``depth`` go, seen from the front (arrays of any one shape; stacked, its
        leading axis the frames')."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        # Each frame's numbers broadcast over that frame's points.
        points_axes = (1,) * (x.ndim - np.ndim(self.scale))
        m = np.asarray(self.scale)[..., None, None] * self.rotation
        m = m.reshape(m.shape[:-2] + points_axes + (3, 3))
        shift = self.shift.reshape(self.shift.shape[:-1] + points_axes + (2,))
        z = depth - self.centre[2]
        dx, dy = x - self.centre[0], y - self.centre[1]
        out_x = m[..., 0, 0] * dx + m[..., 0, 1] * dy + m[..., 0, 2] * z + self.centre[0] + shift[..., 0]
        out_y = m[..., 1, 0] * dx + m[..., 1, 1] * dy + m[..., 1, 2] * z + self.centre[1] + shift[..., 1]
        return out_x, out_y

    def linear(self) -> np.ndarray:
        """The 2x2 part acting on (x, y) (at a fixed depth); stacked, (T, 2, 2)."""
        return np.asarray(self.scale)[..., None, None] * self.rotation[..., :2, :2]

    def frames(self) -> tuple["RigidMotion", ...]:
        """Stacked motions, one a frame."""
        return tuple(RigidMotion(rotation, float(scale), shift, self.centre)
                     for rotation, scale, shift in zip(self.rotation, self.scale, self.shift))


class Head3D:
    """A photo's head as a 3D proxy (see the module doc): a depth for every photo pixel."""

    def __init__(self, depth: np.ndarray, step: float, centre: np.ndarray, points: np.ndarray,
                 face: tuple[float, np.ndarray], landmark_depths: np.ndarray | None = None):
        self.depth = depth.astype(np.float32)        # depth map, one sample every ``step`` photo pixels
        self.step = float(step)
        self.centre = np.asarray(centre, np.float64)
        self.points = np.asarray(points, np.float64)
        # The landmarks' own depths (the rigid motion is fitted to them): the map's, or ``landmark_depths``
        # (their shape) placed at the map's depth on the stable points' mean.
        depths = self.depth_at(self.points[:, 0], self.points[:, 1])
        if landmark_depths is not None:
            shape = np.asarray(landmark_depths, np.float64)
            depths = shape - shape[_STABLE].mean() + depths[_STABLE].mean()
        self.points3d = np.column_stack([self.points, depths])
        # The mean face's fit to the photo (scale, rotation): ``motion`` slides the outline by it as the head turns.
        self.face = face

    @classmethod
    def from_photo(cls, shape: tuple[int, int], points: np.ndarray) -> "Head3D":
        """The head of the face with (68, 2) landmarks ``points`` in a photo of ``shape`` (height, width)."""
        points = np.asarray(points, np.float64)
        scale, rotation, offset = fit_mean_face(points)
        # Everything in photo pixels: x, y as in the photo, depth by the same scale; the outline where the
        # photo's view shows it.
        model = scale * mean_face_seen(rotation) @ rotation.T
        model[:, :2] += offset
        centre = scale * rotation @ HEAD_CENTRE
        centre[:2] += offset
        radii = scale * HEAD_RADII
        # (X - centre)^T Q (X - centre) = 1 on the ellipsoid.
        quadric = rotation @ np.diag(1.0 / radii ** 2) @ rotation.T
        height, width = shape
        step = max(1.0, max(height, width) / DEPTH_SAMPLES)
        xs = np.arange(0, width + step, step)
        ys = np.arange(0, height + step, step)
        grid_x, grid_y = np.meshgrid(xs, ys)
        surface = _front_depth(quadric, centre, grid_x, grid_y)
        # The landmarks' own depths (nose, brows, jaw), relative to the ellipsoid, spread over the face.
        relative = model[:, 2] - _front_depth(quadric, centre, points[:, 0], points[:, 1])
        sigma = FACE_SPREAD * scale
        # Each landmark's Gaussian is a column factor times a row factor, so the sums over the landmarks at every node
        # are two matrix products (the (rows, columns, 68) weights took 0.15 s a photo).
        across = np.exp(-(xs[:, None] - points[:, 0]) ** 2 / (2 * sigma ** 2))     # (columns, 68)
        down = np.exp(-(ys[:, None] - points[:, 1]) ** 2 / (2 * sigma ** 2))       # (rows, 68)
        total = down @ across.T
        spread = (down @ (across * relative).T) / np.maximum(total, 1e-9)
        # Full weight where the landmarks are dense, fading out beyond them.
        presence = np.clip(total / 1.5, 0.0, 1.0)
        # The rigid motion is fitted to the landmarks at the mean face's own depths (the map spreads them, which
        # flattens the nose and a 3/4 view's far jaw: fitted to the map's, a side view's head turned twice as far
        # as its driver).
        return cls(surface + spread * presence, step, centre, points, (scale, rotation), model[:, 2])

    def depth_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth (photo pixels, towards the camera) at photo pixels (x, y), any shape."""
        scale = 1.0 / self.step
        return sample_at(self.depth, np.asarray(x, np.float32) * scale, np.asarray(y, np.float32) * scale)

    def motion(self, target: np.ndarray) -> tuple[RigidMotion, np.ndarray]:
        """The rigid motion that best explains the (68, 2) ``target`` landmarks (fitted to the stable
        points; its small turns and nods quieted, ``quiet_turn``) and the expression left over, as landmarks
        in the photo's own frame (68, 2): the points the motion carries onto the targets (``inverse``)."""
        rigid, expression = self.motions(np.asarray(target, np.float64)[None])
        return rigid.frames()[0], expression[0]

    def motions(self, targets: np.ndarray) -> tuple[RigidMotion, np.ndarray]:
        """``motion`` of every frame of the (T, 68, 2) ``targets`` at once: their rigid motions stacked (one
        ``RigidMotion`` over T frames) and their expressions (T, 68, 2)."""
        targets = np.asarray(targets, np.float64)
        if not len(targets):
            return RigidMotion(np.zeros((0, 3, 3)), np.zeros(0), np.zeros((0, 2)), self.centre), np.zeros((0, 68, 2))
        fitted = _fit_rigid(self.points3d, targets, self.centre)
        # The targets' outline is where the turned face shows it: fitted to the photo's points moved by what that
        # turn slides along the outline, alternately with the turn.
        scale, rotation = self.face
        for _ in range(OUTLINE_FITS):
            slide = outline_shift(rotation, fitted.rotation @ rotation, scale * fitted.scale)
            fitted = _fit_rigid(self.points3d, targets - slide, self.centre)
        quiet = np.stack([quiet_turn(turn) for turn in fitted.rotation])
        rigid = _placed(RigidMotion(quiet, fitted.scale, np.zeros_like(fitted.shift), self.centre),
                        self.points3d, (targets - slide)[:, _STABLE].mean(axis=1))
        return rigid, self.inverse(rigid, targets)

    def inverse(self, rigid: RigidMotion, target: np.ndarray, iterations: int = INVERSE_ITERATIONS) -> np.ndarray:
        """The photo pixels that ``rigid`` moves onto the (N, 2) ``target`` pixels (each at its own depth):
        where the head's map (``forward``) sends them back, so a face warped to these points in the photo's
        frame lands on the target once the head turns. Newton steps, each point's 2x2 Jacobian including its
        depth's slope (near the outline the depth falls steeply and steps through the motion's 2x2 part alone
        crept: 0.8 px left after 20 at a 25-degree turn); the plain step where that Jacobian is near singular.
        Stacked motions (T frames) take each frame's own targets (T, N, 2)."""
        target = np.asarray(target, np.float64)
        linear = rigid.linear()
        plain = np.linalg.inv(linear)
        singular = 0.25 * np.abs(np.linalg.det(linear))[..., None]
        along_depth = (np.asarray(rigid.scale)[..., None] * rigid.rotation[..., :2, 2])[..., None, :, None]
        delta = 0.5 * self.step
        points = np.broadcast_to(self.points, target.shape).copy()
        for _ in range(iterations + 1):
            x, y = points[..., 0], points[..., 1]
            # The depth at the points and half a map step either side of them (its slope), in one lookup.
            depth = self.depth_at(np.stack([x, x + delta, x - delta, x, x]), np.stack([y, y, y, y + delta, y - delta]))
            miss = target - np.stack(rigid.moved(x, y, depth[0]), axis=-1)
            slope = np.stack([depth[1] - depth[2], depth[3] - depth[4]], axis=-1) / (2 * delta)
            jacobian = linear[..., None, :, :] + along_depth * slope[..., None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                determinant, solved = _solve_2x2(jacobian, miss)
            steady = np.abs(determinant) > singular
            points = points + np.where(steady[..., None], solved, miss @ np.swapaxes(plain, -1, -2))
        return points

    def forward(self, rigid: RigidMotion, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where photo pixels (x, y) go under ``rigid`` (arrays of any one shape; stacked, its leading axis the
        frames')."""
        return rigid.moved(x, y, self.depth_at(x, y))


def _solve_2x2(matrices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The determinants (...) of 2x2 ``matrices`` (..., 2, 2) and the solutions (..., 2) of ``matrices`` x =
    ``values`` (..., 2), by LU with partial pivoting written out (LAPACK's steps, so ``np.linalg.solve``'s
    numbers, without its call for each small system); a singular matrix gives infinities or NaN."""
    (a, b), (c, d) = np.moveaxis(matrices, (-2, -1), (0, 1))
    swap = np.abs(c) > np.abs(a)
    pivot, beside = np.where(swap, c, a), np.where(swap, d, b)
    lower = np.where(swap, a, c) * (1.0 / pivot)
    last = np.where(swap, b, d) - lower * beside
    first = np.where(swap, values[..., 1], values[..., 0])
    second = (np.where(swap, values[..., 0], values[..., 1]) - lower * first) / last
    return np.where(swap, -pivot, pivot) * last, np.stack([(first - beside * second) / pivot, second], axis=-1)


def _front_depth(quadric: np.ndarray, centre: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The head's depth seen at (x, y): in front of the ellipsoid's middle depth (where its front and back
    meet) by the square of its half-thickness there over its largest (a paraboloid-like cap with the
    ellipsoid's outline and front), and that middle depth beyond the outline, so the depth is continuous
    there. The ellipsoid's own front is vertical at its outline: a turn folds the surface there and the
    backward map finds no single answer (the far cheek of a 3/4 view tore into the background)."""
    dx, dy = np.asarray(x, np.float64) - centre[0], np.asarray(y, np.float64) - centre[1]
    a = quadric[2, 2]
    b = quadric[0, 2] * dx + quadric[1, 2] * dy
    c = quadric[0, 0] * dx * dx + 2 * quadric[0, 1] * dx * dy + quadric[1, 1] * dy * dy - 1.0
    half = np.sqrt(np.maximum(b * b - a * c, 0.0)) / a
    deepest = 1.0 / np.sqrt(a)
    return centre[2] - b / a + half * half / deepest
