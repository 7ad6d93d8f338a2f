"""Building blocks shared by the embedder, generator and discriminator.

Every convolution and linear layer is wrapped in spectral normalisation (the paper puts it on
all layers of all networks). It is a ``torch.nn.utils.parametrize`` parametrization, like
``torch.nn.utils.parametrizations.spectral_norm``, with the same state-dict layout
(``...parametrizations.weight.original``, ``...parametrizations.weight.0._u`` / ``._v``: plain,
unaliased tensors that round-trip through safetensors). It is our own small class because
torch's computes sigma with ``torch.vdot``, which the ONNX exporter cannot translate; ours uses
a product and a sum. In eval mode ``u`` and ``v`` are not updated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..config import ModelConfig


class SpectralNorm(nn.Module):
    """Parametrization W -> W / sigma(W), sigma estimated by one power iteration per training
    forward (Miyato et al. 2018)."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        matrix = weight.detach().flatten(1)
        height, width = matrix.shape
        u = F.normalize(weight.new_empty(height).normal_(0, 1), dim=0, eps=eps)
        v = F.normalize(weight.new_empty(width).normal_(0, 1), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        # Converge the initial estimate so the first forward already divides by sigma.
        self._power_method(matrix, 15)

    @torch.no_grad()
    def _power_method(self, matrix: torch.Tensor, iterations: int) -> None:
        for _ in range(iterations):
            # In place, so that the buffers stay the ones registered (and saved).
            self._u.copy_(F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(matrix.t(), self._u), dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        if self.training:
            self._power_method(matrix.detach(), self.n_power_iterations)
        # Clones: autograd must not see the in-place updates of the next training step.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = (u * torch.mv(matrix, v)).sum()
        return weight / sigma


def spectral_norm(module: nn.Module) -> nn.Module:
    """Register spectral norm on ``module.weight`` and return the module."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight))
    return module


def sn_conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded convolution with spectral norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return spectral_norm(conv)


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A linear layer with spectral norm."""
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))


def has_spectral_norm(module: nn.Module) -> bool:
    """True when ``module.weight`` is spectrally normalised."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, SpectralNorm) for p in module.parametrizations.weight)


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrization by its current normalised weight, in place.

    For inference or export only: the folded network computes the same function without the
    per-forward normalisation, but can no longer be trained as the paper prescribes.
    """
    for child in module.modules():
        if parametrize.is_parametrized(child, "weight"):
            parametrize.remove_parametrizations(child, "weight", leave_parametrized=True)
    return module


class AdaptiveInstanceNorm(nn.Module):
    """Instance norm whose per-channel scale and bias come from psi (AdaIN).

    The paper writes psi = P e and uses its entries directly as the AdaIN coefficients, so the
    scale is taken as given (no ``1 +`` offset).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.eps = eps

    @property
    def num_params(self) -> int:
        return 2 * self.channels

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``params`` is (N or 1, 2 * channels): scales then biases."""
        scale, bias = params[:, : self.channels], params[:, self.channels :]
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        normalised = (x - mean) * torch.rsqrt(var + self.eps)
        return normalised * scale[:, :, None, None] + bias[:, :, None, None]


class AdaINParams:
    """Hands out consecutive slices of psi to the AdaIN layers in network order."""

    def __init__(self, psi: torch.Tensor):
        self.psi = psi
        self.offset = 0

    def take(self, count: int) -> torch.Tensor:
        chunk = self.psi[:, self.offset : self.offset + count]
        self.offset += count
        return chunk


