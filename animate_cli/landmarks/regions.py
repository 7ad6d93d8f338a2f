"""Where a warp-guided generator may paint over the warp (``ModelConfig.blend_region``).

Measured on the warp-guided lite model whose blend mask could go anywhere (feed-forward, T = 1;
docs/evaluation.md, the crop protocol): its blurry, mean-face image blended over the face's skin made identity worse
than the plain warp, while blended over the mouth and outside the face it helped. ``mouth_border``
therefore allows the mask only on the mouth (the outer lips, grown a little) and outside the
face (beyond the jaw, the brows and a forehead band above them), with soft edges; the skin,
nose and eyes stay the warp's, which keeps the person.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import NUM_LANDMARKS

# Sizes as fractions of the distance between the outer eye corners (36, 45).
MOUTH_GROW = 0.08       # the outer-lip polygon is dilated by this much
FOREHEAD_HEIGHT = 0.8   # the face hull reaches this far above the brows
EDGE_SOFTNESS = 0.04    # Gaussian sigma of the region's edges


def _eye_distance(points: np.ndarray) -> float:
    return float(max(np.linalg.norm(points[36] - points[45]), 1.0))


def mouth_border_region(points: np.ndarray, size: int) -> np.ndarray:
    """float32 (size, size) in [0, 1]: 1 on the mouth and outside the face, 0 on the skin."""
    points = np.asarray(points, np.float64)
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        raise ValueError(f"points must be finite with shape (68, 2), got {points.shape}")
    eyes = _eye_distance(points)
    region = np.zeros((size, size), np.float32)
    cv2.fillPoly(region, [np.round(points[48:60]).astype(np.int32)], 1.0)
    grow = max(1, int(round(MOUTH_GROW * eyes)))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    up = points[27] - points[8]  # chin to nose bridge
    up /= max(np.linalg.norm(up), 1e-6)
    forehead = points[17:27] + up * FOREHEAD_HEIGHT * eyes
    outline = np.concatenate([points[0:17], points[17:27], forehead])
    face = np.zeros_like(region)
    cv2.fillPoly(face, [cv2.convexHull(np.round(np.clip(outline, -4 * size, 5 * size)).astype(np.int32))], 1.0)
    region = np.maximum(region, 1.0 - face)
    # Blurring may overshoot 1 by a rounding error; the region multiplies a mask in [0, 1].
    return np.clip(cv2.GaussianBlur(region, (0, 0), max(1.0, EDGE_SOFTNESS * eyes)), 0.0, 1.0)


def blend_regions(points: np.ndarray, size: int, kind: str) -> np.ndarray:
    """float32 (N, 1, size, size) blend regions for (N, 68, 2) crop points (``kind`` as in
    ``ModelConfig.blend_region``; ``all`` is ones)."""
    points = np.asarray(points)
    if points.ndim != 3:
        raise ValueError(f"points must have shape (N, 68, 2), got {points.shape}")
    if kind == "all":
        return np.ones((len(points), 1, size, size), np.float32)
    if kind == "mouth_border":
        return np.stack([mouth_border_region(p, size) for p in points])[:, None]
    raise ValueError(f"unknown blend region {kind!r}")


def region_tensor(points: np.ndarray, size: int, kind: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """``blend_regions`` as a float32 tensor on ``device``."""
    return torch.from_numpy(blend_regions(points, size, kind)).to(device)
