"""Which device ``--device auto`` means, answered without importing torch when it can be.

The checks made before any slow work (the driver, the photos and their faces) need the landmark
backend's device; importing torch only to learn that a machine has no GPU costs about a second.
"""

from __future__ import annotations

import glob
import sys

from .errors import UsageError


def may_have_cuda() -> bool:
    """False only when a CUDA GPU is certainly absent: on Linux, no NVIDIA device node exists."""
    if sys.platform.startswith("linux"):
        return bool(glob.glob("/dev/nvidia[0-9]*"))
    return True


def resolve_device_name(name: str) -> str:
    """'auto' -> 'cuda' when a CUDA GPU is present, else 'cpu'; 'cuda' without one is a usage error."""
    if name == "auto" and not may_have_cuda():
        return "cpu"
    if name in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if name == "cuda":
            raise UsageError("--device cuda was asked for, but no CUDA GPU is available")
        return "cpu"
    return name
