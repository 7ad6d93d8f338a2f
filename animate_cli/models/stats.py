"""Sizes and costs of the networks, per preset."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import PRESETS, ModelConfig
from .discriminator import Discriminator
from .embedder import Embedder
from .generator import Generator


def count_parameters(module: nn.Module) -> int:
    """Number of learnable scalars (spectral norm's u/v buffers are not counted)."""
    return sum(parameter.numel() for parameter in module.parameters())


def generator_gflops(config: ModelConfig) -> float:
    """GFLOP to generate one frame (batch 1, psi given), a multiply-add counted as 2 FLOPs.

    Measured with ``FlopCounterMode``, which counts convolutions and matrix products (the
    attention included) and ignores element-wise work such as normalisation and activations.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        generator = Generator(config).eval()
    size = config.image_size
    landmark_image = torch.zeros(1, 3, size, size)
    psi = torch.zeros(1, generator.adain_size)
    warped = torch.zeros(1, 3, size, size) if config.guidance == "warp" else None
    region = torch.ones(1, 1, size, size) if config.uses_region else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator(landmark_image, psi, warped, region)
    return counter.get_total_flops() / 1e9


def preset_table() -> list[dict]:
    """One row per preset: parameters of E, G (with P), D and G's GFLOP per frame."""
    rows = []
    for name, config in PRESETS.items():
        with torch.random.fork_rng():
            embedder, generator, discriminator = Embedder(config), Generator(config), Discriminator(config)
        rows.append({
            "preset": name,
            "image_size": config.image_size,
            "embedder_params": count_parameters(embedder),
            "generator_params": count_parameters(generator),
            "discriminator_params": count_parameters(discriminator),
            "generator_gflops": round(generator_gflops(config), 3),
        })
    return rows
