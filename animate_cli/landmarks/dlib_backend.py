"""dlib: HOG frontal face detector + the 68-point shape predictor of face_recognition_models.

Both install from the package index with their models (dlib-bin, face-recognition-models), so
this backend works offline on a fresh machine. It is CPU only and fast: about 2 ms per landmark
fit; detection cost grows with the image size (see :meth:`DlibBackend.detect_faces`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import WeightsError
from .base import (NUM_LANDMARKS, Box, FaceDetection, LandmarkBackend, as_rgb, package_version, register_backend,
                   sort_largest_first)

logger = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# dlib's HOG detector scans an 80x80 window: faces smaller than that need an enlarged image.
HOG_WINDOW_PX = 80.0


def face_model_path(filename: str, purpose: str) -> Path:
    """A model file inside the installed face_recognition_models package (``purpose`` names who needs it)."""
    # find_spec locates the package without running its __init__ (which imports pkg_resources,
    # deprecated and absent from recent setuptools).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise WeightsError(f"{purpose} need the face-recognition-models package "
                           "(pip install face-recognition-models)")
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise WeightsError(f"{filename} is missing from face_recognition_models; "
                           f"reinstall face-recognition-models", path=path)
    return path


def shape_predictor_path() -> Path:
    """The 68-point model file inside the installed face_recognition_models package."""
    return face_model_path(PREDICTOR_FILE, "dlib landmarks")


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as error:
        raise WeightsError("the dlib landmark backend needs dlib (pip install dlib-bin)") from error
    return dlib


@functools.lru_cache(maxsize=None)
def _load_predictor(path: str) -> Any:
    # Loading the 100 MB model takes ~0.5 s: once per process.
    dlib = _import_dlib()
    try:
        return dlib.shape_predictor(path)
    except RuntimeError as error:
        raise WeightsError(f"cannot load the dlib shape predictor: {error}", path=path) from error


@functools.lru_cache(maxsize=None)
def _load_detector() -> Any:
    return _import_dlib().get_frontal_face_detector()


def default_min_face_px(width: int, height: int) -> float:
    """The smallest face looked for by default: 8% of the longer side, between 20 and 64 px.

    On a 512 px image this enlarges ~2x (dlib's "upsample once"), on a 256 px image ~4x
    (upsample twice), and on large photos it caps the work while still finding 64 px faces.
    """
    return float(np.clip(0.08 * max(width, height), 20.0, 64.0))


class DlibBackend(LandmarkBackend):
    """dlib HOG detection + 68-point regression-tree landmarks (CPU)."""

    name = "dlib"
    # Measured on 20 portraits: the HOG box is about as wide as the landmarks and its centre
    # ~0.1 face sizes above theirs.
    box_scale = 1.0
    box_shift = -0.1

    def __init__(self, threshold: float = 0.0, near_threshold: float = -0.3):
        # ``near_threshold`` is lower: next to a face tracked in the previous frame, a weak
        # detection (head turning away, motion blur) is still the same face.
        self.threshold = threshold
        self.near_threshold = near_threshold
        self.detector = _load_detector()
        self.predictor = _load_predictor(str(shape_predictor_path()))
        self._dlib = _import_dlib()

    def _detect(self, image: np.ndarray, scale: float, threshold: float) -> list[FaceDetection]:
        height, width = image.shape[:2]
        if abs(scale - 1.0) > 1e-3:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        else:
            scale = 1.0
        rects, scores, _ = self.detector.run(image, 0, threshold)
        # dlib rectangles are inclusive: right/bottom + 1 is the box's far edge.
        return sort_largest_first(
            FaceDetection((r.left() / scale, r.top() / scale, (r.right() + 1) / scale,
                           (r.bottom() + 1) / scale), float(s))
            for r, s in zip(rects, scores))

    def detect_faces(self, image: np.ndarray, min_face_px: float | None = None) -> list[FaceDetection]:
        """Faces of at least ``min_face_px`` (default :func:`default_min_face_px`): the image is
        resized so such a face fills the HOG window (enlarged for small faces, shrunk for big ones)."""
        image = as_rgb(image)
        height, width = image.shape[:2]
        if min_face_px is None:
            min_face_px = default_min_face_px(width, height)
        return self._detect(image, HOG_WINDOW_PX / max(min_face_px, 1.0), self.threshold)

    def detect_faces_in_window(self, window: np.ndarray) -> list[FaceDetection]:
        return self._detect(window, 1.0, self.near_threshold)

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(as_rgb(image), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32).reshape(NUM_LANDMARKS, 2)

    def cache_identity(self) -> dict[str, Any] | None:
        # A subclass may compute other landmarks under the same settings.
        if type(self) is not DlibBackend:
            return None
        models = package_version("face-recognition-models")
        if models is None:
            return None
        predictor = shape_predictor_path()
        return {"backend": self.name, "dlib": getattr(self._dlib, "__version__", "unknown"), "models": models,
                "predictor": [predictor.name, predictor.stat().st_size],
                "threshold": self.threshold, "near_threshold": self.near_threshold}


@register_backend("dlib")
def _create_dlib(device: str) -> LandmarkBackend:
    # dlib-bin is built without CUDA: the device is ignored.
    return DlibBackend()
