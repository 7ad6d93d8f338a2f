"""Temporal smoothing of landmark tracks (and of any per-frame series, such as crop boxes).

A One-Euro filter (Casiez et al., CHI 2012) lowers its cut-off frequency when a value is still,
removing detector jitter, and raises it when the value moves fast, so speech and head motion
are not blurred. It runs forward and backward and the two passes are averaged: the forward
pass lags a motion exactly as much as the backward one leads it, so the result has no lag.
The ends are padded by point reflection, which continues a steady motion through them.
"""

from __future__ import annotations

import math

import numpy as np

from .base import LandmarkTrack
from .crop import face_size

# At strength 1: the cut-off (Hz) of a still value, and how much it rises per unit of speed
# (scales per second); speed is measured on a low-passed derivative (cut-off D_CUTOFF_HZ).
MIN_CUTOFF_HZ = 1.0
BETA = 16.0
D_CUTOFF_HZ = 4.0
# The reflected padding at each end, in seconds (several time constants of the filter).
PAD_SECONDS = 1.0


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


def _one_euro(values: np.ndarray, fps: float, min_cutoff: float, beta: float) -> np.ndarray:
    """Causal One-Euro filter over the first axis of (T, D) values."""
    out = np.empty_like(values)
    estimate = values[0].copy()
    speed = np.zeros_like(estimate)
    alpha_speed = _alpha(D_CUTOFF_HZ, fps)
    out[0] = estimate
    for t in range(1, values.shape[0]):
        speed += alpha_speed * ((values[t] - estimate) * fps - speed)
        alpha = _alpha(min_cutoff + beta * np.abs(speed), fps)
        estimate += alpha * (values[t] - estimate)
        out[t] = estimate
    return out


def smooth_series(values: np.ndarray, strength: float, fps: float = 30.0, scale: float = 1.0) -> np.ndarray:
    """Zero-lag adaptive smoothing of (T, ...) values over time; same shape and dtype.

    ``strength`` 0 returns the values unchanged; larger values smooth more (1 removes typical
    landmark jitter). ``scale`` is the values' natural size (a face's size in pixels for
    landmarks, the crop side for crops), so that "fast" means the same at every resolution.
    """
    if strength < 0 or not math.isfinite(strength):
        raise ValueError(f"smoothing strength must be >= 0, got {strength}")
    if fps <= 0 or scale <= 0:
        raise ValueError(f"fps and scale must be positive, got {fps} and {scale}")
    values = np.asarray(values)
    count = values.shape[0]
    if strength == 0 or count < 3:
        return values.copy()
    flat = values.reshape(count, -1).astype(np.float64) / scale
    pad = min(count - 1, max(1, int(round(PAD_SECONDS * fps))))
    head = 2 * flat[0] - flat[pad:0:-1]
    tail = 2 * flat[-1] - flat[-2:-pad - 2:-1]
    padded = np.concatenate([head, flat, tail])
    min_cutoff, beta = MIN_CUTOFF_HZ / strength, BETA / strength
    forward = _one_euro(padded, fps, min_cutoff, beta)
    backward = _one_euro(padded[::-1].copy(), fps, min_cutoff, beta)[::-1]
    smoothed = ((forward + backward) / 2)[pad:pad + count] * scale
    return smoothed.reshape(values.shape).astype(values.dtype if values.dtype.kind == "f" else np.float64)


def smooth_track(track: LandmarkTrack, strength: float = 1.0) -> LandmarkTrack:
    """The track with its points smoothed over time (:func:`smooth_series` at the track's fps,
    scaled by the median face size); mask, fps and frame size are kept."""
    if len(track) == 0 or strength == 0:
        return track.replace_points(track.points.copy())
    scale = float(np.median([face_size(points) for points in track.points]))
    return track.replace_points(smooth_series(track.points, strength, track.fps, scale))
