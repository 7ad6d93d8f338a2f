"""Cross-identity protocol (issue 31, ``eval --cross``): photos of one person driven by videos of others,
judged the way a user sees the result.

Per (photo, driver, method) the photo is driven by the driver's first ``max_frames`` frames through
the real pipeline (as ``reenact`` does) and, on every ``stride``-th frame where both the driver's
own landmarks and the output's detected ones exist:

- identity: distance of the output face's dlib descriptor to the photo's (below 0.6: the same person);
- pose following: yaw, pitch and roll of the output (``head_pose``, relative to the output clip's
  median) regressed on the driver's (relative to its own median): slope (1 = turns as far) and
  Pearson r, beside the driver's spread (std, degrees); where the driver hardly moves (spread under
  ``CrossConfig.min_spread``) slope and r are NaN: a regression on a few degrees of estimator noise
  says nothing;
- expression following: mouth and eye openings of the output regressed on the driver's;
- detail: the variance of the Laplacian in the output's face box (its detected landmarks, 1.2x)
  over that of the photo's face box (1 = as sharp as the photo).

A contact sheet per (photo, driver, method): the photo, then at the frames of the driver's largest
yaw and roll change (then evenly spaced ones) the driver frame above the output frame.

Pose estimator: dlib's 68 landmarks fitted to a generic 3D face with ``cv2.solvePnP`` (focal length =
image width, principal point = image centre; no lens distortion), Euler angles in degrees.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import FinetuneConfig
from .errors import UsageError
from .evaluate import FaceIdentity, detail_ratio, detect_near, identity_distance, pearson
from .io.images import load_image, save_image
from .landmarks import LandmarkTrack, detect_photo_landmarks, eye_opening, mouth_opening
from .progress import ProgressReporter, SilentProgress
from .reenact import (BASELINE_METHODS, DETAIL_BOX_SCALE, FULL_FRAME_METHODS, Renderers, _render, _track,
                      average_rows, face_box, read_frames, regression_slope)
from .render.pipeline import Driver
from .render.preview import preview_indices, write_preview

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

# The generic 3D face: the six-point model of Satya Mallick's "Head Pose Estimation using OpenCV and
# Dlib" (learnopencv.com, 2016), the one most landmark-based pose estimators use. Its units are
# arbitrary (about 1 unit = 0.3 mm; outer eye corners 450 apart); only the shape matters to solvePnP.
# That model has y up and z towards the viewer; here y points down and z away from the camera, as in
# OpenCV's camera frame, so a face looking straight into the camera has the identity rotation.
# Known limit: the chin (8) drops when the mouth opens and the mouth corners move in a smile, so a wide
# open mouth reads as a little pitch; the same holds for driver and output, both read the same way.
POSE_LANDMARKS = (30, 8, 36, 45, 48, 54)   # nose tip, chin, outer eye corners, mouth corners (dlib 68)
FACE_MODEL_3D = np.array([
    (0.0, 0.0, 0.0),            # nose tip
    (0.0, 330.0, 65.0),         # chin
    (-225.0, -170.0, 135.0),    # outer corner of the eye on the image's left
    (225.0, -170.0, 135.0),     # outer corner of the eye on the image's right
    (-150.0, 150.0, 125.0),     # mouth corner on the image's left
    (150.0, 150.0, 125.0),      # mouth corner on the image's right
], np.float64)
_MODEL_EYE_SPAN = float(FACE_MODEL_3D[3, 0] - FACE_MODEL_3D[2, 0])

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
    """(yaw, pitch, roll) of a model-to-camera rotation written as R = Rz(c) Ry(a) Rx(b): a nod about the
    face's ear-to-ear axis, a turn about the camera's vertical axis, then a tilt about its optical axis.
    Roll outermost makes an in-plane turn of the image a pure roll: yaw and pitch do not change with it
    (with roll innermost, a nodding face rolled in the image would read as a turn). Signed for the
    reader: yaw > 0 turns the nose to the image's right, pitch > 0 tips it down, roll > 0 tilts the face
    counterclockwise as seen."""
    a = math.asin(float(np.clip(-rotation[2, 0], -1.0, 1.0)))
    b = math.atan2(rotation[2, 1], rotation[2, 2])
    c = math.atan2(rotation[1, 0], rotation[0, 0])
    # Ry(a) with a > 0 swings the nose (-z) towards -x, Rx(b) with b > 0 swings it towards +y (down),
    # Rz(c) with c > 0 turns +x towards +y: clockwise on screen, where y points down.
    return -math.degrees(a), math.degrees(b), -math.degrees(c)


def _start_rotation(yaw: float, pitch: float) -> np.ndarray:
    a, b = math.radians(-yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return cv2.Rodrigues(ry @ rx)[0]


# Starting poses of the iterative solver (yaw, pitch; degrees). Six points of a generic face admit a
# second, mirrored minimum (a turn one way for a turn the other, a nod up for a nod down); which one a
# single frontal start falls into depends on the start, so solve from several and keep the pose that
# reprojects best (on tpsmm_driving's first 90 frames this changes 12 of them by more than 0.5 degrees).
# Known limit: where the open mouth and dropped chin make the mirrored pose fit better, it wins: on the
# 3/4-view furious clip the yaw jumps between about +45 and -37 degrees (counted by ``pose_jumps``).
_STARTS = [_start_rotation(yaw, pitch) for yaw in (-30.0, 0.0, 30.0) for pitch in (-30.0, 0.0, 30.0)]


def _towards(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto ``direction``."""
    z = np.array([0.0, 0.0, 1.0])
    d = direction / np.linalg.norm(direction)
    axis = np.cross(z, d)
    sine, cosine = float(np.linalg.norm(axis)), float(d @ z)
    if sine < 1e-12:
        return np.eye(3)
    return cv2.Rodrigues(axis / sine * math.atan2(sine, cosine))[0]