class SelfAttention(nn.Module):
    """SAGAN self-attention with a learned residual gate that starts at zero."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = sn_conv(channels, inner, 1, bias=False)
        self.key = sn_conv(channels, inner, 1, bias=False)
        self.value = sn_conv(channels, max(channels // 2, 1), 1, bias=False)
        self.out = sn_conv(self.value.out_channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # Keys and values are pooled 2x as in BigGAN/SAGAN, which quarters the attention cost
        # (attention sits at image_size / 8 or / 4, so the map is always at least 2x2).
        pooled = F.max_pool2d(x, 2)
        query = self.query(x).flatten(2)  # (N, c', HW)
        key = self.key(pooled).flatten(2)  # (N, c', hw)
        value = self.value(pooled).flatten(2)  # (N, cv, hw)
        attention = torch.softmax(torch.bmm(query.transpose(1, 2), key), dim=-1)  # (N, HW, hw)
        attended = torch.bmm(value, attention.transpose(1, 2)).view(n, -1, h, w)
        return x + self.gamma * self.out(attended)


class ResidualDown(nn.Module):
    """BigGAN discriminator-style residual block that halves the resolution.

    ``norm=True`` adds instance norm before each activation (the generator's down part).
    ``first=True`` skips the leading ReLU, because the block then sees the input image.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = False, first: bool = False,
                 downsample: bool = True):
        super().__init__()
        self.first = first
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(in_channels, affine=True) if norm else nn.Identity()
        self.conv1 = sn_conv(in_channels, out_channels)
        self.norm2 = nn.InstanceNorm2d(out_channels, affine=True) if norm else nn.Identity()
        self.conv2 = sn_conv(out_channels, out_channels)
        self.skip = sn_conv(in_channels, out_channels, 1) if (in_channels != out_channels or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if not self.first:
            h = F.relu(h)
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h)))
        skip = x if self.skip is None else self.skip(x)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            skip = F.avg_pool2d(skip, 2)
        return h + skip


class ResidualAdaIN(nn.Module):
    """Residual block at constant resolution with AdaIN before each convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = AdaptiveInstanceNorm(channels)
        self.conv1 = sn_conv(channels, channels)
        self.norm2 = AdaptiveInstanceNorm(channels)
        self.conv2 = sn_conv(channels, channels)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params

    def forward(self, x: torch.Tensor, params: AdaINParams) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x, params.take(self.norm1.num_params))))
        h = self.conv2(F.relu(self.norm2(h, params.take(self.norm2.num_params))))
        return x + h


class ResidualUp(nn.Module):
    """BigGAN generator-style residual block that doubles the resolution, with AdaIN."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = AdaptiveInstanceNorm(in_channels)
        self.conv1 = sn_conv(in_channels, out_channels)
        self.norm2 = AdaptiveInstanceNorm(out_channels)
        self.conv2 = sn_conv(out_channels, out_channels)
        self.skip = sn_conv(in_channels, out_channels, 1)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params

    def forward(self, x: torch.Tensor, params: AdaINParams) -> torch.Tensor:
        h = F.relu(self.norm1(x, params.take(self.norm1.num_params)))
        h = self.conv1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv2(F.relu(self.norm2(h, params.take(self.norm2.num_params))))
        skip = self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return h + skip


def down_path(in_channels: int, channels: tuple[int, ...], image_size: int, attention_size: int,
              attention: bool, norm: bool) -> tuple[nn.ModuleList, list[int]]:
    """Residual down blocks following ``channels``, with self-attention after the block whose
    output resolution is ``attention_size``. Returns the blocks and their output channels."""
    blocks = nn.ModuleList()
    out_channels: list[int] = []
    size = image_size
    previous = in_channels
    for index, width in enumerate(channels):
        blocks.append(ResidualDown(previous, width, norm=norm, first=index == 0))
        out_channels.append(width)
        size //= 2
        previous = width
        if attention and size == attention_size:
            blocks.append(SelfAttention(width))
            out_channels.append(width)
    return blocks, out_channels


class PooledEncoder(nn.Module):
    """The trunk E and D's V share: residual down blocks (+ self-attention) on the 6-channel
    concatenation of frame and landmark image, an extra residual block to ``embedding_dim``
    channels, global sum pooling and ReLU (paper, section 3.1)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.blocks, _ = down_path(6, config.channels, config.image_size, config.down_attention_size,
                                   config.attention, norm=False)
        self.final = ResidualDown(config.channels[-1], config.embedding_dim, downsample=False)

    def features_and_vector(self, images: torch.Tensor,
                            landmark_images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The output of every block on the way, and the pooled (N, embedding_dim) vector."""
        h = torch.cat([images, landmark_images], dim=1)
        features = []
        for block in [*self.blocks, self.final]:
            h = block(h)
            features.append(h)
        return features, torch.relu(h.sum(dim=(2, 3)))
