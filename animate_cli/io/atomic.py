"""Atomic file output: write to a temporary file beside the target, rename on success.

A failed or interrupted run (an exception, Ctrl-C, a full disk) never leaves a half-written file at
the target path, and never leaves the temporary file behind either.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from types import TracebackType

from animate_cli.errors import OutputError

logger = logging.getLogger(__name__)

# errno values that mean "no room left": a full disk or an exhausted quota.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_MESSAGE = "disk full while writing"


def is_disk_full(error: OSError) -> bool:
    """Whether an OSError means the disk (or the user's quota) is full."""
    return error.errno in _DISK_FULL_ERRNOS


def temp_path_for(path: Path, tag: str = "partial") -> Path:
    """The hidden temporary path used while ``path`` is being written.

    It lives in the same folder (so the final rename never crosses file systems), keeps the
    suffix (so ffmpeg and Pillow infer the same format) and carries the process id (so two runs
    writing the same target do not share a temporary file).
    """
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}{path.suffix}")


def check_output_path(path: Path, overwrite: bool) -> None:
    """Raise OutputError when ``path`` cannot be an output: a folder, exists, or no folder to hold it."""
    if path.is_dir():
        raise OutputError("is a folder, expected a file path", path)
    if path.exists() and not overwrite:
        raise OutputError("exists; pass --overwrite to replace it", path)
    parent = path.parent
    if not parent.exists():
        raise OutputError("folder does not exist", parent)
    if not parent.is_dir():
        raise OutputError("is not a folder", parent)


def ensure_folder(path: str | Path, what: str = "folder") -> Path:
    """Create the output folder ``path`` (and its parents) unless it exists; OutputError when it cannot.

    ``what`` names it in the message ("the output folder", "the dataset folder").
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError("exists and is not a folder", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {what} ({error.strerror})", path) from None
    return path


class AtomicOutput:
    """Context manager behind :func:`atomic_output`; ``commit`` and ``discard`` are public for
    writers (such as the video writer) that manage the temporary file themselves."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        self.temp_path = temp_path_for(self.path)
        self._open = False

    def __enter__(self) -> Path:
        check_output_path(self.path, self.overwrite)
        # Create the temporary file now: this claims the name and proves the folder is writable
        # before any expensive work starts (os.access is unreliable as root and on network mounts).
        try:
            fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except PermissionError as error:
            raise OutputError("folder is not writable", self.path.parent) from error
        except OSError as error:
            if is_disk_full(error):
                raise OutputError(DISK_FULL_MESSAGE, self.path) from error
            raise OutputError(f"cannot create a file here ({error.strerror})", self.path.parent) from error
        os.close(fd)
        self._open = True
        return self.temp_path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is None:
            self.commit()
            return False
        self.discard()
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise OutputError(DISK_FULL_MESSAGE, self.path) from exc
        return False  # re-raise the original error (KeyboardInterrupt included)

    def commit(self) -> None:
        """Move the finished temporary file onto the target path."""
        if not self._open:
            return
        try:
            if self.path.exists() and not self.overwrite:
                # Another process created it while we were writing.
                raise OutputError("exists; pass --overwrite to replace it", self.path)
            os.replace(self.temp_path, self.path)
        except OSError as error:
            self.discard()
            if is_disk_full(error):
                raise OutputError(DISK_FULL_MESSAGE, self.path) from error
            raise OutputError(f"cannot write the file ({error.strerror})", self.path) from error
        except OutputError:
            self.discard()
            raise
        self._open = False

    def discard(self) -> None:
        """Delete the temporary file (idempotent)."""
        try:
            self.temp_path.unlink(missing_ok=True)
        except OSError as error:  # a leftover hidden file is not worth masking the real error
            logger.warning("could not delete the temporary file %s: %s", self.temp_path, error)
        self._open = False


def atomic_output(path: str | Path, overwrite: bool = False) -> AtomicOutput:
    """Write ``path`` atomically.

    ``with atomic_output(path, overwrite) as temp:`` yields a temporary path in the same folder
    (named ``.{stem}.partial-{pid}{suffix}``). When the block ends without error, the temporary
    file is renamed onto ``path``; on any error or KeyboardInterrupt it is deleted and the error
    re-raised (a full disk becomes OutputError("disk full while writing")).

    Raises OutputError before the block runs when ``path`` exists and ``overwrite`` is false, or
    when its folder is missing or not writable.
    """
    return AtomicOutput(path, overwrite)
