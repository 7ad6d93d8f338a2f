"""The jobs behind the commands, shared by the main command and batch runs.

An ``Engine`` holds what is loaded once (the model, the landmark backend, the device); the
per-person work (photos -> person -> video) goes through it, so a batch loads everything once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import FinetuneConfig, RenderConfig, resolve_steps
from .errors import UsageError, WeightsError
from .finetune import finetune_person
from .hub import bundled_weights_dir, resolve_weights
from .landmarks import LandmarkBackend, create_backend
from .losses import ContentLoss
from .models import TalkingHeadModel
from .parts import LearnedParts, load_parts
from .parts.geometry import EYES, PARTS
from .parts.paint import TEETH
from .person import Person, Shot
from .progress import ProgressReporter, SilentProgress
from .photos import PhotoFace, resolve_photo_paths
from .render.pipeline import Driver, load_shots, render_video, shot_from_face
from .render.renderers import (RENDERERS, FrameRenderer, NeuralRenderer, WarpRenderer, resolve_device,
                               resolve_render_backend)

log = logging.getLogger(__name__)

# The warp renderer needs no network, so its crop size follows the photo instead.
WARP_CROP_SIZE = 512
# Largest crop rendered at full detail (warp + upsampled correction); larger faces are upsampled.
MAX_DETAIL_SIZE = 512


def detail_size(person: Person) -> int:
    """Crop size that matches the photo's own resolution of the face (multiple of 32, at most 512)."""
    side = person.photo.crop.side
    return int(min(MAX_DETAIL_SIZE, max(32, round(side / 32) * 32)))


# How the mouth's inside is drawn (``--mouth``): the part models drawn for each choice.
MOUTHS = {
    "teeth": (TEETH, *EYES),        # the learned mouth over the synthetic interior, fading out below
    "learned": PARTS,               # the learned mouth's whole opening
    "synthetic": EYES,              # the synthetic interior (render/warp.py)
}


def describe_parts(part_names: tuple[str, ...]) -> str:
    """The engine summary's words for what draws the mouth and the eyes."""
    if "mouth" in part_names:
        return "learned mouth and eyes"
    if TEETH in part_names:
        return "learned eyes · learned teeth over the synthetic mouth"
    return "learned eyes · synthetic mouth" if part_names else "synthetic mouth"


@dataclass
class Engine:
    """Models, landmark backend and device, loaded once and reused for every person."""

    backend: LandmarkBackend
    device: torch.device
    renderer: str = "neural"
    model: TalkingHeadModel | None = None
    weights_dir: Path | None = None
    render_backend: str = "torch"   # how the neural renderer runs the generator: "torch" or "onnx"
    compile: bool = False           # torch.compile the generator (torch backend on CUDA)
    parts: LearnedParts | None = None   # learned mouth and eyes (None: the synthetic mouth interior)
    part_names: tuple[str, ...] = EYES  # what is drawn (``parts.paint.DRAWABLE``; no mouth: the synthetic one)
    _content_loss: ContentLoss | None = field(default=None, repr=False)

    @property
    def crop_size(self) -> int:
        return self.model.config.image_size if self.model is not None else WARP_CROP_SIZE

    def summary(self) -> str:
        """What was chosen, in a few words: landmarks, renderer (how it runs, on what), other weights."""
        if self.model is None:
            renderer = f"warp renderer ({self.device.type})"
        else:
            renderer = f"neural renderer ({self.render_backend}, {self.device.type})"
        renderer += f" · {describe_parts(self.part_names if self.parts is not None else ())}"
        weights = ""
        if self.weights_dir is not None and self.weights_dir.resolve() != bundled_weights_dir().resolve():
            weights = f" · weights {self.weights_dir}"
        return f"{self.backend.name} landmarks · {renderer}{weights}"

    def content_loss(self) -> ContentLoss:
        if self._content_loss is None:
            self._content_loss = ContentLoss.from_available()
            log.info("fine-tuning content loss: %s", self._content_loss.description)
        return self._content_loss

    def load_photos(self, photos: Sequence[str | Path] | Sequence[PhotoFace], face_index: int = 0,
                    progress: ProgressReporter | None = None) -> list[Shot]:
        """Photos of one person (paths, or faces already found by ``find_faces``), loaded, their face
        found and cropped (fast: no networks)."""
        if photos and all(isinstance(item, PhotoFace) for item in photos):
            return [shot_from_face(face, self.crop_size) for face in photos]
        progress = progress or SilentProgress()
        paths = resolve_photo_paths(photos)
        with progress.stage("photos", len(paths)) as advance:
            shots = load_shots(paths, self.backend, self.crop_size, face_index)
            advance(len(paths))
        return shots

    def make_person(self, photos: Sequence[str | Path] | list[Shot], finetune: FinetuneConfig, face_index: int = 0,
                    progress: ProgressReporter | None = None) -> Person:
        """Photos of one person (paths, or shots from ``load_photos``) -> a person ready to render
        (fine-tuned when steps > 0)."""
        progress = progress or SilentProgress()
        if photos and all(isinstance(item, Shot) for item in photos):
            shots = list(photos)
        else:
            shots = self.load_photos(photos, face_index, progress)
        if self.model is None:
            return Person(shots=shots, embedding=torch.zeros(0), adain_params=torch.zeros(0),
                          discriminator_vector=torch.zeros(0))
        finetune = resolve_steps(finetune, len(shots))
        torch.manual_seed(finetune.seed)
        # 0 steps (one photo, by default): a stage with nothing to count, which draws no bar.
        with progress.stage("fine-tune", finetune.steps) as advance:
            return finetune_person(self.model, shots, finetune, self.content_loss() if finetune.steps else None,
                                   self.device, progress=advance)

    def load_person(self, folder: str | Path) -> Person:
        if self.model is None:
            raise UsageError("--person needs the neural renderer (it holds fine-tuned network weights)")
        return Person.load(folder, self.model.config)

    def frame_renderer(self, person: Person) -> FrameRenderer:
        if self.model is None:
            return WarpRenderer(person, parts=self.parts, part_names=self.part_names)
        if self.render_backend == "onnx":
            from .render.onnx_renderer import OnnxRenderer  # onnxruntime loads only when asked for
            return OnnxRenderer(self.model, person, self.device, detail_size=detail_size(person), parts=self.parts,
                                part_names=self.part_names, weights_dir=self.weights_dir)
        return NeuralRenderer(self.model, person, self.device, detail_size=detail_size(person), compile=self.compile,
                              parts=self.parts, part_names=self.part_names)

    def animate(self, person: Person, driver: Driver, output: str | Path, config: RenderConfig,
                progress: ProgressReporter | None = None, preview: str | Path | None = None) -> Path:
        return render_video(self.frame_renderer(person), person, driver, output, config, progress, preview=preview)


