"""Where the mouth and the eyes are: part crops aligned to the face, and the masks of what to redraw.

A part crop is a square similarity crop of a face image: rotated with the line through the eyes
(so a tilted head gives the same crop), scaled by the face size (not by the part itself, which
changes with the expression: a crop that followed the lips would swim as the mouth opens), centred
on points that an opening mouth or a blink do not move (the mouth corners, the eye corners). The
left eye is mirrored, so one eye model sees every eye as a right eye.

Masks, in part-crop pixels: ``shape`` is the opening itself (inside the inner lips, inside the lids)
and ``hole`` the area the part model redraws: the mouth's opening and a thin rim of the lips' inner
edge; around an eye, an ellipse that covers the lids and the lash line.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..landmarks.crop import face_size
from ..landmarks.retarget import lid_gap
from ..render.warp import INNER_LIP_PAIRS, INNER_LIPS, LEFT_EYE, RIGHT_EYE

PARTS = ("mouth", "right_eye", "left_eye")
EYES = ("right_eye", "left_eye")
# Crop sides as fractions of the face size: the mouth crop holds the lips wide open with some
# skin around them; an eye crop holds the eye, its lids and the lower edge of the brow.
MOUTH_SIDE = 0.62
EYE_SIDE = 0.36
# The mouth crop's centre sits this fraction of the face size below the corners' midpoint (a
# mouth opens downwards).
MOUTH_DROP = 0.05
# The lips' inner edge redrawn with the opening, as a fraction of the crop's side.
MOUTH_RIM = 0.025
# The eye hole: an ellipse about the corners' midpoint, half as wide as the eye times this, and
# as tall as half the lid gap plus this fraction of the eye's width.
EYE_HOLE_WIDTH = 1.2
EYE_HOLE_MARGIN = 0.22

EYE_POINTS = {"right_eye": RIGHT_EYE, "left_eye": LEFT_EYE}
# Corners: the outer and inner corner of each eye, and the two mouth corners.
EYE_CORNERS = {"right_eye": (36, 39), "left_eye": (45, 42)}
MOUTH_CORNERS = (48, 54)


def _eye_axis_angle(points: np.ndarray) -> float:
    # Through the eye corners' midpoints: the lids move in a blink, the corners do not.
    axis = points[[42, 45]].mean(axis=0) - points[[36, 39]].mean(axis=0)
    return float(np.arctan2(axis[1], axis[0]))


def part_center(points: np.ndarray, part: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if part == "mouth":
        angle = _eye_axis_angle(points)
        down = np.array([-np.sin(angle), np.cos(angle)])
        middle = points[list(MOUTH_CORNERS)].mean(axis=0)
        return middle + down * MOUTH_DROP * face_size(points)
    if part in EYE_CORNERS:
        return points[list(EYE_CORNERS[part])].mean(axis=0)
    raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")


def part_matrix(points: np.ndarray, part: str, size: int) -> np.ndarray:
    """2x3 affine from image pixels to the part crop's pixels (``size`` px square)."""
    points = np.asarray(points, np.float64)
    side = (MOUTH_SIDE if part == "mouth" else EYE_SIDE) * face_size(points)
    scale = size / max(side, 1e-6)
    angle = _eye_axis_angle(points)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rotation = np.array([[cos, sin], [-sin, cos]])
    if part == "left_eye":
        rotation[0] *= -1.0        # mirrored: the left eye looks like a right one
    centre = part_center(points, part)
    half = (size - 1) / 2.0
    return np.hstack([rotation, (np.array([half, half]) - rotation @ centre)[:, None]])


def to_part(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def cut_part(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The part crop of ``image`` (uint8 (H, W, 3)) as uint8 (size, size, 3)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        # Shrinking more than 2x: average first, so the crop is not aliased.
        factor = scale * 1.5
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        to_small = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
        matrix = (np.vstack([matrix, [0, 0, 1]]) @ np.linalg.inv(to_small))[:2]
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _polygon_mask(polygon: np.ndarray, size: int) -> np.ndarray:
    """Coverage of each pixel by the polygon: filled at 4x and averaged down, so a closed mouth (a
    polygon of no area) covers next to nothing instead of a one-pixel line."""
    big = np.zeros((4 * size, 4 * size), np.uint8)
    corners = (np.asarray(polygon, np.float64) + 0.5) * 4 - 0.5
    cv2.fillPoly(big, [np.round(corners * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def part_masks(points: np.ndarray, part: str, size: int, matrix: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(shape, hole) float32 (size, size) masks in [0, 1] for a face's ``points`` (image pixels)."""
    matrix = part_matrix(points, part, size) if matrix is None else matrix
    if part == "mouth":
        shape = _polygon_mask(to_part(matrix, np.asarray(points)[list(INNER_LIPS)]), size)
        rim = max(1, int(round(MOUTH_RIM * size)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
        hole = cv2.dilate(shape, kernel)
    else:
        eye = to_part(matrix, np.asarray(points)[list(EYE_POINTS[part])])
        shape = _polygon_mask(eye, size)
        outer, inner = to_part(matrix, np.asarray(points)[list(EYE_CORNERS[part])])
        width = float(np.linalg.norm(inner - outer))
        gap = eye_openness(points, part) * width
        centre = (outer + inner) / 2.0
        angle = float(np.degrees(np.arctan2(inner[1] - outer[1], inner[0] - outer[0])))
        axes = (EYE_HOLE_WIDTH * width / 2.0, gap / 2.0 + EYE_HOLE_MARGIN * width)
        hole_u8 = np.zeros((size, size), np.uint8)
        cv2.ellipse(hole_u8, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                    (int(round(axes[0] * 16)), int(round(axes[1] * 16))), angle, 0, 360, 255, -1,
                    lineType=cv2.LINE_AA, shift=4)
        hole = np.maximum(hole_u8.astype(np.float32) / 255.0, shape)
    hole = cv2.GaussianBlur(hole, (0, 0), max(0.6, size / 96.0))
    return shape, np.clip(hole, 0.0, 1.0)


def eye_openness(points: np.ndarray, part: str) -> float:
    """Mean lid gap over the eye's width (about 0.3 open, under 0.1 closed)."""
    return float(lid_gap(points, EYE_POINTS[part][0]))


def closed_mouth(points: np.ndarray) -> np.ndarray:
    """The same face with the lips closed: the lower lip moved up by the lips' gap (jaw kept)."""
    points = np.asarray(points, np.float64).copy()
    eyes = points[36:48].mean(axis=0)
    mouth = points[48:68].mean(axis=0)
    down = (mouth - eyes) / max(float(np.linalg.norm(mouth - eyes)), 1e-6)
    gap = max(float(np.mean([(points[lo] - points[up]) @ down for up, lo in INNER_LIP_PAIRS])), 0.0)
    weights = {65: 1.0, 66: 1.0, 67: 1.0, 55: 0.9, 56: 0.9, 57: 0.9, 58: 0.9, 59: 0.9, 54: 0.3, 48: 0.3,
               64: 0.3, 60: 0.3}
    for index, weight in weights.items():
        points[index] -= weight * gap * down
    return points.astype(np.float32)
