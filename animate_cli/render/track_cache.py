"""A disk cache of a driving video's landmark track (what ``track_video`` returns).

Tracking the sample driver's 185 frames takes about 2.5 s a run on a 2-core CPU (dlib; FAN is slower),
and users animate many photos with the same driving video. The track depends only on the video's
bytes, the landmark backend (``LandmarkBackend.cache_identity``: a backend without one is not cached),
the tracker's settings and the code that tracks. A hash of all of these names the file,
``<cache>/tracks/track-<hash>.npz`` in ``default_cache_dir()``, and is stored in it too; a file whose
key, arrays or frame count do not match the video is not used (it is tracked again and rewritten).
Smoothing is applied when the track is loaded, so it stays an option.

The cache only saves time: a folder that cannot be written or a file that cannot be read is logged at
info level and the video is tracked, as without it. The newest ``KEEP_TRACKS`` files by modification
time are kept (a file is touched when it is used).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tokenize
import zipfile
from pathlib import Path

import numpy as np

from ..io import disk_cache
from ..io.video import VideoInfo
from ..landmarks import base as base_module
from ..landmarks import tracking as tracking_module
from ..landmarks.base import NUM_LANDMARKS, LandmarkBackend, LandmarkTrack
from ..models.face_resnet import default_cache_dir

log = logging.getLogger(__name__)

# Bump when the stored arrays change meaning.
TRACK_FORMAT = 1
# About 0.5 kB a frame: a minute at 25 fps is under 1 MB.
KEEP_TRACKS = 32
# The modules a track is computed by, besides the backend's own: editing them makes new tracks.
TRACKING_MODULES = (tracking_module, base_module)


def track_key(video: Path, backend: LandmarkBackend, redetect_every: int) -> str | None:
    """The hash of everything the video's track is made from, or None when it is not cached: the
    backend has no identity, or the video or the tracking code cannot be read (only logged)."""
    try:
        identity = backend.cache_identity()
        if identity is None:
            return None
        digest = hashlib.sha256()
        header = {"format": TRACK_FORMAT, "backend": identity, "redetect_every": redetect_every}
        digest.update(json.dumps(header, sort_keys=True).encode())
        backend_module = sys.modules[type(backend).__module__]
        for module in (*TRACKING_MODULES, backend_module):
            digest.update(Path(module.__file__).read_bytes())
        # The whole file: about 0.08 s for 100 MB here, and the probe has just decoded all of it.
        video_digest = hashlib.sha256()
        with open(video, "rb") as stream:
            while chunk := stream.read(1 << 20):
                video_digest.update(chunk)
        digest.update(video_digest.digest())
    except (OSError, TypeError) as error:  # TypeError: a module without a source file
        log.info("not caching the landmarks of %s (%s)", video, getattr(error, "strerror", None) or error)
        return None
    return digest.hexdigest()


def track_path(key: str, cache_dir: str | Path | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "tracks" / f"track-{key}.npz"


def read_track(path: Path, key: str, video: VideoInfo) -> LandmarkTrack | None:
    """The cached track of ``video``, or None when there is none, it cannot be read, or it is not this
    video's (its key, arrays, frame count, fps or frame size differ)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = str(data["key"])
            points, valid = data["points"], data["valid"]
            fps, frame_size = float(data["fps"]), tuple(int(v) for v in data["frame_size"])
    except FileNotFoundError:
        return None
    # What np.load raises for a truncated, non-zip or damaged file (see LandmarkTrack.load).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError, SyntaxError,
            tokenize.TokenError) as error:
        log.info("cannot read the cached landmarks %s (%s: %s)", path, type(error).__name__, error)
        return None
    count = video.frame_count
    problem = ("another key" if stored_key != key
               else f"points {points.dtype} {points.shape}" if points.dtype != np.float32
               or points.shape != (count, NUM_LANDMARKS, 2)
               else f"valid {valid.dtype} {valid.shape}" if valid.dtype != bool or valid.shape != (count,)
               else "points that are not finite" if not np.isfinite(points).all()
               else f"{fps} fps, {frame_size}" if (fps, frame_size) != (video.fps, tuple(video.size))
               else None)
    if problem is not None:
        log.info("ignoring the cached landmarks %s: %s for %d frames", path, problem, count)
        return None
    disk_cache.touch(path)
    return LandmarkTrack(points, valid, fps, frame_size)


def store_track(path: Path, key: str, track: LandmarkTrack, keep: int = KEEP_TRACKS) -> None:
    """Write ``track`` to ``path`` atomically, then keep the newest ``keep`` tracks beside it; a cache
    that cannot be written is only logged."""
    def write(stream) -> None:
        np.savez(stream, points=track.points, valid=track.valid, fps=np.float64(track.fps),
                 frame_size=np.asarray(track.frame_size, dtype=np.int64), key=np.str_(key))

    disk_cache.store(path, write, "the driver's landmarks", keep, log)
