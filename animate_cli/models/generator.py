"""Generator G(y, psi): a landmark image and AdaIN parameters psi = P e -> a frame."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import (AdaINParams, AdaptiveInstanceNorm, ResidualAdaIN, ResidualUp, SelfAttention, down_path,
                     sn_linear, spectral_norm)

# Initial blend weight of the generated image in warp guidance: the untrained model returns
# (almost) the warped photo, and training only has to learn the corrections.
INITIAL_MASK = 0.02


class Generator(nn.Module):
    """The paper's generator (section 3.1, supplementary):

    residual down blocks with instance norm (+ self-attention at ``down_attention_size``),
    ``bottleneck_blocks`` residual blocks with AdaIN, residual up blocks with AdaIN
    (+ self-attention at ``up_attention_size``), then AdaIN, ReLU, a 3x3 convolution and tanh.
    All AdaIN coefficients come from psi = P e, split in network order into (scale, bias) pairs.

    ``config.guidance == "warp"`` (an extension, not in the paper) also feeds the source photo
    warped to the target landmarks and blends ``mask * tanh(rgb) + (1 - mask) * warped``; with
    ``config.blend_region`` other than ``all`` the mask is multiplied by the target's blend region
    (``landmarks.regions``), an input like the warped image.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.warp = config.guidance == "warp"
        in_channels = 6 if self.warp else 3
        channels = config.channels
        self.down, _ = down_path(in_channels, channels, config.image_size, config.down_attention_size,
                                 config.attention, norm=True)
        bottom = channels[-1]
        self.bottleneck = nn.ModuleList(ResidualAdaIN(bottom) for _ in range(config.bottleneck_blocks))

        self.up = nn.ModuleList()
        size = config.bottleneck_size
        previous = bottom
        for width in list(reversed(channels))[1:] + [channels[0]]:
            self.up.append(ResidualUp(previous, width))
            size *= 2
            previous = width
            if config.attention and size == config.up_attention_size:
                self.up.append(SelfAttention(width))

        self.out_norm = AdaptiveInstanceNorm(previous)
        out_conv = nn.Conv2d(previous, 4 if self.warp else 3, 3, padding=1)
        if self.warp:
            # Mask logit starts as the constant logit(INITIAL_MASK), before spectral norm sees it.
            with torch.no_grad():
                out_conv.weight[3].zero_()
                out_conv.bias[3] = math.log(INITIAL_MASK / (1.0 - INITIAL_MASK))
        self.out_conv = spectral_norm(out_conv)

        self.adain_size = (sum(block.num_adain_params for block in self.bottleneck)
                           + sum(block.num_adain_params for block in self.up if isinstance(block, ResidualUp))
                           + self.out_norm.num_params)
        # The paper's projection matrix P: psi = P e.
        self.projection = sn_linear(config.embedding_dim, self.adain_size, bias=False)

    def project(self, embedding: torch.Tensor) -> torch.Tensor:
        """psi = P e: (N, embedding_dim) -> (N, adain_size)."""
        return self.projection(embedding)

    def forward_with_mask(self, landmark_images: torch.Tensor, psi: torch.Tensor,
                          warped: torch.Tensor | None = None, region: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like ``forward`` but also returns the blend mask (N, 1, H, W) in warp guidance
        (None otherwise)."""
        frame, mask, _ = self.forward_parts(landmark_images, psi, warped, region)
        return frame, mask

    def forward_parts(self, landmark_images: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor | None = None,
                      region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(frame, mask, generated): in warp guidance ``generated`` is the network's own image before
        blending, which training also compares with the target (its gradient through the blend is
        scaled by the mask, ~0.02 at the start, so it would otherwise learn ~50x slower); without
        guidance the mask is None and ``generated`` is the frame."""
        if not torch.jit.is_tracing() and (psi.dim() != 2 or psi.shape[1] != self.adain_size):
            raise ValueError(f"psi must have shape (N, {self.adain_size}), got {tuple(psi.shape)}")
        if self.warp:
            if warped is None:
                raise ValueError("this generator uses warp guidance: the warped source image is required")
            if self.config.uses_region and region is None:
                raise ValueError(f"this generator blends only in its {self.config.blend_region} region: "
                                 "the region of the target landmarks is required")
            h = torch.cat([landmark_images, warped], dim=1)
        else:
            h = landmark_images  # guidance "none" is the paper's generator: `warped` is ignored
        for block in self.down:
            h = block(h)
        params = AdaINParams(psi)
        for block in self.bottleneck:
            h = block(h, params)
        for block in self.up:
            h = block(h, params) if isinstance(block, ResidualUp) else block(h)
        h = self.out_conv(F.relu(self.out_norm(h, params.take(self.out_norm.num_params))))
        if not self.warp:
            frame = torch.tanh(h)
            return frame, None, frame
        mask = torch.sigmoid(h[:, 3:4])
        if self.config.uses_region:
            mask = mask * region
        generated = torch.tanh(h[:, :3])
        return mask * generated + (1.0 - mask) * warped, mask, generated

    def forward(self, landmark_images: torch.Tensor, psi: torch.Tensor,
                warped: torch.Tensor | None = None, region: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) landmark images in [-1, 1] and psi (N or 1, adain_size) -> frames in [-1, 1]
        (warp guidance: + warped sources (N, 3, H, W) [+ blend regions (N, 1, H, W) in [0, 1]])."""
        return self.forward_with_mask(landmark_images, psi, warped, region)[0]
