"""The square face crop shared by inference, training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The crop spans this many times the landmarks' extent, so hair, ears and chin fit and
# the head can move a little inside it.
DEFAULT_CROP_SCALE = 1.8
# The crop centre sits this fraction of the face size above the landmarks' centre
# (landmarks start at the brows; the forehead is above them).
DEFAULT_CENTER_SHIFT = 0.12


@dataclass(frozen=True)
class FaceCrop:
    """An axis-aligned square crop of size ``size`` taken from a full image.

    ``center`` (x, y) and ``side`` are in the full image's pixels. The crop maps image
    point p to crop point ``(p - (center - side / 2)) * size / side``.
    """

    center: tuple[float, float]
    side: float
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine matrix from full-image coordinates to crop coordinates."""
        s = self.scale
        cx, cy = self.center
        return np.array([[s, 0.0, (self.side / 2 - cx) * s],
                         [0.0, s, (self.side / 2 - cy) * s]], dtype=np.float64)

    @property
    def inverse_matrix(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        m = self.matrix
        return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)

    def points_to_image(self, points: np.ndarray) -> np.ndarray:
        m = self.inverse_matrix
        return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)

    def crop_image(self, image: np.ndarray) -> np.ndarray:
        """The crop as a (size, size, 3) image; outside the photo is filled by edge replication."""
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        return cv2.warpAffine(image, self.matrix, (self.size, self.size), flags=interp,
                              borderMode=cv2.BORDER_REPLICATE)

    def with_size(self, size: int) -> "FaceCrop":
        return FaceCrop(self.center, self.side, size)


def face_size(points: np.ndarray) -> float:
    """A pose-stable size of a face: the larger side of its landmarks' bounding box."""
    extent = points.max(axis=0) - points.min(axis=0)
    return float(max(extent[0], extent[1], 1.0))


def crop_from_landmarks(points: np.ndarray, size: int, scale: float = DEFAULT_CROP_SCALE,
                        center_shift: float = DEFAULT_CENTER_SHIFT) -> FaceCrop:
    """The crop for a (68, 2) landmark set: centred on the face, ``scale`` x its size."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = face_size(points)
    cx, cy = (lo + hi) / 2
    return FaceCrop(center=(float(cx), float(cy - center_shift * extent)), side=extent * scale, size=size)
