"""Typed errors. Each carries its exit code; the CLI prints ``str(error)`` as one line.

Exit codes (the README holds the same table):

====  =====================================================
0     success
1     internal error (a bug: please report it)
2     usage error (bad option, bad combination of options)
3     unreadable input (missing, corrupt or unsupported file)
4     no usable face (no face, face too small, no face in any driving frame)
5     weights unavailable (Hub unreachable, missing repo, corrupt or incompatible checkpoint)
6     partial batch failure (some people failed, the others were written)
7     output cannot be written (folder not writable, disk full)
8     training or fine-tuning diverged (NaN, exploding loss, one-colour frames)
130   interrupted (Ctrl-C); nothing partial is left behind
====  =====================================================
"""

from __future__ import annotations

from pathlib import Path


class AnimateFaceError(Exception):
    """Base class: an expected failure with a one-line message and an exit code."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UsageError(AnimateFaceError):
    exit_code = 2


class InputError(AnimateFaceError):
    """A file that cannot be read or is not what it should be."""

    exit_code = 3


class NoFaceError(AnimateFaceError):
    exit_code = 4


class WeightsError(AnimateFaceError):
    exit_code = 5


class BatchFailure(AnimateFaceError):
    exit_code = 6


class OutputError(AnimateFaceError):
    exit_code = 7


class DivergenceError(AnimateFaceError):
    """Training or fine-tuning diverged; training keeps its last good checkpoint."""

    exit_code = 8


class InterruptedRun(AnimateFaceError):
    exit_code = 130


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error",
    UsageError.exit_code: "usage error",
    InputError.exit_code: "unreadable input",
    NoFaceError.exit_code: "no usable face",
    WeightsError.exit_code: "weights unavailable",
    BatchFailure.exit_code: "partial batch failure",
    OutputError.exit_code: "output cannot be written",
    DivergenceError.exit_code: "training or fine-tuning diverged",
    InterruptedRun.exit_code: "interrupted",
}
