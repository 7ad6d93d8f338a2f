"""Landmark backends by name: :func:`create_backend` builds one, :func:`available_backends` lists them.

The built-in backends are found through a name-to-module map and imported on first use, so neither
this module nor ``base`` imports them at load time; a backend module registers its factory with
``base.register_backend`` when it is imported (another package can register more the same way).
The special name ``"auto"`` picks face-alignment's FAN when its weights are already on disk and
dlib otherwise.
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import ModuleType

from ..errors import UsageError
from .base import LandmarkBackend, registered_factories

logger = logging.getLogger(__name__)

# Their heavy dependencies (dlib, torch, face_alignment) load only when a backend is built.
BUILTIN_BACKENDS = {"dlib": ".dlib_backend", "fan": ".fan_backend"}


def _builtin_module(name: str) -> ModuleType:
    return import_module(BUILTIN_BACKENDS[name], __package__)


def available_backends() -> list[str]:
    """Backend names, ``"auto"`` first (the built-in ones and any registered by other code)."""
    for name in BUILTIN_BACKENDS:
        _builtin_module(name)
    return ["auto", *sorted(registered_factories())]


def _auto_backend_name(device: str) -> str:
    fan = _builtin_module("fan")
    if fan.fan_weights_cached():
        name, reason = "fan", "face-alignment weights found in the torch hub cache"
    elif device.startswith("cuda") and fan.fan_weights_downloadable():
        # On a GPU FAN is fast and worth a one-time download; on a CPU dlib is several times
        # faster at similar accuracy on frontal faces, so a CPU run never waits on a download.
        name, reason = "fan", "face-alignment weights will be downloaded once"
    else:
        name, reason = "dlib", "face-alignment weights not downloaded; using dlib"
    logger.info("landmark backend: %s (%s)", name, reason)
    return name


def create_backend(name: str = "auto", device: str = "cpu") -> LandmarkBackend:
    """Build the backend called ``name`` on ``device``; the built backend's ``name`` says which
    one ``"auto"`` chose."""
    if name == "auto":
        name = _auto_backend_name(device)
    if name in BUILTIN_BACKENDS:
        _builtin_module(name)
    factories = registered_factories()
    if name not in factories:
        raise UsageError(f"unknown landmark backend {name!r}; choose one of: "
                         f"{', '.join(available_backends())}")
    return factories[name](device)