def _pose_one(points: np.ndarray, camera: np.ndarray) -> tuple[float, float, float]:
    image_points = np.asarray(points, np.float64)[list(POSE_LANDMARKS)]
    if not np.isfinite(image_points).all():
        return math.nan, math.nan, math.nan
    span = float(np.linalg.norm(image_points[3] - image_points[2]))
    if span < 1.0:
        return math.nan, math.nan, math.nan
    # Translation start: the depth the eye span implies, the nose tip where the image has it.
    focal, cx, cy = camera[0, 0], camera[0, 2], camera[1, 2]
    depth = focal * _MODEL_EYE_SPAN / span
    nose = image_points[0]
    start_t = np.array([[(nose[0] - cx) * depth / focal], [(nose[1] - cy) * depth / focal], [depth]])
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for start_r in _STARTS:
        ok, rvec, tvec = cv2.solvePnP(FACE_MODEL_3D, image_points, camera, None, start_r.copy(), start_t.copy(),
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or tvec[2, 0] <= 0:
            continue
        projected, _ = cv2.projectPoints(FACE_MODEL_3D, rvec, tvec, camera, None)
        error = float(np.sum((projected.reshape(-1, 2) - image_points) ** 2))
        if best is None or error < best[0] - 1e-6:
            best = (error, rvec, tvec)
    if best is None:
        return math.nan, math.nan, math.nan
    _, rvec, tvec = best
    # The pose as seen along the line of sight to the face, not against the optical axis: a face that
    # looks the same anywhere in the frame reads the same, so a driver's face in the middle of its video
    # and the output's face high in a portrait compare, and an in-plane turn of the face is a pure roll.
    rotation = _towards(tvec[:, 0]).T @ cv2.Rodrigues(rvec)[0]
    return _euler_degrees(rotation)


def head_pose(points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Yaw, pitch and roll in degrees of faces with dlib's 68 landmarks: (T, 68, 2) -> (T, 3), or
    (68, 2) -> (3,).

    ``frame_size`` is the image's (width, height): the camera has focal length = width and its centre
    at the image's centre. The angles are the head's rotation relative to the line of sight to it (a
    face looking straight at the camera reads 0 wherever it sits in the frame). Signs: yaw > 0 turns the nose to the image's right, pitch > 0 tips it down,
    roll > 0 tilts the face counterclockwise as seen. Frames with non-finite points give NaN.
    Absolute angles of a generic face are biased per person; compare changes (e.g. about a clip's median).
    """
    points = np.asarray(points, np.float64)
    single = points.ndim == 2
    batch = points[None] if single else points
    if batch.ndim != 3 or batch.shape[1:] != (68, 2):
        raise ValueError(f"expected (T, 68, 2) or (68, 2) landmarks, got {points.shape}")
    width, height = frame_size
    camera = np.array([[width, 0.0, width / 2], [0.0, width, height / 2], [0.0, 0.0, 1.0]], np.float64)
    angles = np.array([_pose_one(p, camera) for p in batch], np.float64).reshape(len(batch), 3)
    return angles[0] if single else angles


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
        pose[raw.valid] = head_pose(raw.points[raw.valid], (frames[0].shape[1], frames[0].shape[0]))
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
        if out.shape[:2] != photo.shape[:2]:
            # Outputs are the photo's size up to an even crop; compare in the photo's pixels.
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
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
    driver_pose = head_pose(np.array(drv_points), (drive.frames[0].shape[1], drive.frames[0].shape[0])) \
        if drv_points else np.zeros((0, 3))
    output_pose = head_pose(np.array(out_points), (width, height)) if out_points else np.zeros((0, 3))
    both = np.isfinite(driver_pose).all(axis=1) & np.isfinite(output_pose).all(axis=1)
    row["driver_pose_jumps"], row["output_pose_jumps"] = pose_jumps(driver_pose), pose_jumps(output_pose)
    for k, angle in enumerate(ANGLES):
        d, o = driver_pose[both, k], output_pose[both, k]
        spread = float(np.std(d)) if len(d) >= 3 else math.nan
        slope, r = _follow(d - np.median(d), o - np.median(o)) if len(d) >= 3 else (math.nan, math.nan)
        if not spread >= config.min_spread:
            slope, r = math.nan, math.nan
        row.update({f"{angle}_slope": slope, f"{angle}_r": r, f"{angle}_spread": spread})
    for name, measure in (("mouth", mouth_opening), ("eye", eye_opening)):
        d = measure(np.array(drv_points)) if drv_points else np.zeros(0)
        o = measure(np.array(out_points)) if out_points else np.zeros(0)
        row[f"{name}_slope"], row[f"{name}_r"] = _follow(d, o)
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
