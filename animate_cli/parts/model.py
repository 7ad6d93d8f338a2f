"""The learned mouth and eye models: two small U-Nets that redraw a hole in a part crop.

Each sees, at the part crop's resolution (``PartsConfig.mouth_size`` / ``eye_size``):

- the frame's part crop with the hole blanked (RGB, 3 channels) and the hole (1); a mouth model with
  ``mouth_residual`` sees the hole filled with the synthetic interior instead, and adds a correction
  to it (it starts as that interior: rows of single teeth over a dark gap),
- the target's opening (``shape``: inside the inner lips, or inside the lids; 1),
- the person's own part from the photo (RGB, 3) and its opening (1): their teeth when the photo
  shows them, their lips' and skin's colour, their iris,

and returns RGB for the hole; the caller keeps the frame outside it. They are stored beside the main
networks in a checkpoint folder: ``parts.safetensors`` (keys ``mouth.*`` and ``eye.*``) and the
``parts`` section of ``config.json`` (the config below and its training record).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import AnimateFaceError, OutputError, UsageError, WeightsError

PARTS_WEIGHTS_NAME = "parts.safetensors"
PARTS_SECTION = "parts"
INPUT_CHANNELS = 9


@dataclass(frozen=True)
class PartsConfig:
    """Sizes of the part models: crop sides (px, multiples of 8) and the first layer's channels."""

    mouth_size: int = 96
    eye_size: int = 64
    channels: int = 16
    # The mouth model corrects the synthetic interior (render/warp.py) rather than drawing the hole
    # from a blank: its output is the interior plus a learned change, zero before training.
    mouth_residual: bool = False

    def __post_init__(self) -> None:
        for name in ("mouth_size", "eye_size"):
            value = getattr(self, name)
            if value < 16 or value % 8:
                raise UsageError(f"parts {name} must be a multiple of 8 and at least 16, got {value}")
        if self.channels < 4:
            raise UsageError(f"parts channels must be at least 4, got {self.channels}")

    def size_of(self, part: str) -> int:
        return self.mouth_size if part == "mouth" else self.eye_size

    def residual(self, part: str) -> bool:
        """Whether ``part``'s model corrects the synthetic fill in its hole (else the hole is blanked)."""
        return part == "mouth" and self.mouth_residual

    def same_sizes(self, other: "PartsConfig") -> bool:
        return (self.mouth_size, self.eye_size, self.channels) == (other.mouth_size, other.eye_size, other.channels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PartsConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown parts config fields: {', '.join(sorted(unknown))}")
        return cls(**data)


PARTS_PRESETS = {
    "default": PartsConfig(),
    "tiny": PartsConfig(mouth_size=32, eye_size=16, channels=4),
}


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation),
                         nn.LeakyReLU(0.2, inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, dilation=dilation),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.2)


