"""A person: the photos given for them, their embedding and their fine-tuned networks.

On disk (``--save-person DIR`` / ``--person DIR``) a person is a folder with
``person.json`` (landmarks, crop, the checkpoint config it belongs to), ``photo.png`` (the photo
that results are pasted into), ``shots.png`` (the face crops, side by side) and
``person.safetensors`` (embedding, AdaIN parameters, discriminator vector and, when fine-tuned,
the generator's weights).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import FORMAT_VERSION, ModelConfig
from .errors import InputError, OutputError, WeightsError
from .io.atomic import atomic_output, ensure_folder
from .io.images import load_image, save_image
from .landmarks.crop import FaceCrop

log = logging.getLogger(__name__)

PERSON_FORMAT_VERSION = 1


@dataclass
class Shot:
    """One photo of the person, with its face found and cropped for the networks."""

    path: str
    image: np.ndarray          # full photo, uint8 RGB
    points: np.ndarray         # (68, 2) landmarks in the full photo
    crop: FaceCrop
    crop_image: np.ndarray     # (S, S, 3) uint8
    crop_points: np.ndarray    # (68, 2) landmarks in crop coordinates

    @classmethod
    def from_photo(cls, path: str, image: np.ndarray, points: np.ndarray, crop: FaceCrop) -> "Shot":
        return cls(path=path, image=image, points=points.astype(np.float32), crop=crop,
                   crop_image=crop.crop_image(image), crop_points=crop.points_to_crop(points))


@dataclass
class Person:
    """What rendering needs to know about one person."""

    shots: list[Shot]
    embedding: torch.Tensor            # (emb,) mean of the shots' embeddings
    adain_params: torch.Tensor         # (adain_size,) psi' = P e, then fine-tuned
    discriminator_vector: torch.Tensor  # (emb,) w' = w0 + e, then fine-tuned
    generator_state: dict[str, torch.Tensor] | None = None  # fine-tuned generator, None = meta-learned one
    finetune_steps: int = 0
    record: dict = field(default_factory=dict)

    @property
    def photo(self) -> Shot:
        """The shot whose photo results are pasted into: the first one given."""
        return self.shots[0]

    def save(self, folder: str | Path, model_config: ModelConfig, overwrite: bool = False) -> Path:
        folder = Path(folder)
        if (folder / "person.json").exists() and not overwrite:
            raise OutputError("already holds a saved person; pass --overwrite to replace it", folder)
        ensure_folder(folder, "the person folder")
        tensors = {"embedding": self.embedding, "adain_params": self.adain_params,
                   "discriminator_vector": self.discriminator_vector}
        for name, value in (self.generator_state or {}).items():
            tensors[f"generator.{name}"] = value
        tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
        meta = {
            "format_version": PERSON_FORMAT_VERSION,
            "model": model_config.to_dict(),
            "checkpoint_format_version": FORMAT_VERSION,
            "finetune_steps": self.finetune_steps,
            "record": self.record,
            "shots": [{"path": s.path, "points": s.points.tolist(),
                       "crop": {"center": list(s.crop.center), "side": s.crop.side, "size": s.crop.size}}
                      for s in self.shots],
        }
        with atomic_output(folder / "person.safetensors", overwrite=True) as tmp:
            save_file(tensors, str(tmp))
        save_image(folder / "photo.png", self.photo.image)
        for index, shot in enumerate(self.shots[1:], start=1):
            save_image(folder / f"shot_{index:02d}.png", shot.image)
        with atomic_output(folder / "person.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, model_config: ModelConfig) -> "Person":
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("no such person folder (make one with --save-person)", folder)
        try:
            meta = json.loads((folder / "person.json").read_text())
        except FileNotFoundError:
            raise InputError("not a saved person: person.json is missing", folder) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("person.json is corrupt", folder) from None
        if meta.get("format_version") != PERSON_FORMAT_VERSION:
            raise InputError(f"person format version {meta.get('format_version')} is not supported "
                             f"(this animate-face reads {PERSON_FORMAT_VERSION})", folder)
        if ModelConfig.from_dict(meta["model"]) != model_config:
            raise WeightsError("this person was made with different weights (model config differs); "
                               "pass the same --weights as when it was saved", folder)
        try:
            tensors = load_file(str(folder / "person.safetensors"))
        except (SafetensorError, OSError) as error:
            raise InputError(f"person.safetensors is missing or corrupt ({error})", folder) from None
        shots = []
        for index, entry in enumerate(meta["shots"]):
            image = load_image(folder / ("photo.png" if index == 0 else f"shot_{index:02d}.png"))
            crop = FaceCrop(tuple(entry["crop"]["center"]), float(entry["crop"]["side"]), int(entry["crop"]["size"]))
            shots.append(Shot.from_photo(entry["path"], image, np.asarray(entry["points"], np.float32), crop))
        generator_state = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
        return cls(shots=shots, embedding=tensors["embedding"], adain_params=tensors["adain_params"],
                   discriminator_vector=tensors["discriminator_vector"],
                   generator_state=generator_state or None, finetune_steps=int(meta.get("finetune_steps", 0)),
                   record=meta.get("record", {}))
