"""Frame renderers: target landmarks (in the photo's crop) -> face crops.

Both renderers share one interface, so the pipeline (landmarks, compositing, encoding) is the same
for the neural generator and for the weights-free warp.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import numpy as np
import torch

from ..landmarks.drawing import draw_landmark_images
from ..models import TalkingHeadModel
from ..person import Person
from ..tensors import images_to_tensor, tensor_to_images
from .warp import FaceWarper

RENDERERS = ("neural", "warp")


class FrameRenderer(Protocol):
    size: int

    def render(self, target_points: np.ndarray) -> np.ndarray:
        """(B, 68, 2) landmarks in crop coordinates -> (B, size, size, 3) uint8 face crops."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ..errors import UsageError
        raise UsageError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


class WarpRenderer:
    """Piecewise-affine warp of the photo's face crop to each target (no weights needed)."""

    def __init__(self, person: Person):
        shot = person.photo
        self.size = shot.crop_image.shape[0]
        self.warper = FaceWarper(shot.crop_image, shot.crop_points)

    def render(self, target_points: np.ndarray) -> np.ndarray:
        return np.stack([self.warper.warp(points) for points in target_points])


class NeuralRenderer:
    """The generator driven by landmark images, with the person's (fine-tuned) AdaIN parameters."""

    def __init__(self, model: TalkingHeadModel, person: Person, device: torch.device):
        self.device = device
        self.size = model.config.image_size
        self.guidance = model.config.guidance
        generator = model.generator
        if person.generator_state is not None:
            generator = type(generator)(model.config)
            generator.load_state_dict(person.generator_state)
        self.generator = generator.to(device).eval()
        self.adain_params = person.adain_params.to(device)[None]
        self.shot_points = np.stack([s.crop_points for s in person.shots])
        self.warpers = ([FaceWarper(s.crop_image, s.crop_points) for s in person.shots]
                        if self.guidance == "warp" else [])

    def _warped_sources(self, target_points: np.ndarray) -> torch.Tensor:
        from ..finetune import nearest_shot_indices
        nearest = nearest_shot_indices(self.shot_points, target_points)
        warped = [self.warpers[index].warp(points) for index, points in zip(nearest, target_points)]
        return images_to_tensor(warped, self.device)

    @torch.inference_mode()
    def render(self, target_points: np.ndarray) -> np.ndarray:
        landmark_images = images_to_tensor(draw_landmark_images(target_points, self.size), self.device)
        warped = self._warped_sources(target_points) if self.guidance == "warp" else None
        psi = self.adain_params.expand(len(target_points), -1)
        autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        with autocast:
            frames = self.generator(landmark_images, psi, warped)
        return tensor_to_images(frames.float())