class PartNet(nn.Module):
    """U-Net over three halvings, dilated residual blocks at the bottom (a receptive field as wide
    as the crop, so the teeth line up across the whole mouth). In: (N, 9, S, S) in [-1, 1] (masks in
    [0, 1]); out: (N, 3, S, S) RGB in [-1, 1]. ``residual``: the output is the input image plus the
    network's change (its last layer starts at zero, so an untrained net returns its input)."""

    def __init__(self, channels: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        c = channels
        self.enc0 = nn.Sequential(_conv(INPUT_CHANNELS, c), _conv(c, c))
        self.enc1 = nn.Sequential(_conv(c, 2 * c, stride=2), _conv(2 * c, 2 * c))
        self.enc2 = nn.Sequential(_conv(2 * c, 4 * c, stride=2), _conv(4 * c, 4 * c))
        self.enc3 = _conv(4 * c, 4 * c, stride=2)
        self.middle = nn.Sequential(_Residual(4 * c, 1), _Residual(4 * c, 2), _Residual(4 * c, 4))
        self.dec2 = nn.Sequential(_conv(8 * c, 4 * c), _conv(4 * c, 2 * c))
        self.dec1 = nn.Sequential(_conv(4 * c, 2 * c), _conv(2 * c, c))
        self.dec0 = nn.Sequential(_conv(2 * c, c), nn.Conv2d(c, 3, 3, padding=1))
        if residual:
            nn.init.zeros_(self.dec0[-1].weight)
            nn.init.zeros_(self.dec0[-1].bias)

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(inputs)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        x = self.middle(self.enc3(e2))
        x = self.dec2(self._up(x, e2))
        x = self.dec1(self._up(x, e1))
        x = self.dec0(self._up(x, e0))
        if self.residual:
            return torch.clamp(inputs[:, :3] + x, -1.0, 1.0)
        return torch.tanh(x)


def part_inputs(masked: torch.Tensor, hole: torch.Tensor, shape: torch.Tensor, source: torch.Tensor,
                source_shape: torch.Tensor, keep_hole: bool = False) -> torch.Tensor:
    """The network's input: images (N, 3, S, S) in [-1, 1], masks (N, 1, S, S) in [0, 1]; the hole
    of ``masked`` is blanked unless ``keep_hole`` (a residual model sees what fills it)."""
    image = masked if keep_hole else masked * (1.0 - hole)
    return torch.cat([image, hole, shape, source, source_shape], dim=1)


class LearnedParts(nn.Module):
    """The mouth model and the eye model of one checkpoint."""

    def __init__(self, config: PartsConfig):
        super().__init__()
        self.config = config
        self.mouth = PartNet(config.channels, residual=config.mouth_residual)
        self.eye = PartNet(config.channels)

    def net(self, part: str) -> PartNet:
        return self.mouth if part == "mouth" else self.eye

    def save(self, folder: str | Path, training: dict[str, Any] | None = None, half: bool = False) -> Path:
        """Add (or replace) the part models in a checkpoint folder: ``parts.safetensors`` and the
        ``parts`` section of its ``config.json``, each written to a temporary file and renamed."""
        folder = Path(folder)
        config_path = folder / "config.json"
        try:
            data = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as error:
            raise WeightsError(f"cannot read checkpoint config: {error}", config_path) from error
        data[PARTS_SECTION] = {"config": self.config.to_dict(), "training": training or {}}
        tensors = {}
        for name, tensor in self.state_dict().items():
            tensor = tensor.detach().to("cpu")
            tensors[name] = (tensor.half() if half and tensor.is_floating_point() else tensor).contiguous().clone()
        written: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for final, write in ((folder / PARTS_WEIGHTS_NAME,
                                  lambda p: save_file(tensors, str(p), metadata={"format": "pt"})),
                                 (config_path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n",
                                                                      encoding="utf-8"))):
                handle, temporary = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
                os.close(handle)
                written.append(Path(temporary))
                write(Path(temporary))
                os.chmod(temporary, 0o644)
            for temporary, final in zip(written, (folder / PARTS_WEIGHTS_NAME, config_path)):
                os.replace(temporary, final)
        except OSError as error:
            raise OutputError(f"cannot write the part models: {error.strerror or error}", folder) from error
        finally:
            for temporary in written:
                temporary.unlink(missing_ok=True)
        return folder


def read_parts_section(folder: str | Path) -> tuple[PartsConfig, dict[str, Any]] | None:
    """(config, training record) of a checkpoint's part models, or None when it has none."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    section = data.get(PARTS_SECTION) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return None
    try:
        return PartsConfig.from_dict(section.get("config") or {}), dict(section.get("training") or {})
    except (AnimateFaceError, TypeError) as error:
        raise WeightsError(f"invalid parts config: {error}", path) from error


def load_parts(folder: str | Path, device: str | torch.device = "cpu") -> LearnedParts | None:
    """The checkpoint's part models in eval mode (float32), or None when it has none."""
    folder = Path(folder)
    section = read_parts_section(folder)
    weights = folder / PARTS_WEIGHTS_NAME
    if section is None or not weights.is_file():
        return None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(f"corrupt or truncated weights file ({detail})", weights) from error
    parts = LearnedParts(section[0])
    expected = parts.state_dict()
    if set(state) != set(expected) or any(tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()):
        raise WeightsError("part weights do not match the parts config", weights)
    parts.load_state_dict({k: v.float() for k, v in state.items()})
    # NHWC: oneDNN's CPU convolutions ran these nets 1.8x faster (8 mouth crops: 29 vs 51 ms).
    return parts.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)
