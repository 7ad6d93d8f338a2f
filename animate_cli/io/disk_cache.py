"""What the on-disk caches share (``render.onnx_cache``, ``render.track_cache``): files named
``<prefix>-<key><suffix>`` in one folder, written atomically, the newest few kept by modification time
(a file is touched when it is used), and a cache that cannot be written only logged."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .atomic import temp_path_for

log = logging.getLogger(__name__)

# A temporary file older than this was left by a process that died while writing.
STALE_TEMPORARY_S = 3600.0


def touch(path: Path) -> None:
    """Mark a cached file as used now: the newest files are the ones kept."""
    with contextlib.suppress(OSError):
        os.utime(path)


def store(path: Path, write: Callable[[BinaryIO], None], what: str, keep: int, logger: logging.Logger = log) -> None:
    """Write ``path`` atomically through ``write`` (given the open temporary file), then keep the newest
    ``keep`` files of its kind beside it; ``what`` names the contents in ``logger``'s messages. A cache that
    cannot be written is only logged."""
    temporary = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except OSError as error:
        logger.info("cannot cache %s in %s (%s)", what, path.parent, error.strerror or error)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return
    logger.debug("cached %s in %s", what, path)
    prune(path, keep)


def prune(path: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` files of ``path``'s kind (``<prefix>-*<suffix>`` beside it, the prefix
    being its name up to the first '-'), and their temporary files that a process died writing. Another process
    may be removing the same files: what is gone already is skipped."""
    folder, prefix, suffix = path.parent, path.name.split("-", 1)[0], path.suffix

    def modified(candidate: Path) -> float | None:
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
        return None

    files = sorted(((mtime, candidate) for candidate in folder.glob(f"{prefix}-*{suffix}")
                    if (mtime := modified(candidate)) is not None), reverse=True)
    now = time.time()
    stale = [candidate for candidate in folder.glob(f".{prefix}-*.partial-*{suffix}")
             if (mtime := modified(candidate)) is not None and mtime < now - STALE_TEMPORARY_S]
    for candidate in [candidate for _, candidate in files[keep:]] + stale:
        try:
            candidate.unlink(missing_ok=True)
        except OSError as error:
            log.debug("cannot remove the old cached file %s (%s)", candidate, error.strerror or error)
