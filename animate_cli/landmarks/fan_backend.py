"""face-alignment's FAN (Bulat & Tzimiropoulos 2017): 68 landmarks from heatmaps, on CPU or GPU.

The network and its face detector are built on first use. Their weights come from
face-alignment's download links into the torch hub cache; ``"auto"`` uses this backend only when
they are already there (see :func:`fan_weights_cached`), so an offline machine never tries.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError, WeightsError
from .base import (NUM_LANDMARKS, Box, FaceDetection, LandmarkBackend, as_rgb, package_version, register_backend,
                   sort_largest_first)

logger = logging.getLogger(__name__)

# File names that face-alignment 1.4/1.5 store in <torch hub dir>/checkpoints: the basenames of
# its download URLs (face_alignment.api.models_urls and each detector's models_urls).
FAN_2D_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
DETECTOR_WEIGHTS: dict[str, tuple[str, ...]] = {
    "sfd": ("s3fd-619a316812.pth",),
    "blazeface": ("blazeface.pth", "anchors.npy"),
}
# Preferred first: S3FD is the more accurate detector; BlazeFace is the small, fast one.
DETECTORS = ("sfd", "blazeface")

# The longest image side the detector sees; larger frames are shrunk first (S3FD's memory and
# time grow with the pixel count) and faces smaller than this many pixels are not looked for.
MAX_DETECT_SIDE = 1280
MIN_DETECT_FACE_PX = 16


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch when it is not loaded yet."""
    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir())
    torch_home = os.getenv("TORCH_HOME",
                           os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub"


def _cached(name: str, hub_dir: Path) -> bool:
    path = hub_dir / "checkpoints" / name
    # A zero-byte file is what an interrupted download leaves behind.
    return path.is_file() and path.stat().st_size > 0


def cached_fan_detector(hub_dir: str | Path | None = None) -> str | None:
    """The face detector whose FAN + detector weights are all in the cache, or None."""
    hub = Path(hub_dir) if hub_dir is not None else torch_hub_dir()
    if not _cached(FAN_2D_WEIGHTS, hub):
        return None
    for detector in DETECTORS:
        if all(_cached(name, hub) for name in DETECTOR_WEIGHTS[detector]):
            return detector
    return None


def fan_weights_cached(hub_dir: str | Path | None = None) -> bool:
    """True when FAN can be built without a download (checks files only; never downloads)."""
    return cached_fan_detector(hub_dir) is not None


def fan_weights_downloadable(timeout: float = 2.0) -> bool:
    """A quick TCP check that face-alignment's download host answers (no download happens here)."""
    import socket
    from urllib.parse import urlparse

    try:
        from face_alignment.api import models_urls
    except ImportError:
        return False
    url = urlparse(models_urls["2DFAN-4"])
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


class FanBackend(LandmarkBackend):
    """face-alignment's 2D FAN with its S3FD or BlazeFace detector.

    ``model`` may be a ready ``face_alignment.FaceAlignment`` (tests pass one with an
    untrained network); otherwise it is built on first use.
    """

    name = "fan"

    def __init__(self, device: str = "cpu", face_detector: str | None = None,
                 batch_size: int = 8, model: Any = None):
        detector = face_detector or cached_fan_detector() or DETECTORS[0]
        if detector not in DETECTOR_WEIGHTS:
            raise UsageError(f"unknown face-alignment detector {detector!r}; choose one of: "
                             f"{', '.join(DETECTORS)}")
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        self.device = device
        self.face_detector = detector
        self.batch_size = batch_size
        self._model = model
        self._model_given = model is not None

    @property
    def model(self) -> Any:
        """The face_alignment.FaceAlignment instance (built on first access)."""
        if self._model is None:
            self._model = self._build()
        return self._model

    def _build(self) -> Any:
        try:
            import face_alignment
        except ImportError as error:
            raise WeightsError("the fan landmark backend needs the face-alignment package "
                               "(pip install face-alignment)") from error
        kwargs: dict[str, Any] = {"device": self.device, "face_detector": self.face_detector,
                                  "flip_input": True}
        params = inspect.signature(face_alignment.FaceAlignment.__init__).parameters
        # face-alignment 1.5 compiles by default: minutes on a CPU, and a compile failure can
        # surface at the first call, outside its own fallback. Eager mode is fast enough.
        if "compile" in params:
            kwargs["compile"] = False
        if "max_batch_size" in params:
            kwargs["max_batch_size"] = self.batch_size
        logger.info("building face-alignment FAN (detector %s) on %s", self.face_detector, self.device)
        try:
            return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        except ValueError as error:
            raise UsageError(f"face-alignment cannot run on device {self.device!r}") from error
        # OSError covers urllib's URLError/HTTPError (offline, link gone); the others are what
        # torch.load raises for a truncated or corrupt cached file.
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise WeightsError(
                f"face-alignment weights unavailable ({type(error).__name__}: {error}); they are "
                f"downloaded once into {torch_hub_dir() / 'checkpoints'}. Connect once, or use "
                f"the dlib landmark backend") from error

    def cache_identity(self) -> dict[str, Any] | None:
        # A model passed in (tests' untrained one) or a subclass is not the downloaded FAN.
        if self._model_given or type(self) is not FanBackend:
            return None
        versions = {package: package_version(package) for package in ("face-alignment", "torch")}
        if None in versions.values():
            return None
        # FAN's and S3FD's file names carry a hash of their contents; BlazeFace's do not: sizes too.
        checkpoints = torch_hub_dir() / "checkpoints"
        try:
            weights = [[name, (checkpoints / name).stat().st_size]
                       for name in (FAN_2D_WEIGHTS, *DETECTOR_WEIGHTS[self.face_detector])]
        except OSError:
            return None
        return {"backend": self.name, **versions, "device": self.device, "detector": self.face_detector,
                "weights": weights, "flip_input": True}

    def detect_faces(self, image: np.ndarray, min_face_px: float | None = None) -> list[FaceDetection]:
        image = as_rgb(image)
        height, width = image.shape[:2]
        scale = min(1.0, MAX_DETECT_SIDE / max(height, width))
        if min_face_px is not None and min_face_px > 0:
            scale = max(scale, min(4.0, MIN_DETECT_FACE_PX / min_face_px))
        if abs(scale - 1.0) > 1e-3:
            import cv2

            image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        else:
            scale = 1.0
        found = self.model.face_detector.detect_from_image(image.copy())
        detections = []
        for row in found:
            row = np.asarray(row, dtype=np.float64)
            if row.shape[0] < 4:
                continue
            box = tuple(float(v) / scale for v in row[:4])
            detections.append(FaceDetection(box, float(row[4]) if row.shape[0] > 4 else 1.0))
        return sort_largest_first(detections)

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        result = self.model.get_landmarks_from_image(
            as_rgb(image), detected_faces=[np.asarray([*box, 1.0], dtype=np.float64)])
        return np.asarray(result[0], dtype=np.float32).reshape(NUM_LANDMARKS, 2)

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box]) -> np.ndarray:
        """One network pass per ``batch_size`` faces across images (face-alignment's own batch
        call still runs the network once per image)."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        if not images:
            return np.zeros((0, NUM_LANDMARKS, 2), np.float32)
        import torch
        from face_alignment import utils as fa_utils

        model = self.model
        offset = getattr(fa_utils, "CENTER_Y_OFFSET", 0.12)
        reference_scale = model.face_detector.reference_scale
        centers, scales, crops = [], [], []
        # Same centre, scale and crop as FaceAlignment.get_landmarks_from_image.
        for image, box in zip(images, boxes):
            x0, y0, x1, y1 = (float(v) for v in box)
            center = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0])
            center[1] -= (y1 - y0) * offset
            scale = (x1 - x0 + y1 - y0) / reference_scale
            crop = fa_utils.crop(as_rgb(image), center, scale)
            centers.append(center)
            scales.append(scale)
            crops.append(crop.transpose((2, 0, 1)).astype(np.float32) / 255.0)
        inputs = torch.from_numpy(np.stack(crops))
        heatmaps = []
        with torch.no_grad():
            for start in range(0, len(crops), self.batch_size):
                chunk = inputs[start:start + self.batch_size].to(model.device, dtype=model.dtype)
                out = _last(model.face_alignment_net(chunk)).detach()
                if model.flip_input:
                    flipped = _last(model.face_alignment_net(fa_utils.flip(chunk))).detach()
                    out = out + fa_utils.flip(flipped, is_label=True)
                heatmaps.append(out.to(device="cpu", dtype=torch.float32).numpy())
        heatmap_batch = np.concatenate(heatmaps)
        points = np.empty((len(crops), NUM_LANDMARKS, 2), np.float32)
        for i, (center, scale) in enumerate(zip(centers, scales)):
            _, in_image, _ = fa_utils.get_preds_fromhm(heatmap_batch[i:i + 1], center, scale)
            points[i] = np.asarray(in_image, dtype=np.float32).reshape(NUM_LANDMARKS, 2)
        return points


def _last(output: Any) -> Any:
    # Stacked hourglasses return one heatmap per stack; the last is the prediction.
    return output[-1] if isinstance(output, list) else output


@register_backend("fan")
def _create_fan(device: str) -> LandmarkBackend:
    return FanBackend(device=device)
