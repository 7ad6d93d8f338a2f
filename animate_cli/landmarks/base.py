"""Landmark data types, the backend interface, and the registration of backends by name.

A backend finds faces (boxes) and fits the 68 iBUG landmarks inside a given box. A backend module
registers its factory by name with :func:`register_backend` when it is imported; this module never
imports a backend (``registry`` finds them by name and builds one).
"""

from __future__ import annotations

import tokenize
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..errors import InputError

NUM_LANDMARKS = 68
TRACK_FORMAT_VERSION = 1

Box = tuple[float, float, float, float]


@dataclass
class LandmarkTrack:
    """Landmarks of every frame of a video.

    ``points`` (T, 68, 2) float32 pixel coordinates; ``valid`` (T,) bool, True where the face
    was detected and False where the points were filled in; ``fps``; ``frame_size`` (width, height).
    """

    points: np.ndarray
    valid: np.ndarray
    fps: float
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.valid = np.asarray(self.valid, dtype=bool)
        if self.points.ndim != 3 or self.points.shape[1:] != (NUM_LANDMARKS, 2):
            raise ValueError(f"points must have shape (T, 68, 2), got {self.points.shape}")
        if self.valid.shape != (self.points.shape[0],):
            raise ValueError(f"valid must have shape ({self.points.shape[0]},), got {self.valid.shape}")
        self.fps = float(self.fps)
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        width, height = (int(v) for v in self.frame_size)
        if width <= 0 or height <= 0:
            raise ValueError(f"frame_size must be positive (width, height), got {self.frame_size}")
        self.frame_size = (width, height)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def replace_points(self, points: np.ndarray) -> "LandmarkTrack":
        """The same track (mask, fps, size) with other points."""
        return LandmarkTrack(points, self.valid.copy(), self.fps, self.frame_size)

    def save(self, path: str | Path) -> None:
        """Write the track as an uncompressed ``.npz`` (no pickled objects)."""
        np.savez(path, points=self.points, valid=self.valid, fps=np.float64(self.fps),
                 frame_size=np.asarray(self.frame_size, dtype=np.int64),
                 format_version=np.int64(TRACK_FORMAT_VERSION))

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkTrack":
        """Read a track written by :meth:`save`; any problem is an :class:`InputError` on ``path``."""
        path = Path(path)
        if not path.is_file():
            raise InputError("landmark file not found", path=path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"points", "valid", "fps", "frame_size"} - set(data.files)
                if missing:
                    raise InputError(f"not a landmark track (missing {', '.join(sorted(missing))})",
                                     path=path)
                version = int(data["format_version"]) if "format_version" in data.files else 1
                if version > TRACK_FORMAT_VERSION:
                    raise InputError(f"landmark track format {version} is newer than this "
                                     f"version supports ({TRACK_FORMAT_VERSION})", path=path)
                points, valid = data["points"], data["valid"]
                fps, frame_size = float(data["fps"]), tuple(int(v) for v in data["frame_size"])
        # np.load raises these for truncated, non-zip or object-array files, and the last two for a
        # damaged .npy header (numpy parses it as a Python literal).
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError, SyntaxError,
                tokenize.TokenError) as error:
            raise InputError(f"unreadable landmark track ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'corrupt'})",
                             path=path) from error
        if len(frame_size) != 2:
            raise InputError(f"landmark track frame_size must be (width, height), got {frame_size}",
                             path=path)
        if points.dtype.kind not in "iuf":
            raise InputError(f"landmark track points must be numbers, not {points.dtype}", path=path)
        if not np.isfinite(points).all():
            raise InputError("landmark track contains NaN or infinite points", path=path)
        try:
            return cls(points, valid.astype(bool), fps, frame_size)
        except ValueError as error:
            raise InputError(f"invalid landmark track: {error}", path=path) from error


