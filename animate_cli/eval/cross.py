"""Cross-identity protocol (issue 31, ``eval --cross``): photos of one person driven by videos of others,
judged the way a user sees the result.

Per (photo, driver, method) the photo is driven by the driver's first ``max_frames`` frames through
the real pipeline (as ``eval.full_frame`` does) and, on every ``stride``-th frame where both the driver's
own landmarks and the output's detected ones exist:

- identity: distance of the output face's dlib descriptor to the photo's (below 0.6: the same person);
- pose following: yaw, pitch and roll of the output (``head_pose``, relative to the output clip's
  median) regressed on the driver's (relative to its own median): slope (1 = turns as far) and
  Pearson r, beside the driver's spread (std, degrees); where the driver hardly moves (spread under
  ``CrossConfig.min_spread``) slope and r are NaN: a regression on a few degrees of estimator noise
  says nothing;
- expression following: mouth and eye openings of the output regressed on the driver's (``openings``: gaps
  over the face's size as the mean face reads it, so a turned face's openings read as a frontal one's);
- detail: the variance of the Laplacian in the output's face box (its detected landmarks, 1.2x)
  over that of the photo's face box (1 = as sharp as the photo).

A contact sheet per (photo, driver, method): the photo, then at the frames of the driver's largest
yaw and roll change (then evenly spaced ones) the driver frame above the output frame.

Pose estimator: the project's 68-point mean 3D face fitted to dlib's landmarks by weak perspective
(``head_pose``), Euler angles in degrees.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FinetuneConfig
from ..errors import UsageError
from ..io.images import load_image, save_image
from ..landmarks import LandmarkTrack, detect_photo_landmarks
from ..landmarks.retarget import STABLE_POINTS
from ..progress import ProgressReporter, SilentProgress
from ..render.head3d import fit_mean_face, yaw_pitch_roll
from ..render.pipeline import Driver
from ..render.preview import preview_indices, write_preview
from .full_frame import (BASELINE_METHODS, DETAIL_BOX_SCALE, FULL_FRAME_METHODS, Renderers, _render, _track,
                         average_rows, face_box, read_frames, regression_slope)
from .metrics import FaceIdentity, at_size, detail_ratio, detect_near, identity_distance, pearson

log = logging.getLogger(__name__)

# Methods that render the photo ("frozen": the photo itself, every frame: the floor of pose following,
# slope 0, and the ceiling of identity and detail). "real" has no meaning across identities.
CROSS_METHODS = tuple(m for m in FULL_FRAME_METHODS if m != "real")
ANGLES = ("yaw", "pitch", "roll")
# A driver whose angle varies less than this (std, degrees) over the measured frames gets no slope or r
# for it: the estimator's own frame-to-frame noise is a degree or two, so the fit would be noise on noise.
MIN_SPREAD_DEG = 3.0
# A change of yaw or pitch larger than this between neighbouring measured frames (a tenth of a second
# apart at stride 3) is no head turn but the estimator switching to its mirrored solution.
POSE_JUMP_DEG = 20.0

CROSS_KEYS = ("identity_distance", *(f"{a}_{k}" for a in ANGLES for k in ("slope", "r", "spread")),
              "mouth_slope", "mouth_r", "eye_slope", "eye_r", "detail", "face_found")


def pose_jumps(pose: np.ndarray) -> int:
    """How often yaw or pitch changes by more than ``POSE_JUMP_DEG`` between neighbouring rows of a
    (T, 3) pose series (NaN rows dropped): the estimator's branch switches; pose slopes of a series
    with any are not to be trusted."""
    pose = np.asarray(pose, np.float64)
    pose = pose[np.isfinite(pose).all(axis=1)]
    return int((np.abs(np.diff(pose[:, :2], axis=0)) > POSE_JUMP_DEG).any(axis=1).sum()) if len(pose) > 1 else 0


@dataclass(frozen=True)
class CrossConfig:
    """What the cross-identity protocol runs."""

    methods: tuple[str, ...] = ("warp",)
    max_frames: int = 90              # frames of each driver, from its start
    stride: int = 3                   # metrics on every stride-th frame
    smoothing: float = 1.0            # the driver track's smoothing, as the main command's --smoothing
    sheet_frames: int = 4             # frames on each contact sheet
    finetune_steps: int | None = None  # neural methods only; None: the main command's default for one photo
    min_spread: float = MIN_SPREAD_DEG

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in CROSS_METHODS]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r}; choose from: {', '.join(CROSS_METHODS)}")
        if not self.methods:
            raise UsageError("choose at least one method")
        if self.max_frames < 2 or self.stride < 1 or self.sheet_frames < 1:
            raise UsageError("max_frames must be >= 2, stride >= 1 and sheet_frames >= 1")
        if self.min_spread < 0:
            raise UsageError("min_spread must be >= 0")


# ----------------------------------------------------------------------------------------------
# Head pose


def _euler_degrees(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of a face-to-image rotation (the mean face's frame: x right, y down, z towards
    the camera) written as R = Rz(c) Ry(a) Rx(b): a nod about the ear-to-ear axis, a turn about the
    vertical axis, then a tilt in the image plane. Roll outermost makes an in-plane turn of the image a
    pure roll. Signed for the reader: yaw > 0 turns the nose to the image's right, pitch > 0 tips it
    down, roll > 0 tilts the face counterclockwise as seen."""
    a, b, c = yaw_pitch_roll(rotation)
    # Ry(a), a > 0, swings the nose (+z) towards +x (right); Rx(b), b > 0, towards -y (up); Rz(c), c > 0,
    # turns +x towards +y: clockwise on screen, where y points down.
    return math.degrees(a), -math.degrees(b), -math.degrees(c)


def head_pose(points: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll in degrees of faces with dlib's 68 landmarks: (T, 68, 2) -> (T, 3), or
    (68, 2) -> (3,).

    The project's 68-point mean 3D face (``render.head3d.MEAN_FACE_68``) is fitted to the points that lids
    and jaw do not move (jaw's upper ends, eye corners, nose: ``STABLE_POINTS``) by a weak-perspective
    camera, the jaw's ends taken where the fitted view shows the outline (``render.head3d.fit_mean_face``),
    so an open mouth or a smile reads as no pitch, and 21 points leave no mirrored second solution (a
    6-point perspective fit flipped between +45 and -37 degrees of yaw on a 3/4-view clip).
    Signs: yaw > 0 turns the nose to the image's right, pitch > 0 tips it down, roll > 0 tilts the face
    counterclockwise as seen. Frames with non-finite points give NaN. Absolute angles of a mean face
    are biased per person; compare changes (e.g. about a clip's median).
    """
    points = np.asarray(points, np.float64)
    single = points.ndim == 2
    batch = points[None] if single else points
    if batch.ndim != 3 or batch.shape[1:] != (68, 2):
        raise ValueError(f"expected (T, 68, 2) or (68, 2) landmarks, got {points.shape}")
    angles = np.full((len(batch), 3), np.nan)
    for index, fit in enumerate(_mean_face_fits(batch)):
        if fit is not None:
            angles[index] = _euler_degrees(fit[1])
    return angles[0] if single else angles


def _mean_face_fits(points: np.ndarray) -> list[tuple[float, np.ndarray] | None]:
    """The mean face fitted to each face's stable points (T, 68, 2) (``fit_mean_face``): (scale, 3x3 rotation),
    or None where those points are not finite or span under a pixel."""
    stable = list(STABLE_POINTS)
    fits: list[tuple[float, np.ndarray] | None] = []
    for face in points:
        if np.isfinite(face[stable]).all() and np.ptp(face[stable, 0]) > 1.0:
            fits.append(fit_mean_face(face)[:2])
        else:
            fits.append(None)
    return fits


# (upper, lower) landmark pairs across the inner lips and across the lids.
MOUTH_GAPS = ((61, 67), (62, 66), (63, 65))
LID_GAPS = ((37, 41), (38, 40), (43, 47), (44, 46))


def openings(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mouth and eye openings of faces with dlib's 68 landmarks, (T, 68, 2) -> two (T,) arrays: the mean
    gap across the inner lips and across the lids, over the face's size as the mean face fitted to the
    stable points reads it (its scale: the eye-corner distance of the face seen from the front).

    Not over the eye-corner distance seen (``landmarks.mouth_opening``): a face turned by yaw shows that
    distance shortened by cos(yaw) and the gaps, which run up and down, not at all, so a 3/4-view driver's
    mouth read 1/cos(yaw) wider than the same mouth seen from the front (1.3x at 40 degrees), and a frontal
    photo following it exactly read as opening its mouth 0.77x as far. NaN where the stable points are not
    finite."""
    points = np.asarray(points, np.float64)
    sizes = np.array([np.nan if fit is None else fit[0] for fit in _mean_face_fits(points)])

    def gap(pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
        upper, lower = zip(*pairs)
        return np.linalg.norm(points[:, list(lower)] - points[:, list(upper)], axis=-1).mean(axis=1) / sizes

    return gap(MOUTH_GAPS), gap(LID_GAPS)


# ----------------------------------------------------------------------------------------------
# Protocol


@dataclass
class _CrossDriver:
    path: Path
    frames: list[np.ndarray]
    raw: LandmarkTrack
    driver: Driver
    pose: np.ndarray          # (T, 3) degrees, NaN where the driver has no face


def _load_driver(path: Path, renderers: Renderers, config: CrossConfig) -> _CrossDriver:
    frames, fps = read_frames(path, config.max_frames)
    raw, track = _track(renderers.backend, frames, fps, config.smoothing, str(path))
    pose = np.full((len(frames), 3), math.nan)
    if raw.valid.any():
        pose[raw.valid] = head_pose(raw.points[raw.valid])
    return _CrossDriver(path, frames, raw, Driver(path=path, track=track, video=None), pose)


def sheet_indices(pose: np.ndarray, count: int) -> list[int]:
    """Frame numbers for a contact sheet of ``count`` frames: the driver's frame of largest yaw change,
    then of largest roll change (each from the clip's median; NaN frames skipped), then evenly spaced
    ones; sorted."""
    pose = np.asarray(pose, np.float64)
    chosen: list[int] = []
    finite = np.isfinite(pose).all(axis=1)
    if finite.any():
        change = np.where(finite[:, None], np.abs(pose - np.nanmedian(pose[finite], axis=0)), -1.0)
        for column in (0, 2):            # yaw, roll
            if len(chosen) < count:
                order = [int(i) for i in np.argsort(-change[:, column], kind="stable") if finite[i]]
                pick = next((i for i in order if i not in chosen), None)
                if pick is not None:
                    chosen.append(pick)
    # Evenly spaced fill: ask for more candidates than needed, the extremes may take some of them.
    for extra in range(count, count + len(pose) + 1):
        if len(chosen) >= min(count, len(pose)):
            break
        for i in preview_indices(len(pose), extra):
            if i not in chosen and len(chosen) < count:
                chosen.append(i)
    return sorted(chosen)


def _follow(driver: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """Slope of output on driver and their correlation (NaN for fewer than 3 pairs)."""
    if len(driver) < 3:
        return math.nan, math.nan
    return regression_slope(driver, output), pearson(driver, output)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _score(photo: np.ndarray, photo_points: np.ndarray, photo_id: np.ndarray, drive: _CrossDriver,
           outputs: list[np.ndarray], renderers: Renderers, identity: FaceIdentity,
           config: CrossConfig) -> tuple[dict[str, Any], np.ndarray]:
    """The metrics of one output clip, and the output's pose per frame (NaN where unmeasured)."""
    height, width = photo.shape[:2]
    x0, y0, x1, y1 = face_box(photo_points, photo.shape, DETAIL_BOX_SCALE)
    photo_box = photo[y0:y1, x0:x1]
    expected = photo_points
    drv_points, out_points, ids, details, measured = [], [], [], [], 0
    for i in range(0, min(len(outputs), len(drive.frames)), config.stride):
        if not drive.raw.valid[i]:
            continue
        measured += 1
        out = outputs[i]
        out = at_size(out, (width, height))     # the photo's size up to an even crop: compare in its pixels
        # The output's head moves with the driver: look for it where it was last seen.
        detected = detect_near(renderers.backend, out, expected)
        if detected is None:
            continue
        expected = detected
        drv_points.append(drive.raw.points[i])
        out_points.append(detected)
        ids.append(identity_distance(identity.descriptor(out, detected), photo_id))
        bx0, by0, bx1, by1 = face_box(detected, out.shape, DETAIL_BOX_SCALE)
        details.append(detail_ratio(out[by0:by1, bx0:bx1], photo_box))
    row: dict[str, Any] = {"frames": len(out_points), "face_found": len(out_points) / max(measured, 1),
                           "identity_distance": _mean(ids), "detail": _mean(details)}
    driver_pose = head_pose(np.array(drv_points)) \
        if drv_points else np.zeros((0, 3))
    output_pose = head_pose(np.array(out_points)) if out_points else np.zeros((0, 3))
    both = np.isfinite(driver_pose).all(axis=1) & np.isfinite(output_pose).all(axis=1)
    row["driver_pose_jumps"], row["output_pose_jumps"] = pose_jumps(driver_pose), pose_jumps(output_pose)
    for k, angle in enumerate(ANGLES):
        d, o = driver_pose[both, k], output_pose[both, k]
        spread = float(np.std(d)) if len(d) >= 3 else math.nan
        slope, r = _follow(d - np.median(d), o - np.median(o)) if len(d) >= 3 else (math.nan, math.nan)
        if not spread >= config.min_spread:
            slope, r = math.nan, math.nan
        row.update({f"{angle}_slope": slope, f"{angle}_r": r, f"{angle}_spread": spread})
    driver_open = openings(np.array(drv_points)) if drv_points else (np.zeros(0), np.zeros(0))
    output_open = openings(np.array(out_points)) if out_points else (np.zeros(0), np.zeros(0))
    for name, d, o in zip(("mouth", "eye"), driver_open, output_open):
        both = np.isfinite(d) & np.isfinite(o)
        row[f"{name}_slope"], row[f"{name}_r"] = _follow(d[both], o[both])
    return row, output_pose


def _write_sheet(path: Path, photo: np.ndarray, drive: _CrossDriver, outputs: list[np.ndarray],
                 count: int) -> Path:
    indices = [i for i in sheet_indices(drive.pose, count) if i < len(outputs)]
    return write_preview(path, photo, [(i, drive.frames[i]) for i in indices], [(i, outputs[i]) for i in indices],
                         overwrite=True)


def cross_identity(photos: Sequence[str | Path], drivers: Sequence[str | Path], renderers: Renderers,
                   config: CrossConfig, progress: ProgressReporter | None = None,
                   sheet_dir: Path | None = None, identity: FaceIdentity | None = None) -> list[dict[str, Any]]:
    """One row per (photo, driver, method): identity kept, pose and expression following and detail
    (see the module doc), keys ``CROSS_KEYS`` plus photo, driver, method, frames.

    ``sheet_dir``: also write a contact sheet per row there, ``<photo stem>__<driver stem>__<method>.png``
    (the row's ``sheet``). Drivers without a face in any frame, and photos without a face, are skipped
    with a warning.
    """
    progress = progress or SilentProgress()
    identity = identity or FaceIdentity()
    backend = renderers.backend
    if sheet_dir is not None:
        sheet_dir = Path(sheet_dir).expanduser()
        sheet_dir.mkdir(parents=True, exist_ok=True)
    loaded = []
    for path in map(Path, drivers):
        drive = _load_driver(path, renderers, config)
        if not drive.raw.valid.any():
            log.warning("%s: no face in its first %d frames; skipped", path, len(drive.frames))
            continue
        loaded.append(drive)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="animate-face-cross-") as tmp:
        for photo_path in map(Path, photos):
            photo = load_image(photo_path)
            photo_points = detect_photo_landmarks(backend, photo, path=photo_path)
            photo_id = identity.descriptor(photo, photo_points)
            # The engines read the photo from a file; the decoded copy keeps what load_image made of it
            # (EXIF turn, alpha over white) identical for both.
            copy = Path(tmp) / f"{len(rows)}-{photo_path.stem}.png"
            save_image(copy, photo)
            people: dict[int, Any] = {}
            with progress.stage(photo_path.stem[:10], len(config.methods) * len(loaded)) as advance:
                for drive in loaded:
                    for method in config.methods:
                        if method in BASELINE_METHODS:      # "frozen": the photo, every frame
                            outputs = [photo] * len(drive.frames)
                        else:
                            engine = renderers.engine(method)
                            if id(engine) not in people:
                                steps = config.finetune_steps if engine is renderers.neural else 0
                                people[id(engine)] = engine.make_person([copy], FinetuneConfig(steps=steps, seed=0))
                            outputs = _render(engine, people[id(engine)], drive.driver, method, config)
                        row, _ = _score(photo, photo_points, photo_id, drive, outputs, renderers, identity, config)
                        row = {"photo": photo_path.name, "driver": drive.path.name, "method": method, **row}
                        if sheet_dir is not None:
                            name = f"{photo_path.stem}__{drive.path.stem}__{method}.png"
                            row["sheet"] = str(_write_sheet(sheet_dir / name, photo, drive, outputs,
                                                            config.sheet_frames))
                        rows.append(row)
                        advance(1)
    return rows


def cross_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, the mean of every metric over the (photo, driver) pairs that have it (NaN ignored:
    a pose slope is left out where its driver hardly moves)."""
    return average_rows(rows, CROSS_KEYS)
