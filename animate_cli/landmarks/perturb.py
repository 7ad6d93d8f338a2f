"""Made-up landmark motion for a face: used where a single photo must stand in for a video
(meta-training's single-photo episodes, ``train/dataset.py``, and single-photo fine-tuning's round
trips, ``finetune.py``).

Ranges: the mouth opens (lower lip and chin down by up to ``MOUTH_OPEN_MAX`` of the face size) or
closes (the lip gap shrunk); the eyelids lower (a blink with probability ``BLINK_PROBABILITY``, else
up to 30 %); the whole face rotates (+-``HEAD_ROTATION_DEG``), scales (+-``HEAD_SCALE``) and shifts
(+-``HEAD_SHIFT`` of the face size).
"""

from __future__ import annotations

import cv2
import numpy as np

from .crop import face_size

MOUTH_OPEN_MAX = 0.15
BLINK_PROBABILITY = 0.3
HEAD_ROTATION_DEG = 8.0
HEAD_SCALE = 0.05
HEAD_SHIFT = 0.03


def rotation_about(center: np.ndarray, degrees: float, scale: float, shift: np.ndarray) -> np.ndarray:
    """A 2x3 affine matrix: rotate by ``degrees`` and scale about ``center``, then shift."""
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), degrees, scale)
    matrix[:, 2] += shift
    return matrix


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points moved by a 2x3 affine matrix, as float32."""
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def perturb_landmarks(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random plausible new landmarks for a face: mouth opened or closed, eyelids lowered, and a
    small rotation, scale and shift of the whole face (ranges above)."""
    points = points.astype(np.float64).copy()
    size = face_size(points)
    eyes = points[36:48].mean(axis=0)
    mouth = points[48:68].mean(axis=0)
    down = (mouth - eyes) / max(np.linalg.norm(mouth - eyes), 1e-6)

    # Mouth: positive opens (lower lip and chin move down), negative closes the lip gap.
    amount = rng.uniform(-0.6, 1.0)
    if amount >= 0:
        shift = amount * MOUTH_OPEN_MAX * size
    else:
        gap = np.mean([(points[lower] - points[upper]) @ down for upper, lower in ((61, 67), (62, 66), (63, 65))])
        shift = amount * max(gap, 0.0)
    weights = {65: 1.0, 66: 1.0, 67: 1.0, 55: 1.0, 56: 1.0, 57: 1.0, 58: 1.0, 59: 1.0, 54: 0.3, 48: 0.3,
               64: 0.3, 60: 0.3, 7: 0.7, 8: 0.7, 9: 0.7, 6: 0.5, 10: 0.5, 5: 0.3, 11: 0.3, 4: 0.1, 12: 0.1}
    for index, weight in weights.items():
        # Closing moves only the lips; the chin follows an opening mouth, not a closing one.
        if shift < 0 and index < 17:
            continue
        points[index] += weight * shift * down

    # Eyelids: upper lid points towards the lower lid.
    closing = rng.uniform(0.5, 1.0) if rng.random() < BLINK_PROBABILITY else rng.uniform(0.0, 0.3)
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        points[upper] += closing * (points[lower] - points[upper]) * 0.9

    matrix = rotation_about(points.mean(axis=0), rng.uniform(-HEAD_ROTATION_DEG, HEAD_ROTATION_DEG),
                             1.0 + rng.uniform(-HEAD_SCALE, HEAD_SCALE),
                             rng.uniform(-HEAD_SHIFT, HEAD_SHIFT, size=2) * size)
    return apply_affine(matrix, points)
