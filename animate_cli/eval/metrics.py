"""The metrics every evaluation protocol shares (crops, full frame, part crops): image, identity,
perceptual and landmark measures, numpy in and out.

- ``ssim``: structural similarity (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01,
  K2 0.03, data range 255), the mean over colour channels.
- ``psnr``: peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images (the JSON
  writes non-finite numbers as null).
- ``FaceIdentity``: dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1``,
  shipped by face-recognition-models), aligned with 68 given landmarks. ``csim`` is the cosine
  similarity of two descriptors (the paper's CSIM, with dlib's network instead of theirs);
  ``identity_distance`` the euclidean distance (dlib's rule: < 0.6 is the same person). dlib's
  descriptors all lie in a narrow cone, so the cosine of two different people is still about
  0.8-0.88; the same person gives about 0.95-1.
- ``landmark_error``: mean distance between the driving landmarks and the landmarks detected on
  the output, over the driving face's outer-eye-corner distance.
- ``mouth_correlation``: Pearson correlation over time of the mouth opening (inner-lip gap over
  eye-corner distance) of the driver and of the output; NaN when either series is constant or
  has fewer than 3 frames.
- FID is not computed: it needs the standard Inception weights (pt_inception-2015-12-05), which
  cannot be downloaded here, and a few hundred frames to mean anything.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import WeightsError
from ..landmarks import LandmarkBackend, detect_photo_landmarks, mouth_opening
from ..landmarks.base import as_rgb, box_iou

RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# dlib's documented decision rule for its descriptors: below this distance, the same person.
IDENTITY_THRESHOLD = 0.6
# A detection on an output counts as the rendered face when it overlaps the driving face's box this much.
MIN_FACE_IOU = 0.3


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got {a.shape}")
    return a, b


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two uint8 images (grey or the mean over channels), in [-1, 1]."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b)
    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=255.0,
                                       channel_axis=2 if a.ndim == 3 else None, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def laplacian_variance(image: np.ndarray) -> float:
    """Fine detail of an image (skin, hair, grain, glasses rims): the variance of the Laplacian of its grey
    image (uint8 RGB or grey)."""
    image = np.asarray(image)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=3).var())


def at_size(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at (width, height), to be compared pixel for pixel with an image of that size. An output that
    lost an odd last column or row to the encoder's even size (``render.pipeline.fit_frame``) gets it back as a
    copy of its neighbour, so no pixel moves: resizing 576 px to 577 blurred the whole frame and halved its
    detail. Any other size is resized."""
    height, width = frame.shape[:2]
    if 0 <= size[0] - width <= 1 and 0 <= size[1] - height <= 1:
        if (width, height) == size:
            return frame
        return cv2.copyMakeBorder(frame, 0, size[1] - height, 0, size[0] - width, cv2.BORDER_REPLICATE)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if width > size[0] else cv2.INTER_LINEAR)


def detail_ratio(output: np.ndarray, reference: np.ndarray) -> float:
    """How much of the reference's fine detail the output keeps (``laplacian_variance`` of the output
    over the reference's, same region): 1 = as sharp, below 1 softer; NaN for a flat reference."""
    ref = laplacian_variance(reference)
    return laplacian_variance(output) / ref if ref > 1e-6 else math.nan


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB; ``inf`` when they are identical."""
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def recognition_model_path() -> Path:
    """dlib's face recognition network inside the installed face_recognition_models package."""
    from ..landmarks.dlib_backend import face_model_path

    return face_model_path(RECOGNITION_MODEL_FILE, "identity metrics")


@functools.lru_cache(maxsize=None)
def _load_recognition_model(path: str) -> Any:
    try:
        import dlib
    except ImportError as error:
        raise WeightsError("identity metrics need dlib (pip install dlib-bin)") from error
    try:
        return dlib.face_recognition_model_v1(path)
    except RuntimeError as error:
        raise WeightsError(f"cannot load dlib's face recognition model: {error}", path) from error


