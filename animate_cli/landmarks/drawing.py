"""The generator's input: 68 landmarks drawn as coloured polylines on a black image (the paper's
"landmark image", one colour per facial part)."""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from .base import NUM_LANDMARKS

# Polylines are drawn with 4 fractional bits, so points keep 1/16 px precision.
_SHIFT = 4


class LandmarkGroup(NamedTuple):
    name: str
    start: int
    stop: int  # exclusive
    closed: bool
    color: tuple[int, int, int]  # RGB


LANDMARK_GROUPS: tuple[LandmarkGroup, ...] = (
    LandmarkGroup("jaw", 0, 17, False, (255, 255, 255)),
    LandmarkGroup("right_brow", 17, 22, False, (255, 0, 0)),
    LandmarkGroup("left_brow", 22, 27, False, (0, 255, 0)),
    LandmarkGroup("nose_bridge", 27, 31, False, (0, 0, 255)),
    LandmarkGroup("lower_nose", 31, 36, False, (255, 255, 0)),
    LandmarkGroup("right_eye", 36, 42, True, (0, 255, 255)),
    LandmarkGroup("left_eye", 42, 48, True, (255, 0, 255)),
    LandmarkGroup("outer_lips", 48, 60, True, (255, 128, 0)),
    LandmarkGroup("inner_lips", 60, 68, True, (128, 0, 255)),
)


def line_thickness(size: int) -> int:
    """1 px at 64, 2 at 128, 3 at 256, 4 at 512: lines keep their look as the image grows."""
    return max(1, int(round(math.log2(max(size, 1) / 32))))


def draw_landmark_image(points: np.ndarray, size: int, thickness: int | None = None) -> np.ndarray:
    """A (size, size, 3) uint8 RGB landmark image from (68, 2) points in crop coordinates."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"points must have shape (68, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmark points contain NaN or infinite values")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    thickness = line_thickness(size) if thickness is None else thickness
    image = np.zeros((size, size, 3), np.uint8)
    # Far-off points would overflow cv2's fixed-point coordinates; they are off-image anyway.
    fixed = np.round(np.clip(points, -4 * size, 5 * size) * (1 << _SHIFT)).astype(np.int32)
    for group in LANDMARK_GROUPS:
        cv2.polylines(image, [fixed[group.start:group.stop]], group.closed, group.color,
                      thickness, cv2.LINE_AA, _SHIFT)
    return image


def draw_landmark_images(points: np.ndarray, size: int, thickness: int | None = None) -> np.ndarray:
    """(N, size, size, 3) landmark images from (N, 68, 2) points."""
    points = np.asarray(points)
    if points.ndim != 3:
        raise ValueError(f"points must have shape (N, 68, 2), got {points.shape}")
    images = np.zeros((points.shape[0], size, size, 3), np.uint8)
    for i, frame_points in enumerate(points):
        images[i] = draw_landmark_image(frame_points, size, thickness)
    return images