def build_engine(weights: str | None = None, landmarks: str = "auto", device: str = "auto",
                 renderer: str = "neural", backend: str = "auto", compile: bool = False,
                 landmark_backend: LandmarkBackend | None = None, learned_parts: bool = True,
                 mouth: str = "teeth") -> Engine:
    """Load the landmark backend (unless ``landmark_backend`` is given) and (for the neural renderer)
    the weights; with ``learned_parts`` also the weights' part models, for either renderer: the eyes,
    and the mouth as ``mouth`` says (``MOUTHS``: the learned teeth over the synthetic interior, the
    learned interior, or the synthetic one); ``--no-learned-parts``, or weights without them: the
    warp's eyes and the synthetic mouth interior.

    ``backend`` runs the generator: "torch", "onnx" (onnxruntime) or "auto" (see
    ``resolve_render_backend``); ``compile`` applies torch.compile (torch backend, CUDA only).
    """
    if renderer not in RENDERERS:
        raise UsageError(f"unknown renderer {renderer!r}; choose from: {', '.join(RENDERERS)}")
    torch_device = resolve_device(device)
    render_backend = resolve_render_backend(backend, torch_device)
    if compile and (render_backend != "torch" or torch_device.type != "cuda"):
        raise UsageError("--compile applies to the torch backend on a CUDA GPU "
                         f"(here: {render_backend} on {torch_device.type})")
    if mouth not in MOUTHS:
        raise UsageError(f"unknown mouth {mouth!r}; choose from: {', '.join(MOUTHS)}")
    backend = landmark_backend or create_backend(landmarks, device=str(torch_device))
    part_names = MOUTHS[mouth]
    if renderer == "warp":
        # The warp needs no weights; the part models come from the given (or bundled) ones.
        weights_dir = None
        if learned_parts:
            try:
                weights_dir = resolve_weights(weights)
            except WeightsError:
                if weights is not None:
                    raise
                log.warning("default weights unavailable; the warp renderer draws the synthetic mouth")
        parts = load_parts(weights_dir, torch_device) if weights_dir is not None else None
        return Engine(backend=backend, device=torch_device, renderer=renderer, parts=parts,
                      part_names=part_names, weights_dir=weights_dir if weights is not None else None)
    weights_dir = resolve_weights(weights)
    model = TalkingHeadModel.from_pretrained(weights_dir, device=torch_device).eval()
    parts = load_parts(weights_dir, torch_device) if learned_parts else None
    return Engine(backend=backend, device=torch_device, renderer=renderer, model=model, weights_dir=weights_dir,
                  render_backend=render_backend, compile=compile, parts=parts, part_names=part_names)