class FaceIdentity:
    """128-d dlib face descriptors of faces whose 68 landmarks are known."""

    def __init__(self, model_path: str | Path | None = None):
        import dlib

        self._dlib = dlib
        self._model = _load_recognition_model(str(model_path or recognition_model_path()))

    def descriptor(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The descriptor (128,) of the face with landmarks ``points`` (68, 2) in ``image``.

        dlib aligns the face to its 150 px chip from the landmarks, so a face the detector would
        miss (a poor generated one) still gets a descriptor, and a poor one a distant descriptor.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (68, 2) or not np.isfinite(points).all():
            raise ValueError(f"expected finite (68, 2) landmarks, got {points.shape}")
        lo, hi = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0))
        rect = self._dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        parts = self._dlib.points([self._dlib.point(int(round(x)), int(round(y))) for x, y in points])
        shape = self._dlib.full_object_detection(rect, parts)
        return np.asarray(self._model.compute_face_descriptor(as_rgb(image), shape), dtype=np.float64)

    def photo_descriptor(self, image: np.ndarray, backend: LandmarkBackend) -> np.ndarray:
        """The descriptor of the largest face in a photo (raises NoFaceError when there is none)."""
        return self.descriptor(image, detect_photo_landmarks(backend, image))


class FacePerceptual:
    """A face-trained perceptual distance, the offline stand-in for LPIPS: the perceptual term of
    :class:`~animate_cli.losses.FaceLoss` (dlib's face ResNet, relative L1 over four feature
    depths of the aligned chip) between an output and the real frame, cut at the real frame's
    landmarks. 0 for identical images; about 0.3 for a 3 px shift, 0.6 and up for another person."""

    def __init__(self, network: torch.nn.Module | None = None):
        from ..losses import FaceLoss

        self.loss = FaceLoss(network) if network is not None else FaceLoss.installed()

    def distances(self, images: np.ndarray, real: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(N,) distances of uint8 images (N, H, W, 3) from ``real`` (same shape), landmarks (N, 68, 2)."""
        def tensor(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

        # One image at a time: the loss averages over its batch, and full frames can be large.
        with torch.no_grad():
            return np.asarray([float(self.loss.terms(tensor(images[i:i + 1]), tensor(real[i:i + 1]),
                                                     torch.from_numpy(np.asarray(points[i:i + 1], np.float32)))[0])
                               for i in range(len(images))])


def csim(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two face descriptors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two face descriptors (dlib: < 0.6 means the same person)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def landmark_error(driving_points: np.ndarray, detected_points: np.ndarray) -> np.ndarray | float:
    """Mean point distance over the driving face's outer-eye-corner distance, for (..., 68, 2)."""
    driving = np.asarray(driving_points, np.float64)
    detected = np.asarray(detected_points, np.float64)
    if driving.shape != detected.shape or driving.shape[-2:] != (68, 2):
        raise ValueError(f"expected matching (..., 68, 2) landmarks, got {driving.shape} and {detected.shape}")
    interocular = np.maximum(np.linalg.norm(driving[..., 36, :] - driving[..., 45, :], axis=-1), 1e-6)
    error = np.linalg.norm(driving - detected, axis=-1).mean(axis=-1) / interocular
    return float(error) if error.ndim == 0 else error


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than 3 pairs or a constant series (undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two series of equal length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    # Relative test: float noise on a constant series must not pass for a signal.
    if denominator <= 1e-12 * max(1.0, float(np.abs(x).max()), float(np.abs(y).max())):
        return math.nan
    return float(np.clip(x @ y / denominator, -1.0, 1.0))


def mouth_correlation(driver_points: np.ndarray, output_points: np.ndarray) -> float:
    """Correlation over time of the mouth opening of the driver and of the output, (T, 68, 2) each."""
    return pearson(mouth_opening(driver_points), mouth_opening(output_points))


def detect_near(backend: LandmarkBackend, image: np.ndarray, expected_points: np.ndarray) -> np.ndarray | None:
    """Landmarks of the face the backend finds where ``expected_points`` say it should be, else None."""
    expected = backend.box_from_landmarks(expected_points)
    best, best_iou = None, MIN_FACE_IOU
    for face in backend.detect_faces(image):
        iou = box_iou(face.box, expected)
        if iou >= best_iou:
            best, best_iou = face, iou
    return None if best is None else np.asarray(backend.landmarks(image, best.box), np.float32)
