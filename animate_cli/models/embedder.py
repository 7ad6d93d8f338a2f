"""Embedder E(x, y): a frame and its landmark image -> a person embedding vector."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .blocks import ResidualDown, down_path


class Embedder(nn.Module):
    """Residual down blocks (+ self-attention) on the 6-channel concatenation of frame and
    landmark image, an extra residual block to ``embedding_dim`` channels, global sum pooling
    and ReLU (paper, section 3.1)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.blocks, _ = down_path(6, config.channels, config.image_size, config.down_attention_size,
                                   config.attention, norm=False)
        self.final = ResidualDown(config.channels[-1], config.embedding_dim, downsample=False)

    def forward(self, images: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames and landmark images in [-1, 1] -> (N, embedding_dim)."""
        h = torch.cat([images, landmark_images], dim=1)
        for block in self.blocks:
            h = block(h)
        h = self.final(h)
        return torch.relu(h.sum(dim=(2, 3)))
