"""Frozen configuration dataclasses, one per concern, validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

FORMAT_VERSION = 1
GUIDANCE_MODES = ("none", "warp")
# Where warp guidance may blend the generated image over the warp (see landmarks/regions.py).
BLEND_REGIONS = ("all", "mouth_border")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the three networks (embedder, generator, discriminator).

    ``guidance="none"`` is the paper's generator: landmark image in, frame out.
    ``guidance="warp"`` also feeds the source photo warped to the target landmarks and
    blends ``mask * generated + (1 - mask) * warped`` (the mask starts near zero).
    ``blend_region`` limits that mask: ``all`` (anywhere in the crop) or ``mouth_border`` (the
    mouth and outside the face; the face's skin stays the warp's).
    """

    image_size: int = 128
    base_channels: int = 32
    max_channels: int = 256
    embedding_dim: int = 256
    bottleneck_blocks: int = 4
    num_videos: int = 1
    guidance: str = "none"
    attention: bool = True
    blend_region: str = "all"

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size & (self.image_size - 1):
            raise UsageError(f"image_size must be a power of two >= 16, got {self.image_size}")
        if self.base_channels < 1 or self.max_channels < self.base_channels:
            raise UsageError("channels must satisfy 1 <= base_channels <= max_channels")
        if self.image_size >> self.num_down_blocks < 2:
            raise UsageError("too many down blocks for this image size")
        if self.embedding_dim < 1 or self.num_videos < 1 or self.bottleneck_blocks < 0:
            raise UsageError("embedding_dim and num_videos must be positive")
        if self.guidance not in GUIDANCE_MODES:
            raise UsageError(f"guidance must be one of {', '.join(GUIDANCE_MODES)}, got {self.guidance!r}")
        if self.blend_region not in BLEND_REGIONS:
            raise UsageError(f"blend_region must be one of {', '.join(BLEND_REGIONS)}, got {self.blend_region!r}")

    @property
    def uses_region(self) -> bool:
        """Whether the generator needs the blend region of the target landmarks as an input."""
        return self.guidance == "warp" and self.blend_region != "all"

    @property
    def region_input(self) -> str | None:
        """The blend region the generator takes as an input (``landmarks.regions``), or None."""
        return self.blend_region if self.uses_region else None

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the successive down blocks: base, 2*base, ... up to max_channels."""
        count = int(math.log2(self.max_channels // self.base_channels)) + 1
        return tuple(min(self.base_channels * 2**i, self.max_channels) for i in range(count))

    @property
    def num_down_blocks(self) -> int:
        return len(self.channels)

    @property
    def bottleneck_size(self) -> int:
        return self.image_size >> self.num_down_blocks

    @property
    def down_attention_size(self) -> int:
        """Self-attention resolution in the down parts (32 px at 256 px, as in the paper)."""
        return self.image_size // 8

    @property
    def up_attention_size(self) -> int:
        """Self-attention resolution in G's up part (64 px at 256 px, as in the paper)."""
        return self.image_size // 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # The paper's sizes: 256 px, channels 64..512, embedding 512.
    "paper": ModelConfig(image_size=256, base_channels=64, max_channels=512, embedding_dim=512,
                         bottleneck_blocks=5),
    # Half the resolution and channels: usable on a CPU.
    "small": ModelConfig(image_size=128, base_channels=32, max_channels=256, embedding_dim=256,
                         bottleneck_blocks=4),
    # The small preset's resolution at half its channels: a meta-training step (K=4, batch 4)
    # takes ~1.5 s on one CPU core (small: ~4.4 s), so hours of CPU give thousands of steps.
    "lite": ModelConfig(image_size=128, base_channels=16, max_channels=128, embedding_dim=128,
                        bottleneck_blocks=2),
    # For tests: runs a step in milliseconds.
    "tiny": ModelConfig(image_size=32, base_channels=8, max_channels=32, embedding_dim=32,
                        bottleneck_blocks=1),
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}") from None
    return preset.replace(**overrides) if overrides else preset


