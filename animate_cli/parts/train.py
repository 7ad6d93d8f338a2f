"""Training the mouth and eye models on prepared datasets (``animate-face prepare``).

Every sample is what a renderer will ask of the model: a photo A of a person, warped to the
landmarks of a real frame B of the same person (``FaceWarper``, without the synthetic mouth fill),
with the hole of B's part blanked; the model redraws the hole and is compared with the real B. A
residual mouth model (``PartsConfig.mouth_residual``) sees the hole with the synthetic fill in it
instead, and learns the change that makes it B's.

- Mouth, frames of a video: B is a frame with the mouth open; A another frame of the video
  (a closed-mouth one half the time), or B itself with its lips closed by the warp
  (``closed_mouth``), as a closed-mouth photo would be.
- Mouth, photos (LFW): B is a photo with the mouth open; A is B with its lips closed by the
  warp: self-supervised, the real interior is masked and redrawn from the lips' shape, the
  surroundings and the (closed) photo.
- Eyes, frames of a video: B is a frame with that eye half or fully closed half the time (else
  any frame), A a frame of the video with the eye open.

Augmentation: a mirror of the whole sample, one colour gain per sample. Losses on the composite
(the model's output inside the hole, the input outside): L1, a perceptual distance through the
first stages of dlib's face ResNet (``models/face_resnet.py``) when it is installed, and a hinge
critic at a small weight: a patch discriminator on the pixels (spectral norm), or heads on the face
ResNet's stages (``--critic features``). Each sample is a pure function of
``(seed, step, index)``, so a run is reproducible.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import PARTS_ADVERSARIAL_WEIGHT, PARTS_EDGE_WEIGHT, PARTS_PHOTO_SHARE, PARTS_TONE_WEIGHT
from ..errors import DivergenceError, InputError, UsageError
from ..losses import sobel_gradients
from ..render.warp import FaceWarper, mouth_opening
from .geometry import closed_mouth, cut_part, eye_openness, part_masks, part_matrix
from .model import LearnedParts, PartsConfig, part_inputs

log = logging.getLogger(__name__)

MOUTH_OPEN = 0.03          # B's mouth opening (of the face size) for a mouth sample
MOUTH_CLOSED = 0.015       # frames this closed count as closed-mouth photos
SELF_CLOSED_SHARE = 0.2    # video mouth samples whose photo is B itself with its lips closed
BLINK_SHARE = 0.5          # eye samples whose target eye is at most BLINK_FRACTION of the open eye
BLINK_FRACTION = 0.6
L1_WEIGHT = 1.0
PERCEPTUAL_WEIGHT = 0.3
PERCEPTUAL_STAGES = 3
PERCEPTUAL_MIN_SIZE = 64
# The tone term's histogram bins over [-1, 1], and the least opening (pixels) it is measured on.
TONE_BINS = 16
TONE_MIN_AREA = 4.0
# The edge term compares the strongest edge within this many pixels (a square window), so an edge
# drawn a pixel from the real one costs nothing and only a missing or blurred one does.
EDGE_WINDOW = 3


@dataclass
class FrameBank:
    """All face crops of some prepared datasets, in memory, with what sampling needs per frame."""

    images: np.ndarray          # uint8 (N, S, S, 3)
    points: np.ndarray          # float32 (N, 68, 2) in crop pixels
    group: np.ndarray           # int (N,): one id per video, or per photo person
    is_video: np.ndarray        # bool (N,)
    mouth: np.ndarray           # mouth opening per frame
    eyes: np.ndarray            # (N, 2) openness of the right and left eye

    @classmethod
    def load(cls, folders: Sequence[str | Path], max_photos: int | None = None, seed: int = 0) -> "FrameBank":
        images, points, groups, videos = [], [], [], []
        offset = 0
        for folder in folders:
            folder = Path(folder)
            index_path = folder / "index.json"
            if not index_path.is_file():
                raise InputError("is not a prepared dataset (no index.json; make one with animate-face prepare)",
                                 folder)
            index = json.loads(index_path.read_text(encoding="utf-8"))
            kinds = {entry_id: entry.get("kind") == "video" for entry_id, entry in enumerate(index["videos"])}
            for shard in index["shards"]:
                data = np.load(folder / shard["file"])
                images.append(data["images"])
                points.append(data["points"].astype(np.float32))
                groups.append(data["video"].astype(np.int64) + offset)
                videos.append(np.array([kinds.get(int(v), False) for v in data["video"]]))
            offset += len(index["videos"])
        if not images:
            raise InputError("no face crops in the given datasets", folders[0] if folders else "")
        bank = cls(np.concatenate(images), np.concatenate(points), np.concatenate(groups), np.concatenate(videos),
                   np.zeros(0), np.zeros((0, 2)))
        if max_photos is not None:
            photos = np.flatnonzero(~bank.is_video)
            if len(photos) > max_photos:
                # Photo people add teeth and lips of many people, but are mostly closed-mouthed: keep
                # the open mouths first.
                openings = np.array([mouth_opening(p) for p in bank.points[photos]])
                order = np.random.default_rng(seed).permutation(len(photos))
                ranked = order[np.argsort(~(openings[order] > MOUTH_OPEN), kind="stable")]
                keep = np.sort(np.concatenate([np.flatnonzero(bank.is_video), photos[ranked[:max_photos]]]))
                bank = cls(bank.images[keep], bank.points[keep], bank.group[keep], bank.is_video[keep],
                           np.zeros(0), np.zeros((0, 2)))
        bank.mouth = np.array([mouth_opening(p) for p in bank.points])
        bank.eyes = np.array([[eye_openness(p, "right_eye"), eye_openness(p, "left_eye")] for p in bank.points])
        return bank

    def __len__(self) -> int:
        return len(self.images)


class PairSampler:
    """Training samples (see the module docstring), a pure function of (seed, step, index)."""

    def __init__(self, bank: FrameBank, config: PartsConfig, seed: int = 0, photo_share: float = PARTS_PHOTO_SHARE):
        self.bank = bank
        self.photo_share = photo_share
        self.config = config
        self.seed = seed
        groups = {}
        for index, group in enumerate(bank.group):
            groups.setdefault(int(group), []).append(index)
        self.groups = {g: np.array(v) for g, v in groups.items()}
        self.video_groups = [g for g, v in self.groups.items() if bank.is_video[v[0]] and len(v) > 1]
        open_mouth = bank.mouth > MOUTH_OPEN
        self.open_video_frames = np.flatnonzero(open_mouth & bank.is_video)
        self.open_photo_frames = np.flatnonzero(open_mouth & ~bank.is_video)
        if not len(self.open_video_frames) and not len(self.open_photo_frames):
            raise InputError("no open mouths in the datasets (nothing to learn a mouth from)", "")
        if not self.video_groups:
            raise InputError("the datasets have no video (the eye model learns blinks from videos)", "")

    def sample(self, part: str, step: int, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, index, 0 if part == "mouth" else 1])
        if part == "mouth":
            source_image, source_points, target = self._mouth_pair(rng)
            eye = "mouth"
        else:
            eye = "right_eye" if rng.random() < 0.5 else "left_eye"
            source_image, source_points, target = self._eye_pair(rng, 0 if eye == "right_eye" else 1)
        target_image, target_points = self.bank.images[target], self.bank.points[target]
        # A residual mouth model learns to correct the synthetic interior, so it sees it in the hole.
        warped = FaceWarper(source_image, source_points).warp(target_points, fill_mouth=self.config.residual(eye))
        size = self.config.size_of(eye)
        matrix = part_matrix(target_points, eye, size)
        source_matrix = part_matrix(source_points, eye, size)
        shape, hole = part_masks(target_points, eye, size, matrix)
        source_shape, _ = part_masks(source_points, eye, size, source_matrix)
        crops = [cut_part(warped, matrix, size), cut_part(target_image, matrix, size),
                 cut_part(source_image, source_matrix, size)]
        masks = [hole, shape, source_shape]
        if rng.random() < 0.5:
            crops = [c[:, ::-1] for c in crops]
            masks = [m[:, ::-1] for m in masks]
        gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
        crops = [np.clip(c.astype(np.float32) * gain, 0, 255).astype(np.uint8) for c in crops]
        return {"warped": np.ascontiguousarray(crops[0]), "target": np.ascontiguousarray(crops[1]),
                "source": np.ascontiguousarray(crops[2]), "hole": np.ascontiguousarray(masks[0]),
                "shape": np.ascontiguousarray(masks[1]), "source_shape": np.ascontiguousarray(masks[2])}

    def _mouth_pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        bank = self.bank
        photos = len(self.open_photo_frames) > 0
        videos = len(self.open_video_frames) > 0
        from_photo = photos and (not videos or rng.random() < self.photo_share)
        pool = self.open_photo_frames if from_photo else self.open_video_frames
        target = int(rng.choice(pool))
        if from_photo or rng.random() < SELF_CLOSED_SHARE:
            return self._closed(target)
        frames = self.groups[int(bank.group[target])]
        frames = frames[frames != target]
        closed = frames[bank.mouth[frames] < MOUTH_CLOSED]
        if len(closed) and rng.random() < 0.5:
            frames = closed
        if not len(frames):
            return self._closed(target)
        source = int(rng.choice(frames))
        return bank.images[source], bank.points[source], target

    def _closed(self, target: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Frame ``target`` with its lips closed by the warp, standing in for a closed-mouth photo."""
        image, points = self.bank.images[target], self.bank.points[target]
        closed = closed_mouth(points)
        return FaceWarper(image, points).warp(closed, fill_mouth=False), closed, target

    def _eye_pair(self, rng: np.random.Generator, eye: int) -> tuple[np.ndarray, np.ndarray, int]:
        bank = self.bank
        group = self.video_groups[int(rng.integers(len(self.video_groups)))]
        frames = self.groups[group]
        openness = bank.eyes[frames, eye]
        median = float(np.median(openness))
        closed = frames[openness <= BLINK_FRACTION * median]
        if len(closed) and rng.random() < BLINK_SHARE:
            target = int(rng.choice(closed))
        else:
            target = int(rng.choice(frames))
        opened = frames[(openness >= median) & (frames != target)]
        source = int(rng.choice(opened if len(opened) else frames[frames != target]))
        return bank.images[source], bank.points[source], target


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    batch = {}
    for key in samples[0]:
        stacked = np.stack([s[key] for s in samples])
        if stacked.dtype == np.uint8:
            batch[key] = torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        else:
            batch[key] = torch.from_numpy(stacked.astype(np.float32))[:, None]
    return batch


