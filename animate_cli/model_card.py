"""Model cards (the README.md of a checkpoint folder)."""

from __future__ import annotations

from .config import ModelConfig


def placeholder_model_card(preset: str, config: ModelConfig, seed: int, half: bool) -> str:
    """The card of an untrained checkpoint written by ``animate-face init``."""
    guidance = {
        "warp": "`warp`: the generator also receives the photo warped (piecewise-affine) to the target "
                "landmarks and blends `mask * generated + (1 - mask) * warped`; the mask starts at 0.02, so "
                "this untrained generator's output is ~98% the warped photo plus ~2% of an untrained network's "
                "output. Fine-tuning (`--finetune-steps`) trains the correction on the user's photos.",
        "none": "`none`: the paper's generator (landmark image in, frame out). Untrained, it draws noise-like "
                "textures: use it only to start meta-training.",
    }[config.guidance]
    if config.uses_region:
        guidance += (f" The mask is limited to the `{config.blend_region}` region of the target landmarks "
                     "(the mouth and outside the face): the face's skin, nose and eyes are always the warp's.")
    region = f" --blend-region {config.blend_region}" if config.blend_region != "all" else ""
    options = f"{region} --seed {seed}{' --half' if half else ''}"
    return f"""---
library_name: animate-face
tags: [talking-head, placeholder]
---
# animate-face placeholder checkpoint (untrained)

**This is a placeholder, not a trained model.** It exists so that the tool runs offline on a fresh
machine until meta-training produces real weights (see the project's meta-training issue).

How it was made, exactly:

    animate-face init weights/ --preset {preset} --guidance {config.guidance}{options}

- Preset `{preset}`: {config.image_size} px, channels {'-'.join(map(str, config.channels))}, embedding
  {config.embedding_dim}, {config.bottleneck_blocks} AdaIN residual blocks, self-attention {'on' if config.attention else 'off'}.
- Weights: PyTorch's default initialisation under `torch.manual_seed({seed})`, spectral norm on every layer,
  {'stored in float16' if half else 'stored in float32'}. No data was used: nothing was trained.
- Guidance {guidance}

Training data: none. Evaluation: none yet.
"""
