"""The three networks in one module, and the checkpoint folder format.

A checkpoint is a folder with ``config.json`` (format version, model config, training record),
``model.safetensors`` (the state dict of all three networks) and a ``README.md`` model card.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import FORMAT_VERSION, ModelConfig
from ..errors import AnimateFaceError, OutputError, WeightsError
from .discriminator import Discriminator
from .embedder import Embedder
from .generator import Generator

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


class TalkingHeadModel(nn.Module):
    """Embedder E, generator G (with its projection P) and discriminator D of one model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedder = Embedder(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def embed(self, images: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """Person embedding: the mean of E over the K shots, (K, 3, H, W) x 2 -> (embedding_dim,)."""
        return self.embedder(images, landmark_images).mean(dim=0)

    def save_pretrained(self, folder: str | Path, training: dict[str, Any] | None = None, half: bool = False,
                        model_card: str | None = None) -> Path:
        """Write the checkpoint folder (created if needed); each file is written to a temporary
        name and renamed into place, so an interrupted save leaves no half-written file."""
        folder = Path(folder)
        config_data = {"format_version": FORMAT_VERSION, "model": self.config.to_dict(), "training": training or {}}
        tensors = {}
        for name, tensor in self.state_dict().items():
            tensor = tensor.detach().to("cpu")
            if half and tensor.is_floating_point():
                tensor = tensor.half()
            # Clones: safetensors refuses tensors that share storage.
            tensors[name] = tensor.contiguous().clone()
        card = model_card if model_card is not None else default_model_card(self.config, training or {}, half)
        temporaries: list[tuple[Path, Path]] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for final_name, write in (
                (WEIGHTS_NAME, lambda path: save_file(tensors, str(path), metadata={"format": "pt"})),
                (CONFIG_NAME, lambda path: path.write_text(json.dumps(config_data, indent=2) + "\n", encoding="utf-8")),
                (CARD_NAME, lambda path: path.write_text(card, encoding="utf-8")),
            ):
                handle, temporary = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=folder)
                os.close(handle)
                temporaries.append((Path(temporary), folder / final_name))
                write(Path(temporary))
                os.chmod(temporary, 0o644)  # mkstemp makes 0600; a checkpoint is meant to be shared
            for temporary, final in temporaries:
                os.replace(temporary, final)
        except OSError as error:
            raise OutputError(f"cannot write checkpoint: {error.strerror or error}", folder) from error
        finally:
            for temporary, _ in temporaries:
                temporary.unlink(missing_ok=True)
        logger.info("saved checkpoint to %s", folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "TalkingHeadModel":
        """Load a checkpoint folder; returns the model in eval mode on ``device`` / ``dtype``.

        Raises WeightsError (one line, with the offending path) for a missing folder or file,
        an unreadable or incompatible config, a corrupt or truncated weights file, and weights
        that do not fit the configured networks.
        """
        folder = Path(folder)
        config, _ = read_checkpoint_config(folder)
        weights_path = folder / WEIGHTS_NAME
        if not weights_path.is_file():
            raise WeightsError(f"{WEIGHTS_NAME} not found in the checkpoint folder", weights_path)
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise WeightsError(f"corrupt or truncated weights file ({detail})", weights_path) from error
        model = cls(config)
        check_state_dict(model.state_dict(), state, weights_path)
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval()


def read_checkpoint_config(folder: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate ``config.json`` of a checkpoint folder -> (model config, training record)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError("checkpoint folder not found", folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{CONFIG_NAME} not found in the checkpoint folder", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"cannot read checkpoint config: {str(error).splitlines()[0]}", path) from error
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeightsError("checkpoint config has no 'model' section", path)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"was written by format version {version}; this animate-face reads version "
                           f"{FORMAT_VERSION}", path)
    try:
        config = ModelConfig.from_dict(data["model"])
    except (AnimateFaceError, TypeError) as error:
        raise WeightsError(f"invalid model config: {error}", path) from error
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise WeightsError("checkpoint config 'training' must be an object", path)
    return config, training


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    """Raise WeightsError unless ``found`` has exactly the keys and shapes of ``expected``."""

    def listed(names: list[str]) -> str:
        shown = ", ".join(names[:3])
        return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        problems = ([f"missing {listed(missing)}"] if missing else []) + (
            [f"unexpected {listed(unexpected)}"] if unexpected else [])
        raise WeightsError("weights do not match the model config: " + "; ".join(problems), path)
    for name, tensor in expected.items():
        if tuple(found[name].shape) != tuple(tensor.shape):
            raise WeightsError(f"weights do not match the model config: {name} has shape "
                               f"{tuple(found[name].shape)}, expected {tuple(tensor.shape)}", path)


def default_model_card(config: ModelConfig, training: dict[str, Any], half: bool) -> str:
    """A minimal README.md for a checkpoint folder."""
    lines = [
        "---",
        "library_name: animate-face",
        "tags: [talking-head, few-shot, gan]",
        "---",
        "# animate-face checkpoint",
        "",
        "Few-shot talking-head model (Zakharov et al. 2019, arXiv 1905.08233): embedder, generator "
        "and projection discriminator.",
        "",
        f"- format version: {FORMAT_VERSION}",
        f"- weights: {'float16' if half else 'float32'}",
        "- model config: " + ", ".join(f"{key}={value}" for key, value in config.to_dict().items()),
    ]
    if training:
        lines.append("- training: " + ", ".join(f"{key}={value}" for key, value in training.items()))
    lines += ["", "Load with `TalkingHeadModel.from_pretrained(folder)` or `animate-face --weights folder`.", ""]
    return "\n".join(lines)
