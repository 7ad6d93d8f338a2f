"""Facial landmarks: backends behind one interface, tracking, smoothing, retargeting, drawing.

The backends' heavy dependencies (dlib, torch, face_alignment) load only when a backend is
built; ``DlibBackend`` and ``FanBackend`` themselves are imported on first access.
"""

from __future__ import annotations

from typing import Any

from .base import NUM_LANDMARKS, FaceDetection, LandmarkBackend, LandmarkTrack, box_iou, register_backend
from .drawing import LANDMARK_GROUPS, draw_landmark_image, draw_landmark_images
from .registry import available_backends, create_backend
from .retarget import eye_opening, mouth_opening, retarget_absolute, retarget_relative
from .smoothing import smooth_series, smooth_track
from .tracking import FaceTracker, detect_photo_landmarks, fill_gaps, track_video

__all__ = [
    "NUM_LANDMARKS", "FaceDetection", "LandmarkBackend", "LandmarkTrack", "available_backends",
    "box_iou", "create_backend", "register_backend", "LANDMARK_GROUPS", "draw_landmark_image",
    "draw_landmark_images", "eye_opening", "mouth_opening", "retarget_absolute", "retarget_relative",
    "smooth_series", "smooth_track", "FaceTracker", "detect_photo_landmarks", "fill_gaps",
    "track_video", "DlibBackend", "FanBackend",
]

_LAZY = {"DlibBackend": ".dlib_backend", "FanBackend": ".fan_backend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
