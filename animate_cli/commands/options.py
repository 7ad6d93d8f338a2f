"""Choices shared by the commands' options (the main command, batch, train, eval)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Landmarks(str, Enum):
    auto = "auto"
    fan = "fan"
    dlib = "dlib"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Mouth(str, Enum):
    """How the inside of an opening mouth is drawn (``jobs.MOUTHS``)."""
    teeth = "teeth"
    learned = "learned"
    synthetic = "synthetic"


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on internal errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")]
