"""Frame renderers: target landmarks (in the photo's crop) -> face crops.

Both renderers share one interface, so the pipeline (landmarks, compositing, encoding) is the same
for the neural generator and for the weights-free warp.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import torch

from ..config import ModelConfig
from ..devices import resolve_device_name
from ..export import person_generator
from ..landmarks.crop import face_size
from ..landmarks.drawing import draw_landmark_images
from ..landmarks.regions import blend_regions
from ..models import TalkingHeadModel
from ..person import Person

if TYPE_CHECKING:
    from ..parts import LearnedParts
from ..tensors import images_to_tensor, tensor_to_images
from .palette import PhotoPalette
from .warp import FaceWarper, _smoothstep

RENDERERS = ("neural", "warp")
RENDER_BACKENDS = ("auto", "torch", "onnx")
# What "auto" picks on a CPU: the faster backend measured by benchmarks/speed.py (README's table).
CPU_RENDER_BACKEND = "onnx"
# ``motion_share``: the generator's correction fades in as the target's non-rigid motion grows from the
# first to the second fraction of the face size (detector noise on a still face stays below the first).
STILL_MOTION = (0.004, 0.02)


class FrameRenderer(Protocol):
    size: int

    def render(self, target_points: np.ndarray) -> np.ndarray:
        """(B, 68, 2) landmarks in crop coordinates -> (B, size, size, 3) uint8 face crops."""


@dataclass
class FaceLayer:
    """One frame's face as a motion of the photo plus what the photo lacks, at the renderer's ``size``
    (``render.fullres`` lays it over the photo at the photo's own resolution, resampling the photo once).

    ``source_map``: per target-crop pixel, the source-crop pixel it shows ((S, S) float32 x and y).
    ``crop``: the rendered crop (the photo warped at working size with everything below painted in).
    ``painted``: (S, S) float32, where ``crop`` replaces the warped photo (mouth interior, redrawn eyes),
    or None; ``skin``: of that, where it redraws skin (lids), under which a larger photo's fine detail is
    kept. ``correction``: (S, S, 3) float32 the generator adds to the warped photo, or None. ``unpainted``:
    ``crop`` before anything was painted into it (with ``painted``), so what was painted is laid over the
    full-size photo with its own soft edge once, not twice.
    """

    source_map: tuple[np.ndarray, np.ndarray]
    crop: np.ndarray
    painted: np.ndarray | None = None
    skin: np.ndarray | None = None
    correction: np.ndarray | None = None
    unpainted: np.ndarray | None = None


def motion_share(source_points: np.ndarray, target_points: np.ndarray) -> float:
    """0 for a target that is the source moved rigidly (a still driver), rising to 1 as any landmark moves
    by STILL_MOTION[1] of the face size beyond the best similarity: where nothing moved, the photo is the
    answer and the generator's correction is left out."""
    from ..landmarks.retarget import fit_similarity

    src = np.asarray(source_points, np.float64)
    dst = np.asarray(target_points, np.float64)
    a, b = fit_similarity(src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1])
    moved = a * (src[:, 0] + 1j * src[:, 1]) + b
    residual = float(np.abs(moved - (dst[:, 0] + 1j * dst[:, 1])).max()) / face_size(dst)
    return float(_smoothstep(residual, *STILL_MOTION))


def _layers_palette(person: Person) -> PhotoPalette:
    return PhotoPalette.from_photo(person.photo.image, person.photo.points)


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
        self.palette = _layers_palette(person)
        self.draws_layers = True

    def render(self, target_points: np.ndarray) -> np.ndarray:
        # The synthetic interior unless the learned mouth draws it from a blank.
        fill = self.painter is None or self.painter.needs_synthetic_mouth
        frames = np.stack([self.warper.warp(points, fill_mouth=fill) for points in target_points])
        return frames if self.painter is None else self.painter.paint(frames, target_points, in_place=True)

    def render_layers(self, target_points: np.ndarray, measure_points: np.ndarray | None = None,
                      shown: float = 1.0) -> list[FaceLayer]:
        """The targets as ``FaceLayer``s: the warp's map, and the mouth interior and eyes painted in the
        photo's colours (how strongly: by ``measure_points`` when given, see ``PartsPainter.paint``; ``shown``: how
        many output pixels one crop pixel covers)."""
        crops, maps = zip(*(self.warper.warp_with_map(points, fill_mouth=False) for points in target_points))
        return _painted_layers(self.warper, self.painter, self.palette, np.stack(crops), list(maps), target_points,
                               measure_points, [None] * len(crops), shown)