@dataclass(frozen=True)
class FinetuneConfig:
    """Few-shot fine-tuning of a new person (paper section 3.3). ``steps=None``: the measured
    default for the number of photos (:func:`default_finetune_steps`)."""

    steps: int | None = None
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-4
    batch_size: int = 4
    feature_matching_weight: float = 10.0
    content_weight: float = 1.0
    # Warp guidance only: content loss on the generator's unblended image, as in meta-training.
    raw_content_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 0:
            raise UsageError(f"--finetune-steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError("fine-tuning batch size must be >= 1")
        if self.lr_generator <= 0 or self.lr_discriminator <= 0:
            raise UsageError("learning rates must be positive")


MAX_SHOTS = 32

# Part-model training defaults (animate_cli/parts/train.py), here so that `train-parts --help` shows
# them without importing torch: the patch discriminator's weight, and the share of mouth samples
# drawn from photo people (when the data has both kinds).
PARTS_ADVERSARIAL_WEIGHT = 0.02
PARTS_PHOTO_SHARE = 0.4
PARTS_TONE_WEIGHT = 0.0
PARTS_EDGE_WEIGHT = 0.0

# Default fine-tuning steps, measured on held-out video frames and LFW people (docs/evaluation.md, "Fine-tuning
# that pays"): with one photo no step count gained anything measurable over feed-forward, so one photo
# is not fine-tuned; with 8 photos and the bundled weights SSIM gains grow to 40 steps, but from 40 on
# identity gets worse, so 20 (most of the gain at half the cost, identity unchanged).
ONE_PHOTO_STEPS = 0
SEVERAL_PHOTOS_STEPS = 20


def default_finetune_steps(photos: int) -> int:
    """Fine-tuning steps for ``photos`` photos when the user did not choose."""
    return ONE_PHOTO_STEPS if photos <= 1 else SEVERAL_PHOTOS_STEPS


def resolve_steps(config: "FinetuneConfig", photos: int) -> "FinetuneConfig":
    """``config`` with its steps decided (the default for ``photos`` photos when None)."""
    return config if config.steps is not None else dataclasses.replace(config, steps=default_finetune_steps(photos))


# How the whole head moves (``RenderConfig.head_model``).
HEAD_MODELS = ("3d", "flat")


# The output's H.264 encoding: x264's veryfast preset at crf 16, the quality of its medium preset at crf 18 encoded
# several times as fast, in somewhat larger files (measured: docs/findings.md, "2026-12-07 (last)").
DEFAULT_CRF = 16
X264_PRESET = "veryfast"


@dataclass(frozen=True)
class RenderConfig:
    """How the output video is made."""

    size: int | None = None         # longest side of the output; None = the photo's (or the crop's)
    fps: float | None = None        # None = the driver's
    crf: int = DEFAULT_CRF
    audio: bool = True
    crop_only: bool = False
    side_by_side: bool = False
    smoothing: float = 1.0
    relative: bool = True
    batch_size: int = 8
    overwrite: bool = False
    head_motion: bool = True        # the whole head follows the driver's pose over a still background
    reference: str | int = "auto"   # the driver's neutral frame: "auto", "first" or a frame index
    full_closure: bool = True       # lips meet and lids close fully when the driver's do
    head_model: str = "3d"          # how the whole head turns: "3d" (a 3D head proxy) or "flat" (2D similarity)

    @property
    def moves_whole_head(self) -> bool:
        return self.head_motion and not self.crop_only

    def __post_init__(self) -> None:
        if self.size is not None and not 16 <= self.size <= 8192:
            raise UsageError(f"--size must be between 16 and 8192, got {self.size}")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise UsageError(f"--fps must be in (0, 240], got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf must be between 0 and 51, got {self.crf}")
        if self.smoothing < 0:
            raise UsageError(f"--smoothing must be >= 0, got {self.smoothing}")
        if self.batch_size < 1:
            raise UsageError("batch size must be >= 1")
        if self.head_model not in HEAD_MODELS:
            raise UsageError(f"unknown head model {self.head_model!r}; choose from: {', '.join(HEAD_MODELS)}")
        from .landmarks.reference import parse_reference

        object.__setattr__(self, "reference", parse_reference(self.reference))