class PatchDiscriminator(nn.Module):
    """Hinge patch discriminator on (RGB, hole): about 22 px patches of a part crop."""

    def __init__(self, channels: int):
        super().__init__()
        sn = nn.utils.spectral_norm
        c = channels
        self.body = nn.Sequential(
            sn(nn.Conv2d(4, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(2 * c, 4 * c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(4 * c, 1, 3, 1, 1)))

    def forward(self, images: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([images, hole], dim=1))

    @staticmethod
    def patch_weights(hole: torch.Tensor) -> torch.Tensor:
        """1 for the output patches that see the hole, else 0: (N, 1, S/4, S/4). Outside the hole
        a composite is the real frame, so those patches carry no signal and are left out of the
        losses' means (the hole is about 7 % of a mouth crop)."""
        return F.max_pool2d(F.max_pool2d(hole, 4, 4), 3, 1, 1).gt(0).float()


def _patch_mean(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (scores * weights).sum() / weights.sum().clamp_min(1.0)


def tone_distance(generated: torch.Tensor, target: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """How far the colours inside the opening are from the real ones, whichever pixel has which: per
    channel, the 1-D Wasserstein distance between the two soft histograms (triangular bins) of the
    values that ``shape`` covers, averaged over channels and over the samples with an opening.

    L1 scores every pixel where it is: where it cannot tell a tooth's place from a dark gap's it pays
    least for a pale in-between, and a pale opening reads as a closed mouth. This term does not care
    where the dark is, only that there is as much of it as in the real mouth."""
    centres = torch.linspace(-1.0, 1.0, TONE_BINS, device=generated.device, dtype=generated.dtype)
    width = 2.0 / (TONE_BINS - 1)
    weights = shape.flatten(2)[..., None]                                   # (N, 1, P, 1)
    area = weights.sum(dim=2)                                               # (N, 1, 1)

    def cdf(images: torch.Tensor) -> torch.Tensor:
        values = images.flatten(2)[..., None]                               # (N, 3, P, 1)
        kernel = (1.0 - (values - centres).abs() / width).clamp_min(0.0)    # (N, 3, P, B)
        return ((kernel * weights).sum(dim=2) / area.clamp_min(1e-6)).cumsum(dim=-1)

    per_sample = (cdf(generated) - cdf(target)).abs().sum(dim=-1).mean(dim=1) * width   # (N,)
    seen = (area[:, 0, 0] >= TONE_MIN_AREA).float()
    return (per_sample * seen).sum() / seen.sum().clamp_min(1.0)


def edge_strength(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) images in [-1, 1] -> (N, 1, S, S): the Sobel gradient magnitude of their brightness."""
    gradients = sobel_gradients(images.mean(dim=1, keepdim=True))
    return torch.sqrt((gradients ** 2).sum(dim=1, keepdim=True) + 1e-8)


def edge_distance(generated: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """How far the edges in the hole are from the real ones, each allowed to sit a pixel off: per pixel
    of the hole, how much a real edge is stronger than the strongest generated one within
    ``EDGE_WINDOW`` (an edge missing or blurred), plus the same the other way (an edge that is not
    there); the hole-weighted mean.

    L1 pays least for a blurred edge where it cannot place a sharp one exactly, and dlib (and a
    viewer) read a blurred lip edge over a pale interior as lip: the opening reads narrower. Here a
    sharp edge a pixel away from the real one costs nothing, a blurred one does."""
    fake, real = edge_strength(generated), edge_strength(target)

    def near(edges: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(edges, EDGE_WINDOW, 1, EDGE_WINDOW // 2)

    difference = F.relu(real - near(fake)) + F.relu(fake - near(real))
    return (difference * hole).sum() / hole.sum().clamp_min(1.0)


class PartPerceptual(nn.Module):
    """Relative L1 of the face ResNet's first stages (as ``FaceLoss``'s perceptual term), on part crops."""

    def __init__(self, network: nn.Module, stages: int = PERCEPTUAL_STAGES):
        super().__init__()
        self.network = network.requires_grad_(False).eval()
        self.stages = stages

    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The first stages' outputs for part crops in [-1, 1]."""
        if images.shape[-1] < PERCEPTUAL_MIN_SIZE:
            # The network's stride-4 stem and its stages need a few pixels to work on.
            images = F.interpolate(images, size=(PERCEPTUAL_MIN_SIZE, PERCEPTUAL_MIN_SIZE), mode="bilinear",
                                   align_corners=False)
        return self.network.stage_outputs((images + 1.0) * 127.5, self.stages)

    @staticmethod
    def distance(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
        return sum(F.l1_loss(f, r) / (r.abs().mean() + 1e-6) for f, r in zip(fake, real)) / len(real)

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.stage_features(target)
        return self.distance(self.stage_features(generated), real)


class FeatureCritic(nn.Module):
    """Hinge critic on the frozen face ResNet's first stages (a projected discriminator, as in Sauer
    et al. 2021, "Projected GANs Converge Faster"): a small head per stage scores every feature
    position from the features and the hole at that resolution. Pretrained features tell a flat pale
    band from teeth with gaps from the first step; ``PatchDiscriminator`` on raw pixels stayed at
    chance (hinge loss 1.95) through whole CPU runs."""

    def __init__(self, stage_channels: Sequence[int], width: int = 64):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.heads = nn.ModuleList(
            nn.Sequential(sn(nn.Conv2d(channels + 1, width, 1)), nn.LeakyReLU(0.2, inplace=True),
                          sn(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True),
                          sn(nn.Conv2d(width, 1, 1)))
            for channels in stage_channels)

    def _mean_over_stages(self, features: list[torch.Tensor], scales: list[torch.Tensor], hole: torch.Tensor,
                          of_score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The mean over stages of ``of_score(score)`` averaged over the positions that see the hole;
        ``scales`` normalise each stage (real features' mean size, so both sides see the same scale)."""
        total = torch.zeros((), device=hole.device)
        for head, feature, scale in zip(self.heads, features, scales):
            seen = F.adaptive_max_pool2d(hole, feature.shape[-2:])
            score = head(torch.cat([feature / scale, seen], dim=1))
            total = total + _patch_mean(of_score(score), seen.gt(0.01).float())
        return total / len(self.heads)

    def scores(self, features: list[torch.Tensor], scales: list[torch.Tensor], hole: torch.Tensor,
               sign: float) -> torch.Tensor:
        """The hinge term ``relu(1 + sign * score)`` (sign +1: fakes', -1: reals')."""
        return self._mean_over_stages(features, scales, hole, lambda score: F.relu(1.0 + sign * score))

    def generator_term(self, features: list[torch.Tensor], scales: list[torch.Tensor],
                       hole: torch.Tensor) -> torch.Tensor:
        """What the generator maximises: the mean score of its output where it sees the hole."""
        return self._mean_over_stages(features, scales, hole, lambda score: score)


CRITICS = ("patch", "features")


@dataclass(frozen=True)
class PartsTrainConfig:
    steps: int = 2000
    batch_size: int = 12
    lr: float = 2e-4
    lr_discriminator: float = 2e-4
    seed: int = 0
    max_photos: int | None = 3000
    log_every: int = 50
    save_every: int = 500
    adversarial_weight: float = PARTS_ADVERSARIAL_WEIGHT
    perceptual_weight: float = PERCEPTUAL_WEIGHT
    # The mouth's tone term (``tone_distance``); 0 leaves it out.
    tone_weight: float = PARTS_TONE_WEIGHT
    # The edge term (``edge_distance``), both parts; 0 leaves it out.
    edge_weight: float = PARTS_EDGE_WEIGHT
    photo_share: float = PARTS_PHOTO_SHARE
    # "patch": a patch discriminator on the crop's pixels; "features": heads on the frozen face
    # ResNet's stages (``FeatureCritic``; needs the ResNet installed).
    critic: str = "patch"
    # The part models trained (steps alternate between them); the others are kept as they start.
    parts: tuple[str, ...] = ("mouth", "eye")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError("--steps and --batch-size must be at least 1")
        if not self.parts or set(self.parts) - {"mouth", "eye"}:
            raise UsageError(f"parts to train must be mouth, eye or both, got {', '.join(self.parts) or 'none'}")
        if self.tone_weight < 0:
            raise UsageError(f"--tone-weight must not be negative, got {self.tone_weight}")
        if self.edge_weight < 0:
            raise UsageError(f"--edge-weight must not be negative, got {self.edge_weight}")
        if self.lr <= 0 or self.lr_discriminator <= 0:
            raise UsageError("learning rates must be positive")
        if self.critic not in CRITICS:
            raise UsageError(f"unknown critic {self.critic!r}; choose from {', '.join(CRITICS)}")


def installed_perceptual() -> PartPerceptual | None:
    try:
        from ..models.face_resnet import load_face_resnet
        return PartPerceptual(load_face_resnet())
    except Exception as error:  # noqa: BLE001 - any failure to find or read the network: train without it
        log.warning("face ResNet not available (%s); part models are trained and measured without the perceptual distance", error)
        return None


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, sampler: PairSampler, batch_size: int, first_step: int, steps: int,
                 parts: tuple[str, ...]):
        self.sampler, self.batch_size, self.first_step, self.steps = sampler, batch_size, first_step, steps
        self.parts = parts

    def __iter__(self) -> Iterator[tuple[int, str, dict[str, torch.Tensor]]]:
        import cv2
        cv2.setNumThreads(1)
        for step in range(self.first_step, self.steps):
            part = self.parts[step % len(self.parts)]
            yield step, part, collate([self.sampler.sample(part, step, i) for i in range(self.batch_size)])


def train_parts(datasets: Sequence[str | Path], folder: str | Path, config: PartsConfig,
                train: PartsTrainConfig, progress: Callable[[int], None] | None = None,
                workers: int = 1, start_from: LearnedParts | None = None,
                earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train both part models and write them into the checkpoint ``folder`` (``LearnedParts.save``,
    also every ``save_every`` steps). ``start_from``: part models to go on training (their
    discriminators start afresh), ``earlier`` their training record, kept in the new one.
    Returns the training record saved with them."""
    torch.manual_seed(train.seed)
    bank = FrameBank.load(datasets, train.max_photos, train.seed)
    sampler = PairSampler(bank, config, train.seed, train.photo_share)
    log.info("part models: %d face crops (%d from videos), %d open mouths", len(bank), int(bank.is_video.sum()),
             len(sampler.open_video_frames) + len(sampler.open_photo_frames))
    parts = LearnedParts(config)
    if start_from is not None:
        if not start_from.config.same_sizes(config):
            raise UsageError("the part models to start from have another size than the chosen preset")
        for part in ("mouth", "eye"):
            if start_from.config.residual(part) == config.residual(part):
                parts.net(part).load_state_dict(start_from.net(part).state_dict())
            elif part not in train.parts:  # it would be saved untrained in place of the one given
                raise UsageError(f"the {part} model to start from has the other mouth mode and is not being "
                                 f"trained; train it too or keep its mode")
            else:  # a blank-hole model is no start for one that corrects the synthetic fill, or back
                log.info("the %s model starts afresh (it now %s the synthetic interior)", part,
                         "corrects" if config.residual(part) else "no longer sees")
    parts.train().requires_grad_(True)
    perceptual = installed_perceptual()
    if train.critic == "features":
        if perceptual is None:
            raise UsageError("--critic features needs dlib's face ResNet (face-recognition-models installed)")
        channels = [f.shape[1] for f in perceptual.stage_features(torch.zeros(1, 3, config.eye_size,
                                                                               config.eye_size))]
        critics = nn.ModuleDict({"mouth": FeatureCritic(channels), "eye": FeatureCritic(channels)})
    else:
        critics = nn.ModuleDict({"mouth": PatchDiscriminator(config.channels),
                                 "eye": PatchDiscriminator(config.channels)})
    optim_g = {p: torch.optim.Adam(parts.net(p).parameters(), lr=train.lr, betas=(0.5, 0.999))
               for p in ("mouth", "eye")}
    optim_d = {p: torch.optim.Adam(critics[p].parameters(), lr=train.lr_discriminator, betas=(0.5, 0.999))
               for p in ("mouth", "eye")}
    loader = torch.utils.data.DataLoader(_Batches(sampler, train.batch_size, 0, train.steps, train.parts),
                                         batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    history: dict[str, list[float]] = {f"{p}_{k}": [] for p in ("mouth", "eye") for k in ("l1", "perceptual", "d")}
    history["mouth_tone"] = []
    history.update({f"{p}_edge": [] for p in ("mouth", "eye")})
    worst_d = 0.0
    started = time.monotonic()
    record: dict[str, Any] = {}
    for step, part, batch in loader:
        net, critic = parts.net(part), critics[part]
        hole = batch["hole"]
        target = hole * batch["target"] + (1.0 - hole) * batch["warped"]
        generated = net(part_inputs(batch["warped"], hole, batch["shape"], batch["source"], batch["source_shape"],
                                    keep_hole=config.residual(part)))
        composite = hole * generated + (1.0 - hole) * batch["warped"]
        area = hole.sum(dim=(1, 2, 3)).clamp_min(1.0) * 3.0
        l1 = ((composite - target).abs().sum(dim=(1, 2, 3)) / area).mean()

        if perceptual is not None:
            with torch.no_grad():
                real_features = perceptual.stage_features(target)
            fake_features = perceptual.stage_features(composite)
            p_loss = PartPerceptual.distance(fake_features, real_features)
        else:
            p_loss = torch.zeros(())
        if train.critic == "features":
            scales = [f.abs().mean().clamp_min(1e-6) for f in real_features]
            d_loss = (critic.scores(real_features, scales, hole, -1.0)
                      + critic.scores([f.detach() for f in fake_features], scales, hole, 1.0))
        else:
            patches = PatchDiscriminator.patch_weights(hole)
            d_loss = (_patch_mean(F.relu(1.0 - critic(target, hole)), patches)
                      + _patch_mean(F.relu(1.0 + critic(composite.detach(), hole)), patches))
        optim_d[part].zero_grad(set_to_none=True)
        d_loss.backward()
        optim_d[part].step()

        if train.critic == "features":
            adversarial = critic.generator_term(fake_features, scales, hole)
        else:
            adversarial = _patch_mean(critic(composite, hole), patches)
        loss = L1_WEIGHT * l1 - train.adversarial_weight * adversarial + train.perceptual_weight * p_loss
        if part == "mouth":
            # Logged either way (to compare runs); without its weight no graph is built for it
            # (25 instead of 77 ms a step on 12 mouth crops, of a step of about 550 ms).
            with torch.set_grad_enabled(train.tone_weight > 0):
                tone = tone_distance(composite, target, batch["shape"])
            history["mouth_tone"].append(float(tone.detach()))
            if train.tone_weight > 0:
                loss = loss + train.tone_weight * tone
        if train.edge_weight > 0:
            edge = edge_distance(composite, target, hole)
            history[f"{part}_edge"].append(float(edge.detach()))
            loss = loss + train.edge_weight * edge
        if not torch.isfinite(loss) or not torch.isfinite(d_loss):
            raise DivergenceError(f"part model loss is not finite at step {step} ({part})")
        optim_g[part].zero_grad(set_to_none=True)
        loss.backward()
        optim_g[part].step()

        for key, value in (("l1", l1), ("perceptual", p_loss), ("d", d_loss)):
            history[f"{part}_{key}"].append(float(value.detach()))
        worst_d = max(worst_d, float(d_loss.detach()))
        if progress is not None:
            progress(1)
        done = step + 1
        if done % train.log_every == 0 or done == train.steps:
            recent = {k: float(np.mean(v[-train.log_every // 2:])) for k, v in history.items() if v}
            log.info("step %d/%d: %s (%.2f s a step)", done, train.steps,
                     ", ".join(f"{k} {v:.4f}" for k, v in recent.items()), (time.monotonic() - started) / done)
        if done % train.save_every == 0 or done == train.steps:
            recent = {k: round(float(np.mean(v[-100:])), 5) for k, v in history.items() if v}
            record = {"steps": done, "batch_size": train.batch_size, "lr": train.lr,
                      "lr_discriminator": train.lr_discriminator, "seed": train.seed,
                      "datasets": [Path(d).name for d in datasets], "frames": len(bank),
                      "video_frames": int(bank.is_video.sum()), "final_losses": recent,
                      "max_discriminator_loss": round(worst_d, 4),
                      "adversarial_weight": train.adversarial_weight, "perceptual_weight": train.perceptual_weight,
                      "tone_weight": train.tone_weight, "edge_weight": train.edge_weight,
                      "photo_share": train.photo_share, "parts_trained": list(train.parts),
                      "critic": train.critic,
                      **({"started_from": earlier} if earlier is not None else {}),
                      "perceptual": perceptual is not None,
                      "seconds": round(time.monotonic() - started, 1)}
            parts.eval()
            parts.save(folder, record)
            parts.train()
    if not math.isfinite(worst_d):
        raise DivergenceError("part model discriminator diverged")
    return record