def _painted_layers(warper: FaceWarper, painter, palette: PhotoPalette, unpainted: np.ndarray, maps: list,
                    target_points: np.ndarray, measure_points: np.ndarray | None,
                    corrections: list[np.ndarray | None], shown: float = 1.0) -> list[FaceLayer]:
    """The warped crops ``unpainted`` with what the photo lacks painted in (the synthetic mouth interior
    unless the learned mouth draws it from a blank, then the part models), brought into the photo's colours,
    one ``FaceLayer`` per crop; ``target_points`` and ``measure_points`` in the crops' own pixels, which the
    output shows ``shown`` times larger."""
    count, size = len(unpainted), unpainted.shape[1]
    painted = np.zeros((count, size, size), np.float32)
    skin = np.zeros_like(painted)
    frames = unpainted.copy()
    if painter is None or painter.needs_synthetic_mouth:
        for frame, points, alpha in zip(frames, target_points, painted):
            warper.fill_mouth(frame, points, alpha_out=alpha)
    if painter is not None:
        painter.paint(frames, target_points, in_place=True, alphas=painted, skin=skin, measure_points=measure_points,
                      shown=shown)
    layers = []
    for frame, before, source_map, alpha, skin_alpha, correction in zip(frames, unpainted, maps, painted, skin,
                                                                        corrections):
        palette.paint_into(frame, alpha)
        drawn = bool(alpha.any())
        layers.append(FaceLayer(source_map, frame, alpha if drawn else None,
                                skin_alpha if skin_alpha.any() else None, correction, before if drawn else None))
    return layers


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
        self.palette = _layers_palette(person)
        # ``render_layers``: the photo's own warp at the working size (the correction is laid over it).
        self.photo_warper = (self.detail_warpers[0] if self.detail_warpers
                             else self.warpers[0] if self.warpers else None)
        self.photo_points = person.photo.crop_points

    @property
    def draws_layers(self) -> bool:
        """Whether frames can be laid over the full-size photo (``render_layers``): with warp guidance
        the generator corrects a warp of the photo; without it, it draws the whole face."""
        return self.photo_warper is not None

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

    def render_layers(self, target_points: np.ndarray, measure_points: np.ndarray | None = None,
                      shown: float = 1.0) -> list[FaceLayer]:
        """The targets as ``FaceLayer``s: the photo's warp at the working size, the generator's change to
        it (faded out where the target does not move: ``motion_share``), and the mouth interior and eyes
        painted in, everything drawn in the photo's colours (parts' strengths by ``measure_points`` when given;
        ``shown``: how many output pixels one pixel of the working size covers)."""
        if not self.draws_layers:
            raise ValueError("render_layers needs a warp-guided generator")
        from ..finetune import nearest_shot_indices

        target_points = np.asarray(target_points, np.float32)
        landmark_images = draw_landmark_images(target_points, self.model_size)
        nearest = nearest_shot_indices(self.shot_points, target_points)
        warped_images = np.stack([self.warpers[i].warp(p) for i, p in zip(nearest, target_points)])
        regions = (blend_regions(target_points, self.model_size, self.blend_region)
                   if self.blend_region is not None else None)
        generated = self.generate(landmark_images, warped_images, regions)
        scale = self.size / self.model_size
        crops, maps, corrections = [], [], []
        for frame, warped, points in zip(generated, warped_images, target_points):
            sharp, source_map = self.photo_warper.warp_with_map(points * scale, fill_mouth=False)
            share = motion_share(self.photo_points, points)
            correction = None
            if share > 0:
                # The generator's drawing in the photo's colours, at its own size (its change is smooth);
                # where it keeps the warp, no change.
                change = (self.palette.apply(frame) - self.palette.apply(warped)) * share
                correction = cv2.resize(change, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
                sharp = np.clip(sharp + correction + 0.5, 0, 255).astype(np.uint8)
            crops.append(sharp)
            maps.append(source_map)
            corrections.append(correction)
        return _painted_layers(self.photo_warper, self.painter, self.palette, np.stack(crops), maps,
                               target_points * scale, None if measure_points is None else measure_points * scale,
                               corrections, shown)

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
