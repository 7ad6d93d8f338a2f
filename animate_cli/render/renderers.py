"""Frame renderers: target landmarks (in the photo's crop) -> face crops.

Both renderers share one interface, so the pipeline (landmarks, compositing, encoding) is the same
for the neural generator and for the weights-free warp.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import torch

from ..config import ModelConfig
from ..devices import resolve_device_name
from ..export import person_generator
from ..landmarks.drawing import draw_landmark_images
from ..landmarks.regions import blend_regions
from ..models import TalkingHeadModel
from ..person import Person

if TYPE_CHECKING:
    from ..parts import LearnedParts
from ..tensors import images_to_tensor, tensor_to_images
from .warp import FaceWarper

RENDERERS = ("neural", "warp")
RENDER_BACKENDS = ("auto", "torch", "onnx")
# What "auto" picks on a CPU: the faster backend measured by benchmarks/speed.py (README's table).
CPU_RENDER_BACKEND = "onnx"


class FrameRenderer(Protocol):
    size: int

    def render(self, target_points: np.ndarray) -> np.ndarray:
        """(B, 68, 2) landmarks in crop coordinates -> (B, size, size, 3) uint8 face crops."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    return torch.device(resolve_device_name(name))


def resolve_render_backend(name: str, device: torch.device) -> str:
    """'auto' -> torch on CUDA (fp16 autocast, channels_last), the measured faster one on a CPU."""
    if name not in RENDER_BACKENDS:
        from ..errors import UsageError
        raise UsageError(f"unknown backend {name!r}; choose from: {', '.join(RENDER_BACKENDS)}")
    if name != "auto":
        return name
    return "torch" if device.type == "cuda" else CPU_RENDER_BACKEND


def parts_painter(parts: "LearnedParts | None", person: Person, size: int,
                  part_names: tuple[str, ...] | None = None):
    """A ``PartsPainter`` of the person's photo for crops of ``size`` px drawing ``part_names``
    (default: all), on the part models' device, or None without part models or parts to draw."""
    from ..parts import PartsPainter
    from ..parts.geometry import PARTS

    part_names = PARTS if part_names is None else part_names
    if parts is None or not part_names:
        return None

    shot = person.photo
    crop = shot.crop.with_size(size)
    device = next(parts.parameters()).device
    return PartsPainter(parts, crop.crop_image(shot.image), crop.points_to_crop(shot.points), device, part_names)


class WarpRenderer:
    """Piecewise-affine warp of the photo's face crop to each target (no weights needed). With
    ``parts`` the learned part models draw ``part_names`` (default all: the mouth interior and the
    eyes that change); a mouth they do not draw gets the synthetic interior."""

    def __init__(self, person: Person, parts: "LearnedParts | None" = None,
                 part_names: tuple[str, ...] | None = None):
        shot = person.photo
        self.size = shot.crop_image.shape[0]
        self.warper = FaceWarper(shot.crop_image, shot.crop_points)
        # A warp keeps the crop's border fixed, so the whole crop can be pasted back.
        self.keeps_crop_border = True
        self.painter = parts_painter(parts, person, self.size, part_names=part_names)

    def render(self, target_points: np.ndarray) -> np.ndarray:
        # The synthetic interior unless the learned mouth draws it from a blank.
        fill = self.painter is None or self.painter.needs_synthetic_mouth
        frames = np.stack([self.warper.warp(points, fill_mouth=fill) for points in target_points])
        return frames if self.painter is None else self.painter.paint(frames, target_points, in_place=True)


