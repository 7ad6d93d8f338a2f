"""Projection discriminator D(x, y, i) = V(x, y) . (W_i + w0) + b (paper, section 3.1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import ModelConfig
from .blocks import PooledEncoder


class DiscriminatorOutput(NamedTuple):
    """Realism score, per-block activations (for feature matching) and V's output."""

    score: torch.Tensor
    features: list[torch.Tensor]
    v: torch.Tensor


class Discriminator(PooledEncoder):
    """V: the pooled trunk it shares with the embedder; then the projection onto W_i + w0."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        emb = config.embedding_dim
        # Small random init: W_i is pulled towards the embedder's e_i by the match loss.
        self.W = nn.Parameter(torch.randn(emb, config.num_videos) * 0.02)
        self.w0 = nn.Parameter(torch.randn(emb) * 0.02)
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor, landmark_images: torch.Tensor,
                video_index: torch.Tensor | None = None, w: torch.Tensor | None = None) -> DiscriminatorOutput:
        """Score frames against landmarks.

        ``video_index`` (N,) selects W_i + w0 (meta-learning); an explicit ``w`` (emb,) replaces
        it (fine-tuning, w' = w0 + e_new); with neither, w0 alone is used.
        """
        if video_index is not None and w is not None:
            raise ValueError("give video_index or w, not both")
        features, v = self.features_and_vector(images, landmark_images)
        if video_index is not None:
            projection = self.W[:, video_index].t() + self.w0  # (N, emb)
        elif w is not None:
            if w.shape != self.w0.shape:
                raise ValueError(f"w must have shape {tuple(self.w0.shape)}, got {tuple(w.shape)}")
            projection = w.unsqueeze(0)
        else:
            projection = self.w0.unsqueeze(0)
        score = (v * projection).sum(dim=1) + self.b
        return DiscriminatorOutput(score=score, features=features, v=v)
