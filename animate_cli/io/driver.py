"""The cheap check of a driver, made before any slow work (no torch, no landmark backend)."""

from __future__ import annotations

from pathlib import Path

from ..landmarks.base import LandmarkTrack
from .video import VideoInfo, probe_video


def check_driver(path: str | Path) -> VideoInfo | LandmarkTrack:
    """A video opens and has a video stream with frames (its description is returned), or a saved
    landmark track loads (the track is returned); InputError naming the file otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return LandmarkTrack.load(path)
    return probe_video(path)