@dataclass(frozen=True)
class FaceDetection:
    """A detected face: ``box`` (x0, y0, x1, y1) in pixels and the detector's ``score``."""

    box: Box
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def sort_largest_first(detections: Sequence[FaceDetection]) -> list[FaceDetection]:
    """Largest box first; equal sizes by higher score."""
    return sorted(detections, key=lambda d: (-d.area, -d.score))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous uint8 (H, W, 3) view of a grey, RGB or RGBA uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be (H, W, 3), got {image.shape}")
    return np.ascontiguousarray(image)


class LandmarkBackend(ABC):
    """Finds faces and fits 68 landmarks in them. Images are uint8 RGB (H, W, 3)."""

    name: str = "base"
    # The box that :meth:`box_from_landmarks` derives: a square of ``box_scale`` x the
    # landmarks' extent, its centre ``box_shift`` x the extent below the landmarks' centre
    # (negative: above). Backends set these to mimic their own detector's boxes, so a box
    # taken from the previous frame's landmarks fits as a detection would.
    box_scale: float = 1.0
    box_shift: float = -0.1
    # Detections near a tracked face are searched at this face size (pixels), in a window
    # this many times the face box.
    near_face_px: float = 100.0
    near_window: float = 2.2

    @abstractmethod
    def detect_faces(self, image: np.ndarray, min_face_px: float | None = None) -> list[FaceDetection]:
        """All faces in ``image``, largest first. ``min_face_px`` is the smallest face side worth
        finding (None: the backend's default for the image size)."""

    @abstractmethod
    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """(68, 2) float32 landmarks of the face inside ``box`` (x0, y0, x1, y1)."""

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box]) -> np.ndarray:
        """(N, 68, 2) landmarks, one face box per image."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        if not images:
            return np.zeros((0, NUM_LANDMARKS, 2), np.float32)
        return np.stack([self.landmarks(image, box) for image, box in zip(images, boxes)])

    def box_from_landmarks(self, points: np.ndarray) -> Box:
        """A detector-like face box around (68, 2) landmarks."""
        lo, hi = points.min(axis=0), points.max(axis=0)
        extent = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
        cx, cy = (lo + hi) / 2
        cy = cy + self.box_shift * extent
        half = self.box_scale * extent / 2
        return (float(cx - half), float(cy - half), float(cx + half), float(cy + half))

    def detect_faces_near(self, image: np.ndarray, box: Box) -> list[FaceDetection]:
        """Faces in a window around ``box``, found at a fixed working size, so checking that a
        tracked face is still there costs a few milliseconds whatever the frame size."""
        side = max(box[2] - box[0], box[3] - box[1], 1.0)
        scale = self.near_face_px / side
        window = side * self.near_window
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = cx - window / 2, cy - window / 2
        out = int(round(window * scale))
        matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
        roi = cv2.warpAffine(as_rgb(image), matrix, (out, out),
                             flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        found = self.detect_faces_in_window(roi)
        return [FaceDetection((d.box[0] / scale + x0, d.box[1] / scale + y0,
                               d.box[2] / scale + x0, d.box[3] / scale + y0), d.score) for d in found]

    def detect_faces_in_window(self, window: np.ndarray) -> list[FaceDetection]:
        """Faces in a window cut by :meth:`detect_faces_near`, where the tracked face is about
        ``near_face_px`` wide (backends may search it more cheaply or leniently)."""
        return self.detect_faces(window, min_face_px=0.8 * self.near_face_px)

    def cache_identity(self) -> dict[str, Any] | None:
        """What makes this backend's landmarks what they are (its name, model files, settings, library
        versions), JSON-serialisable, so a video's track can be cached under it; None (the default)
        when there is no stable identity, and its tracks are not cached."""
        return None


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name`` (for ``cache_identity``), None when unknown."""
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


BackendFactory = Callable[[str], LandmarkBackend]
_FACTORIES: dict[str, BackendFactory] = {}


def registered_factories() -> dict[str, BackendFactory]:
    """The factories registered so far, by name (``registry`` imports the built-in ones first)."""
    return dict(_FACTORIES)


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: register ``factory(device) -> LandmarkBackend`` under ``name``."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"landmark backend {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorate
