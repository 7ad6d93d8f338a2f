"""The networks of Zakharov et al. 2019: embedder E, generator G, projection discriminator D,
and the checkpoint bundle that holds all three."""

from .bundle import TalkingHeadModel, read_checkpoint_config
from .discriminator import Discriminator, DiscriminatorOutput
from .embedder import Embedder
from .generator import Generator

__all__ = [
    "Discriminator",
    "DiscriminatorOutput",
    "Embedder",
    "Generator",
    "TalkingHeadModel",
    "read_checkpoint_config",
]
