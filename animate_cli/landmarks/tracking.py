"""Landmarks of a photo, and of every frame of a video (tracking, re-detection, gap filling)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import NoFaceError, UsageError
from .base import NUM_LANDMARKS, Box, FaceDetection, LandmarkBackend, LandmarkTrack, box_iou

logger = logging.getLogger(__name__)

# A detection near the tracked face must overlap its box this much to be the same face.
MIN_MATCH_IOU = 0.3
# Between consecutive frames a tracked face may change size by at most this factor and its
# centre may move by at most this fraction of its size; beyond that the fit is treated as lost.
MAX_SIZE_CHANGE = 1.35
MAX_CENTER_JUMP = 0.5
# A fit in the box made from the previous frame's landmarks is steadier than one in the
# detector's box, but it can drift off a turned or fast-moving face, shrinking frame by frame (a
# 3/4-view clip lost the face for seconds while every step looked plausible). Both are fitted;
# when they differ by more than this (mean point distance over the face's size), the detector's wins.
MAX_DRIFT = 0.05
# Photos longer than this are first searched for big faces only (at least 1/8 of the longest
# side), at a coarse scale: the default search for faces down to a few dozen pixels enlarges the
# whole photo, which on an 8000 px photo costs ~10 s and ~1.5 GB.
COARSE_SEARCH_SIDE = 2048
# A fit in the detector's box is refitted this many times in the box of its own landmarks, so it lands
# where tracking (each frame fitted in the previous frame's landmark box) settles: on a still video the
# first frame otherwise jumped 3 px (1.2 % of the face) from the tracked frames, and a still driver moved
# the face. The photo's landmarks are settled the same way, so a photo that is a driver's frame matches
# it (settling the driver alone moved the pose reference off that frame: AKD +0.003 on a talking video).
SETTLE_FITS = 4
COARSE_FACE_FRACTION = 1 / 8
# How often a tracked face's landmarks are refitted in a fresh detection's box (frames).
REDETECT_EVERY = 30


def detect_photo_landmarks(backend: LandmarkBackend, image: np.ndarray, face_index: int = 0,
                           min_face_px: float = 32, path: str | Path | None = None) -> np.ndarray:
    """(68, 2) float32 landmarks of face ``face_index`` (0 = largest) in a photo.

    Raises NoFaceError (with ``path`` in its message) when there is no face, fewer faces than
    ``face_index + 1``, or the chosen face is smaller than ``min_face_px`` pixels.
    """
    if face_index < 0:
        raise UsageError(f"face index must be >= 0, got {face_index}")
    faces = _largest_faces(backend, image, face_index + 1)
    if not faces:
        raise NoFaceError("no face found", path)
    if face_index >= len(faces):
        count = len(faces)
        raise NoFaceError(f"face {face_index} not found; the photo has {count} face"
                          f"{'' if count == 1 else 's'}", path)
    face = faces[face_index]
    side = max(face.width, face.height)
    if side < min_face_px:
        raise NoFaceError(f"face is too small ({side:.0f}px; at least {min_face_px:.0f}px is needed)", path)
    return settled_landmarks(backend, image, face.box)


def _largest_faces(backend: LandmarkBackend, image: np.ndarray, wanted: int) -> list[FaceDetection]:
    """Faces largest first: at least the ``wanted`` largest ones, or all of them."""
    longest = max(image.shape[:2])
    if longest > COARSE_SEARCH_SIDE:
        coarse_min = longest * COARSE_FACE_FRACTION
        # Only faces well above the coarse limit are kept: each of those is found at this scale,
        # so they are exactly the photo's largest faces, in order.
        faces = [face for face in backend.detect_faces(image, min_face_px=coarse_min)
                 if max(face.width, face.height) >= 1.25 * coarse_min]
        if len(faces) >= wanted:
            return faces
    return backend.detect_faces(image)


def _center_size(points: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (lo + hi) / 2, float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))


def settled_landmarks(backend: LandmarkBackend, image: np.ndarray, box: Box) -> np.ndarray:
    """(68, 2) float32 landmarks fitted in a detector's ``box``, then refitted in the box of their own
    landmarks (``SETTLE_FITS``) as long as they stay within half the drift tolerance of the first fit (a fit
    that keeps moving is drift): where tracking settles, so a photo, the first frame of a video and its
    tracked frames agree on a still face."""
    anchored = points = np.asarray(backend.landmarks(image, box), dtype=np.float32)
    size = _center_size(anchored)[1]
    for _ in range(SETTLE_FITS):
        refit = np.asarray(backend.landmarks(image, backend.box_from_landmarks(points)), dtype=np.float32)
        if float(np.linalg.norm(refit - anchored, axis=1).mean()) / size > MAX_DRIFT / 2:
            break
        points = refit
    return points


def plausible_step(points: np.ndarray, previous: np.ndarray, frame_size: tuple[int, int]) -> bool:
    """Whether ``points`` can follow ``previous`` one frame later: no jump, no sudden change of
    size, centre inside the frame. A failing fit means tracking is lost."""
    if not np.isfinite(points).all():
        return False
    center, size = _center_size(points)
    prev_center, prev_size = _center_size(previous)
    ratio = size / prev_size
    if not 1 / MAX_SIZE_CHANGE <= ratio <= MAX_SIZE_CHANGE:
        return False
    if np.linalg.norm(center - prev_center) > MAX_CENTER_JUMP * prev_size:
        return False
    width, height = frame_size
    return bool(0 <= center[0] < width and 0 <= center[1] < height)


class FaceTracker:
    """Follows one face through consecutive frames.

    The box for each frame comes from the previous frame's landmarks. A detector pass over a
    small window around that box (a few ms) confirms the face is still there, so frames without
    a face are reported as missing; every ``redetect_every`` frames the landmarks are fitted in
    that detection's box instead, so the box cannot drift. When the face is lost (no detection
    near it, or an implausible jump), the whole frame is searched and the face overlapping the
    last tracked one most is taken, so the same person is followed among several; other faces
    are taken only once the tracked one has been gone for ``redetect_every`` frames.
    """

    def __init__(self, backend: LandmarkBackend, redetect_every: int = REDETECT_EVERY):
        if redetect_every < 1:
            raise UsageError(f"redetect_every must be >= 1, got {redetect_every}")
        self.backend = backend
        self.redetect_every = redetect_every
        self.previous: np.ndarray | None = None
        self.last_seen: np.ndarray | None = None
        self.unseen_for = 0
        self.since_detection = 0
        self.full_detections = 0

    def update(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks in ``frame`` (68, 2), or None when the face is not in it."""
        height, width = frame.shape[:2]
        points = self._follow(frame, (width, height)) if self.previous is not None else None
        if points is None:
            points = self._search(frame)
        self.previous = points
        if points is not None:
            self.last_seen, self.unseen_for = points, 0
        else:
            self.unseen_for += 1
        return points

    def _fit(self, frame: np.ndarray, box: Box) -> np.ndarray:
        return np.asarray(self.backend.landmarks(frame, box), dtype=np.float32)

    def _settled_fit(self, frame: np.ndarray, box: Box) -> np.ndarray:
        return settled_landmarks(self.backend, frame, box)

    def _follow(self, frame: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray | None:
        assert self.previous is not None
        box = self.backend.box_from_landmarks(self.previous)
        match = _best_overlap(self.backend.detect_faces_near(frame, box), box, MIN_MATCH_IOU)
        if match is None:
            return None
        refresh = self.since_detection + 1 >= self.redetect_every
        points = self._settled_fit(frame, match.box) if refresh else self._fit(frame, box)
        if not refresh:
            anchored = self._fit(frame, match.box)
            drift = float(np.linalg.norm(points - anchored, axis=1).mean()) / _center_size(anchored)[1]
            if drift > MAX_DRIFT or not plausible_step(points, self.previous, frame_size):
                # The previous frame's box misled the fit (drift, fast motion): take the detection's.
                points, refresh = anchored, True
        if not plausible_step(points, self.previous, frame_size):
            return None
        self.since_detection = 0 if refresh else self.since_detection + 1
        return points

    def _search(self, frame: np.ndarray) -> np.ndarray | None:
        self.full_detections += 1
        faces = self.backend.detect_faces(frame)
        if not faces:
            return None
        face = faces[0]
        if self.last_seen is not None:
            same = _best_overlap(faces, self.backend.box_from_landmarks(self.last_seen), 1e-6)
            if same is None and self.unseen_for < self.redetect_every:
                # Someone else is in view: wait a while for the tracked person to come back
                # before following the largest face (a camera cut, or the person left).
                return None
            face = same or face
        self.since_detection = 0
        return self._settled_fit(frame, face.box)


def _best_overlap(faces: list[FaceDetection], box: Box, min_iou: float) -> FaceDetection | None:
    best, best_iou = None, min_iou
    for face in faces:
        iou = box_iou(face.box, box)
        if iou >= best_iou:
            best, best_iou = face, iou
    return best


def track_video(backend: LandmarkBackend, frames: Iterable[np.ndarray], fps: float,
                frame_size: tuple[int, int] | None = None, redetect_every: int = REDETECT_EVERY,
                progress: Callable[[int], None] | None = None,
                path: str | Path | None = None) -> LandmarkTrack:
    """Landmarks of every frame, gaps filled (see :func:`fill_gaps`); ``valid`` marks the frames
    where the face was found. The frame count is kept. ``frame_size`` (width, height) defaults
    to the first frame's; ``progress(1)`` is called after each frame.

    Raises NoFaceError when no frame has a face.
    """
    tracker = FaceTracker(backend, redetect_every)
    points, valid = [], []
    missing = np.zeros((NUM_LANDMARKS, 2), np.float32)
    for frame in frames:
        if frame_size is None:
            frame_size = (frame.shape[1], frame.shape[0])
        found = tracker.update(frame)
        points.append(missing if found is None else found)
        valid.append(found is not None)
        if progress is not None:
            progress(1)
    logger.info("tracked %d frames: face in %d, %d full-frame detections",
                len(points), sum(valid), tracker.full_detections)
    stacked = np.stack(points) if points else np.zeros((0, NUM_LANDMARKS, 2), np.float32)
    track = LandmarkTrack(stacked, np.array(valid, dtype=bool), fps, frame_size or (1, 1))
    return fill_gaps(track, path=path)


def fill_gaps(track: LandmarkTrack, path: str | Path | None = None) -> LandmarkTrack:
    """Points of invalid frames interpolated linearly between the nearest valid frames, and held
    from the first/last valid frame at the ends. Valid frames and the mask are unchanged.

    Raises NoFaceError when the track has frames but none is valid.
    """
    count = len(track)
    if count == 0 or track.valid.all():
        return track.replace_points(track.points.copy())
    known = np.flatnonzero(track.valid)
    if known.size == 0:
        raise NoFaceError("no face in any frame", path)
    flat = track.points.reshape(count, -1).astype(np.float64)
    gaps = np.flatnonzero(~track.valid)
    # np.interp holds the end values outside the known range: the hold at both ends.
    filled = np.stack([np.interp(gaps, known, flat[known, j]) for j in range(flat.shape[1])], axis=1)
    points = track.points.copy()
    points[gaps] = filled.reshape(len(gaps), NUM_LANDMARKS, 2)
    return track.replace_points(points)
