"""Embedder E(x, y): a frame and its landmark image -> a person embedding vector."""

from __future__ import annotations

import torch

from .blocks import PooledEncoder


class Embedder(PooledEncoder):
    """E(x, y): the shared pooled trunk; its vector is the frame's embedding."""

    def forward(self, images: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames and landmark images in [-1, 1] -> (N, embedding_dim)."""
        return self.features_and_vector(images, landmark_images)[1]