class GeneratorRenderer:
    """What the neural renderers share: landmark images, the warped shots (warp guidance) and the
    detail path. Subclasses differ only in ``generate``, one batch through the person's generator."""

    def __init__(self, config: ModelConfig, person: Person, detail_size: int | None = None,
                 parts: "LearnedParts | None" = None, part_names: tuple[str, ...] | None = None):
        self.model_size = config.image_size
        self.guidance = config.guidance
        self.blend_region = config.region_input
        # With warp guidance the frame is warped + correction; the warp can be done at the photo's
        # resolution and only the correction upsampled, so faces keep the photo's detail.
        self.size = self.model_size
        self.detail_warpers: list[FaceWarper] = []
        if self.guidance == "warp" and detail_size and detail_size > self.model_size:
            self.size = detail_size
            for shot in person.shots:
                crop = shot.crop.with_size(detail_size)
                self.detail_warpers.append(FaceWarper(crop.crop_image(shot.image), crop.points_to_crop(shot.points)))
        self.shot_points = np.stack([s.crop_points for s in person.shots])
        # Warp-guided frames of a single photo are that photo warped plus a correction; with several
        # shots a frame may come from another photo, whose background must not be pasted in.
        self.keeps_crop_border = self.guidance == "warp" and len(person.shots) == 1
        self.warpers = ([FaceWarper(s.crop_image, s.crop_points) for s in person.shots]
                        if self.guidance == "warp" else [])
        # The learned mouth and eyes are painted over the finished crop, at its full size.
        self.painter = parts_painter(parts, person, self.size, part_names=part_names)

    def generate(self, landmark_images: np.ndarray, warped: np.ndarray | None,
                 region: np.ndarray | None = None) -> np.ndarray:
        """uint8 (B, S, S, 3) landmark images [and warped shots [and float32 (B, 1, S, S) blend
        regions]] -> uint8 (B, S, S, 3) frames."""
        raise NotImplementedError

    def render(self, target_points: np.ndarray) -> np.ndarray:
        landmark_images = draw_landmark_images(target_points, self.model_size)
        warped_images = nearest = None
        if self.guidance == "warp":
            from ..finetune import nearest_shot_indices
            nearest = nearest_shot_indices(self.shot_points, target_points)
            warped_images = np.stack([self.warpers[i].warp(p) for i, p in zip(nearest, target_points)])
        regions = (blend_regions(target_points, self.model_size, self.blend_region)
                   if self.blend_region is not None else None)
        frames = self.generate(landmark_images, warped_images, regions)
        if self.detail_warpers:
            frames = np.stack([self._add_detail(frame, warped_image, self.detail_warpers[i], points)
                               for frame, warped_image, i, points in zip(frames, warped_images, nearest,
                                                                         target_points)])
        if self.painter is None:
            return frames
        return self.painter.paint(frames, np.asarray(target_points) * (self.size / self.model_size), in_place=True)

    def _add_detail(self, frame: np.ndarray, warped: np.ndarray, detail_warper: FaceWarper,
                    points: np.ndarray) -> np.ndarray:
        """The warp at full detail plus the generator's correction (frame - warp), upsampled."""
        scale = self.size / self.model_size
        sharp = detail_warper.warp(points * scale).astype(np.float32)
        correction = frame.astype(np.float32) - warped.astype(np.float32)
        correction = cv2.resize(correction, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return np.clip(sharp + correction, 0, 255).round().astype(np.uint8)


class NeuralRenderer(GeneratorRenderer):
    """The generator in torch, with the person's (fine-tuned) AdaIN parameters baked in and spectral
    norm folded, in channels_last; on CUDA in fp16 autocast, optionally through torch.compile."""

    def __init__(self, model: TalkingHeadModel, person: Person, device: torch.device,
                 detail_size: int | None = None, compile: bool = False, parts: "LearnedParts | None" = None,
                 part_names: tuple[str, ...] | None = None):
        super().__init__(model.config, person, detail_size, parts, part_names)
        self.device = torch.device(device)
        # NHWC is what tensor cores want, and oneDNN's CPU convolutions too (small preset measured
        # 1.4x faster on this project's 2-core CPU).
        self.generator = person_generator(model, person, self.device).to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.generator) if compile else self.generator

    @torch.inference_mode()
    def generate(self, landmark_images: np.ndarray, warped: np.ndarray | None,
                 region: np.ndarray | None = None) -> np.ndarray:
        inputs = [images_to_tensor(images, self.device).contiguous(memory_format=torch.channels_last)
                  for images in (landmark_images, warped) if images is not None]
        if region is not None:
            inputs.append(torch.from_numpy(region).to(self.device).contiguous(memory_format=torch.channels_last))
        autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        with autocast:
            frames = self._forward(*inputs)
        return tensor_to_images(frames.float())
