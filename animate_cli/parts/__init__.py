"""Learned mouth interiors and eyes (see ``model``), painted into rendered crops (``paint``)."""

from .model import PARTS_WEIGHTS_NAME, LearnedParts, PartsConfig, load_parts
from .paint import PartsPainter

__all__ = ["PARTS_WEIGHTS_NAME", "LearnedParts", "PartsConfig", "PartsPainter", "load_parts"]
