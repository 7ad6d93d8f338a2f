"""The paper's crop protocols (Table 1) on the data at hand, and the results table; the metrics
are in ``metrics``.

Protocols
---------
A subject is a talking video or a person with several photos. Every image is cropped with its
own ``crop_from_landmarks(points, S)`` (S: the model's image size, the same for every method).

- Self-reenactment (per subject and shot count T): the person is made from T shots (a video:
  frames spread evenly over its first half; photos: the first T in name order). Each target (a
  video: frames spread evenly over its second half; photos: the photos after the shot pool) is
  cropped with its own crop, and every method renders it from the target's own crop-space
  landmarks, i.e. at the target's pose. The rendered crop is compared with the real target crop:
  SSIM, PSNR, CSIM and identity distance (both descriptors aligned with the target's landmarks),
  and the landmark error (dlib on the output, when it finds the face near where it should be;
  the share of outputs where it does is the "face" column).
- Cross-identity (each video subject drives the next subject in the list, any kind): the
  driver's target frames are retargeted onto the person's first shot with relative motion,
  exactly as the main command does. CSIM / identity distance between each output and the
  person's first shot crop, and the correlation of the mouth opening of the driver and of the
  output (dlib on the output) per driving sequence, averaged over drivers.

Methods: ``neural`` (the checkpoint, feed-forward with 0 steps and fine-tuned with N steps on
the T shots), ``warp`` (the weights-free piecewise-affine warp of the first shot) and ``copy``
(the first shot's crop unchanged, whatever the target).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import MAX_SHOTS, FinetuneConfig
from ..errors import AnimateFaceError, InputError, UsageError
from ..io.images import decode_image_bytes
from ..landmarks import LandmarkBackend, LandmarkTrack, detect_photo_landmarks
from ..landmarks.crop import crop_from_landmarks
from ..person import Person, Shot
from ..progress import ProgressReporter, SilentProgress
from .metrics import (FaceIdentity, FacePerceptual, csim, detect_near, identity_distance, landmark_error,
                      mouth_correlation, psnr, ssim)

log = logging.getLogger(__name__)

METHODS = ("neural", "warp", "copy")
FID_NOTICE = "FID: not computed (no Inception weights offline)"
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
# Faces smaller than this in a data photo are skipped (as dataset preparation does).
MIN_FACE_PX = 32


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class Frame:
    """One image of a subject with its landmarks (full-image pixels)."""

    name: str
    image: np.ndarray
    points: np.ndarray


@dataclass
class Subject:
    """A held-out subject: a pool of shot frames and the target frames (disjoint)."""

    name: str
    kind: str                 # "video" or "photos"
    pool: list[Frame]
    targets: list[Frame]
    fps: float = 25.0

    def shot_counts(self, requested: Sequence[int]) -> list[int]:
        """The requested shot counts this subject can serve (the others are skipped)."""
        return [t for t in requested if t <= len(self.pool)]

    def shots(self, count: int) -> list[Frame]:
        """``count`` frames spread evenly over the pool (the first one always included)."""
        if not 1 <= count <= len(self.pool):
            raise ValueError(f"{self.name}: {count} shots asked, the pool has {len(self.pool)}")
        picks = np.unique(np.linspace(0, len(self.pool) - 1, count).round().astype(int))
        return [self.pool[i] for i in picks]


@dataclass(frozen=True)
class Candidate:
    """A subject found in the data, before its images are read."""

    name: str
    kind: str                 # "video", "photos" or "tar"
    paths: tuple[str, ...] = ()
    tar: str | None = None
    members: tuple[tuple[str, int, int], ...] = ()

    @property
    def photo_count(self) -> int:
        return len(self.members) if self.kind == "tar" else len(self.paths)


def read_people_file(path: str | Path) -> list[str]:
    """Names of people to evaluate: a training run's ``run.json`` or a checkpoint's ``config.json``
    (their held-out people), or a text file with one name per line (``#`` starts a comment)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the people list ({error})", path) from error
    if path.suffix.lower() == ".json":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON ({error})", path) from error
        names = record
        if isinstance(record, dict):
            # A run's run.json, or a checkpoint's config.json (its training record).
            training = record.get("training")
            names = record.get("heldout_people", training.get("heldout_people") if isinstance(training, dict) else None)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError("expected a list of names or an object with 'heldout_people'", path)
        return names
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def find_candidates(sources: Sequence[str | Path]) -> list[Candidate]:
    """Subjects in video files, folders (of videos, of person photo folders) and LFW-style .tar files."""
    from ..train.dataset import scan_source

    found: dict[str, Candidate] = {}
    for source in map(Path, sources):
        if source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
            units = [Candidate(source.stem, "video", (str(source),))]
        else:
            units = [Candidate(unit.video if unit.kind == "video" else unit.person, unit.kind, unit.paths,
                               unit.tar, unit.members) for unit in scan_source(source)]
        for unit in units:
            name, suffix = unit.name, 2
            while name in found:
                name, suffix = f"{unit.name}~{suffix}", suffix + 1
            found[name] = Candidate(name, unit.kind, unit.paths, unit.tar, unit.members)
    return list(found.values())


def select_candidates(candidates: Sequence[Candidate], min_photos: int, max_subjects: int | None,
                      seed: int = 0, people: Sequence[str] | None = None) -> list[Candidate]:
    """Videos, and photo people with at least ``min_photos`` photos; only ``people`` when given;
    then ``max_subjects`` of them in a seeded order (deterministic for a seed)."""
    kept = [c for c in candidates if c.kind == "video" or c.photo_count >= min_photos]
    if people is not None:
        wanted = set(people)
        kept = [c for c in kept if c.name in wanted or Path(c.name).name in wanted]
    # A seeded hash order: the same subjects for the same seed, whatever order the files come in.
    kept.sort(key=lambda c: hashlib.sha1(f"{seed}:{c.name}".encode()).hexdigest())
    return kept[:max_subjects] if max_subjects is not None else kept


def _photos(candidate: Candidate) -> Iterator[tuple[str, np.ndarray]]:
    from ..io.images import load_image

    if candidate.kind == "tar":
        assert candidate.tar is not None
        try:
            with open(candidate.tar, "rb") as handle:
                for name, offset, size in candidate.members:
                    handle.seek(offset)
                    yield f"{candidate.tar}::{name}", decode_image_bytes(handle.read(size), f"{candidate.tar}::{name}")
        except (OSError, tarfile.TarError) as error:
            raise InputError(f"cannot read the archive ({error})", candidate.tar) from error
    else:
        for path in candidate.paths:
            yield path, load_image(path)


def _with_landmarks(backend: LandmarkBackend, items: Iterator[tuple[str, np.ndarray]]) -> list[Frame]:
    frames = []
    for name, image in items:
        try:
            points = detect_photo_landmarks(backend, image, min_face_px=MIN_FACE_PX, path=name)
        except AnimateFaceError as error:
            log.info("skipped %s", error)
            continue
        frames.append(Frame(name, image, points))
    return frames


def load_subject(candidate: Candidate, backend: LandmarkBackend, max_shots: int, max_targets: int) -> Subject | None:
    """Read a subject's frames and their landmarks; None when it has too few usable frames.

    A video gives ``max_shots`` frames spread over its first half (the shot pool) and
    ``max_targets`` over its second half; a photo person gives the first photos in name order as
    the pool (up to ``max_shots``, leaving at least one) and up to ``max_targets`` of the rest.
    """
    if candidate.kind == "video":
        from ..io.video import iter_frames, probe_video

        path = candidate.paths[0]
        info = probe_video(path)
        half = info.frame_count // 2
        if half < 1:
            log.warning("%s: too short to evaluate (%d frames)", path, info.frame_count)
            return None
        pool_at = np.unique(np.linspace(0, half - 1, max_shots).round().astype(int))
        target_at = np.unique(np.linspace(half, info.frame_count - 1, max_targets).round().astype(int))
        wanted = {int(i): "pool" for i in pool_at} | {int(i): "target" for i in target_at}
        chosen: dict[str, list[tuple[str, np.ndarray]]] = {"pool": [], "target": []}
        last = max(wanted)
        for index, frame in enumerate(iter_frames(path, info=info)):
            if index in wanted:
                chosen[wanted[index]].append((f"{path}#{index}", frame))
            if index >= last:
                break
        pool = _with_landmarks(backend, iter(chosen["pool"]))
        targets = _with_landmarks(backend, iter(chosen["target"]))
        fps = info.fps
    else:
        frames = _with_landmarks(backend, _photos(candidate))
        pool_size = min(max_shots, len(frames) - 1)
        pool, targets, fps = frames[:pool_size], frames[pool_size:pool_size + max_targets], 25.0
    if not pool or not targets:
        log.warning("%s: skipped (faces found in %d shot and %d target frames)", candidate.name, len(pool),
                    len(targets))
        return None
    kind = "video" if candidate.kind == "video" else "photos"
    return Subject(candidate.name, kind, pool, targets, fps)


# ----------------------------------------------------------------------------------------------
# Methods


class CopyRenderer:
    """The "copy first shot" baseline: the first shot's crop, whatever the target."""

    def __init__(self, person: Person):
        self.image = person.photo.crop_image
        self.size = self.image.shape[0]

    def render(self, target_points: np.ndarray) -> np.ndarray:
        return np.repeat(self.image[None], len(target_points), axis=0)


def make_shots(frames: Sequence[Frame], crop_size: int) -> list[Shot]:
    """Shots cropped exactly as the main command crops photos."""
    return [Shot.from_photo(f.name, f.image, f.points, crop_from_landmarks(f.points, crop_size)) for f in frames]


def _plain_person(shots: list[Shot]) -> Person:
    return Person(shots=shots, embedding=torch.zeros(0), adain_params=torch.zeros(0),
                  discriminator_vector=torch.zeros(0))


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate."""

    shots: tuple[int, ...] = (1, 8, 32)
    finetune_steps: int = 0
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    crop_size: int = 256
    cross_identity: bool = True

    def __post_init__(self) -> None:
        if not self.shots or any(not 1 <= t <= MAX_SHOTS for t in self.shots):
            raise UsageError(f"--shots must be between 1 and {MAX_SHOTS}, got {','.join(map(str, self.shots))}")
        if self.finetune_steps < 0:
            raise UsageError(f"--finetune-steps must be >= 0, got {self.finetune_steps}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UsageError(f"unknown method {', '.join(unknown) or '(none)'}; choose from: {', '.join(METHODS)}")
        if not 16 <= self.crop_size <= 1024:
            raise UsageError(f"crop size must be between 16 and 1024, got {self.crop_size}")

    @property
    def variants(self) -> list[tuple[str, int | None]]:
        """(method, fine-tuning steps) pairs: the neural method at 0 and N steps, the others once."""
        out: list[tuple[str, int | None]] = []
        for method in self.methods:
            if method == "neural":
                out += [("neural", 0)] + ([("neural", self.finetune_steps)] if self.finetune_steps else [])
            else:
                out.append((method, None))
        return out


@dataclass
class Evaluator:
    """Renders each subject with each method and measures it. The heavy parts are passed in."""

    backend: LandmarkBackend
    identity: FaceIdentity
    config: EvalConfig
    model: Any = None                       # TalkingHeadModel, needed for the neural method
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    content_loss: Any = None                # ContentLoss, needed when fine-tuning
    perceptual: FacePerceptual | None = None  # None: no perceptual distance in the records
    _descriptors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if "neural" in self.config.methods and self.model is None:
            raise UsageError("the neural method needs weights")
        if self.config.finetune_steps and "neural" in self.config.methods and self.content_loss is None:
            raise UsageError("fine-tuning needs a content loss")

    # -- people and renderers

    def renderers(self, shots: list[Shot]) -> list[tuple[str, int | None, Any]]:
        """(method, steps, renderer) for each variant, all made from the same shots."""
        from ..finetune import finetune_person
        from ..render.renderers import NeuralRenderer, WarpRenderer

        out: list[tuple[str, int | None, Any]] = []
        for method, steps in self.config.variants:
            if method == "neural":
                torch.manual_seed(self.config.seed)
                person = finetune_person(self.model, shots, FinetuneConfig(steps=steps or 0, seed=self.config.seed),
                                         self.content_loss if steps else None, self.device)
                out.append((method, steps, NeuralRenderer(self.model, person, self.device)))
            elif method == "warp":
                out.append((method, steps, WarpRenderer(_plain_person(shots))))
            else:
                out.append((method, steps, CopyRenderer(_plain_person(shots))))
        return out

    def _real_descriptor(self, key: str, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        if key not in self._descriptors:
            self._descriptors[key] = self.identity.descriptor(image, points)
        return self._descriptors[key]

    def _detect(self, outputs: np.ndarray, driving: np.ndarray) -> list[np.ndarray | None]:
        return [detect_near(self.backend, image, points) for image, points in zip(outputs, driving)]

    # -- protocols

    def self_reenactment(self, subject: Subject, shot_count: int,
                         renderers: Sequence[tuple[str, int | None, Any]]) -> list[dict[str, Any]]:
        """One record per (variant, target): the target rendered at its own pose vs the real crop."""
        size = self.config.crop_size
        crops = [crop_from_landmarks(t.points, size) for t in subject.targets]
        real = np.stack([c.crop_image(t.image) for c, t in zip(crops, subject.targets)])
        driving = np.stack([c.points_to_crop(t.points) for c, t in zip(crops, subject.targets)])
        real_ids = [self._real_descriptor(f"{t.name}@{size}", r, p)
                    for t, r, p in zip(subject.targets, real, driving)]
        records = []
        for method, steps, renderer in renderers:
            outputs = renderer.render(driving)
            detected = self._detect(outputs, driving)
            perceptual = (self.perceptual.distances(outputs, real, driving) if self.perceptual is not None
                          else [None] * len(outputs))
            for index, (output, points, found) in enumerate(zip(outputs, driving, detected)):
                descriptor = self.identity.descriptor(output, points)
                records.append({
                    "protocol": "self", "subject": subject.name, "target": subject.targets[index].name,
                    "method": method, "shots": shot_count, "steps": steps,
                    "ssim": ssim(output, real[index]), "psnr": psnr(output, real[index]),
                    "csim": csim(descriptor, real_ids[index]),
                    "identity_distance": identity_distance(descriptor, real_ids[index]),
                    "perceptual": perceptual[index],
                    "landmark_error": None if found is None else landmark_error(points, found),
                    "face_found": found is not None,
                })
        return records

    def cross_identity(self, driver: Subject, subject: Subject, shot_count: int, photo: Shot,
                       renderers: Sequence[tuple[str, int | None, Any]]) -> list[dict[str, Any]]:
        """One record per (variant, driving sequence): ``subject`` (first shot ``photo``) driven by
        ``driver``'s target frames with relative motion, as the main command drives a photo."""
        from ..render.pipeline import target_crop_points

        photo_id = self._real_descriptor(f"{photo.path}@{photo.crop.size}", photo.crop_image, photo.crop_points)
        driver_points = np.stack([t.points for t in driver.targets])
        height, width = driver.targets[0].image.shape[:2]
        track = LandmarkTrack(driver_points, np.ones(len(driver_points), bool), driver.fps, (width, height))
        driving = target_crop_points(photo, track, relative=True)
        records = []
        for method, steps, renderer in renderers:
            outputs = renderer.render(driving)
            detected = self._detect(outputs, driving)
            descriptors = [self.identity.descriptor(o, p) for o, p in zip(outputs, driving)]
            found = [i for i, d in enumerate(detected) if d is not None]
            correlation = (mouth_correlation(driver_points[found], np.stack([detected[i] for i in found]))
                           if found else math.nan)
            records.append({
                "protocol": "cross", "subject": subject.name, "driver": driver.name,
                "method": method, "shots": shot_count, "steps": steps,
                "csim": float(np.mean([csim(d, photo_id) for d in descriptors])),
                "identity_distance": float(np.mean([identity_distance(d, photo_id) for d in descriptors])),
                "mouth_corr": correlation, "face_found": len(found) / len(outputs), "frames": len(outputs),
            })
        return records

    def run(self, subjects: Sequence[Subject], progress: ProgressReporter | None = None) -> list[dict[str, Any]]:
        """Every protocol for every subject and shot count; the per-target / per-sequence records.

        Each person (subject x T, every method) is made once and serves both protocols: its own
        targets (self-reenactment) and the previous video subject in the list driving it
        (cross-identity; the list wraps around).
        """
        progress = progress or SilentProgress()
        drivers_of: dict[int, list[Subject]] = {}
        if self.config.cross_identity:
            videos = [i for i, s in enumerate(subjects) if s.kind == "video"]
            if not videos or len(subjects) < 2:
                log.warning("cross-identity skipped: it needs a driving video and another subject")
            else:
                for i in videos:
                    drivers_of.setdefault((i + 1) % len(subjects), []).append(subjects[i])
        units = [(j, t) for j, subject in enumerate(subjects) for t in subject.shot_counts(self.config.shots)]
        records: list[dict[str, Any]] = []
        with progress.stage("evaluate", len(units)) as advance:
            for j, shot_count in units:
                subject = subjects[j]
                shots = make_shots(subject.shots(shot_count), self.config.crop_size)
                renderers = self.renderers(shots)
                records += self.self_reenactment(subject, shot_count, renderers)
                for driver in drivers_of.get(j, []):
                    records += self.cross_identity(driver, subject, shot_count, shots[0], renderers)
                advance(1)
        return records


# ----------------------------------------------------------------------------------------------
# Summary


METRIC_KEYS = {"self": ("ssim", "psnr", "csim", "identity_distance", "perceptual", "landmark_error", "face_found"),
               "cross": ("csim", "identity_distance", "mouth_corr", "face_found")}


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(numbers)) if numbers else None


def summarise(records: Sequence[dict[str, Any]], config: EvalConfig) -> list[dict[str, Any]]:
    """One row per (method, shots, steps): self-reenactment means over all targets, cross-identity
    means over driving sequences (NaN correlations, from motionless outputs, left out)."""
    rows = []
    order = {variant: i for i, variant in enumerate(config.variants)}
    keys = sorted({(r["method"], r["shots"], r["steps"]) for r in records},
                  key=lambda k: (k[1], order[(k[0], k[2])]))
    for method, shots, steps in keys:
        row: dict[str, Any] = {"method": method, "shots": shots, "steps": steps}
        for protocol, metrics in METRIC_KEYS.items():
            chosen = [r for r in records if r["protocol"] == protocol and
                      (r["method"], r["shots"], r["steps"]) == (method, shots, steps)]
            row[protocol] = {"count": len(chosen), "subjects": len({r["subject"] for r in chosen}),
                             **{m: _mean([r[m] for r in chosen]) for m in metrics}}
        rows.append(row)
    return rows


# Paired against the warp: the metrics whose small differences decide whether a model beats it.
# (metric, +1 = higher is better)
PAIRED_METRICS = (("ssim", 1.0), ("identity_distance", -1.0), ("perceptual", -1.0))


def paired_against_warp(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Self-reenactment: each neural variant minus the warp on the same targets (a paired difference,
    so the spread between targets cancels): mean, its standard error, and the share of targets where
    the neural output is better. Empty without warp records."""
    own = [r for r in records if r["protocol"] == "self"]
    warp = {(r["shots"], r["subject"], r["target"]): r for r in own if r["method"] == "warp"}
    pairs: dict[tuple[int, int], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in own:
        partner = warp.get((r["shots"], r["subject"], r["target"]))
        if r["method"] == "neural" and partner is not None:
            pairs.setdefault((r["shots"], r["steps"]), []).append((r, partner))
    out = []
    for (shots, steps), variant_pairs in sorted(pairs.items()):
        for metric, sign in PAIRED_METRICS:
            diffs = np.array([a[metric] - b[metric] for a, b in variant_pairs
                              if a.get(metric) is not None and b.get(metric) is not None], np.float64)
            diffs = diffs[np.isfinite(diffs)]
            if not len(diffs):
                continue
            error = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
            out.append({"shots": shots, "steps": steps, "metric": metric, "mean": float(diffs.mean()),
                        "se": error, "better": float((sign * diffs > 0).mean()), "count": len(diffs)})
    return out


def subject_record(subject: Subject) -> dict[str, Any]:
    return {"name": subject.name, "kind": subject.kind, "pool": [f.name for f in subject.pool],
            "targets": [f.name for f in subject.targets]}


def evaluate_sources(sources: Sequence[str | Path], backend: LandmarkBackend, config: EvalConfig, *,
                     model: Any = None, device: torch.device | None = None, content_loss: Any = None,
                     max_subjects: int | None = None, max_frames: int = 8, min_photos: int | None = None,
                     people: Sequence[str] | None = None,
                     progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Find the subjects in ``sources``, evaluate them, and return the report (rows, records, subjects)."""
    progress = progress or SilentProgress()
    if max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {max_frames}")
    max_shots = max(config.shots)
    min_photos = min_photos if min_photos is not None else max_shots + 1
    candidates = select_candidates(find_candidates(sources), min_photos, max_subjects, config.seed, people)
    if not candidates:
        raise InputError(f"no subjects to evaluate: no video, and no person with {min_photos} or more photos",
                         ", ".join(map(str, sources)))
    subjects = []
    with progress.stage("subjects", len(candidates)) as advance:
        for candidate in candidates:
            subject = load_subject(candidate, backend, max_shots, max_frames)
            if subject is not None:
                subjects.append(subject)
            advance(1)
    if not subjects:
        raise InputError("no subject has usable faces", ", ".join(map(str, sources)))
    evaluator = Evaluator(backend, FaceIdentity(), config, model, device or torch.device("cpu"), content_loss,
                          FacePerceptual())
    records = evaluator.run(subjects, progress)
    return {"rows": summarise(records, config), "paired": paired_against_warp(records), "records": records,
            "subjects": [subject_record(s) for s in subjects], "fid": FID_NOTICE}


def run_crop_protocol(data: Sequence[str | Path], weights: str | None, shots: Sequence[int], finetune_steps: int,
                      methods: Sequence[str], *, max_subjects: int | None = None, max_frames: int = 8,
                      min_photos: int | None = None, people: Path | None = None, cross_identity: bool = True,
                      seed: int = 0, landmarks: str = "dlib", device: str = "auto",
                      progress: ProgressReporter | None = None) -> dict[str, Any]:
    """The whole crop protocol as ``animate-face eval`` runs it: the checkpoint loaded when the neural
    renderer is measured, the subjects found and evaluated. Returns the report document: the date,
    seconds, machine, weights and settings, then ``evaluate_sources``' rows, records and subjects."""
    import datetime
    import time

    from ..landmarks import create_backend
    from ..render.renderers import resolve_device
    from .report import machine_record

    names = read_people_file(people) if people is not None else None
    torch_device = resolve_device(device)
    model, weights_record, content_loss, crop_size = None, None, None, 256
    if "neural" in methods:
        from ..hub import resolve_weights
        from ..models import TalkingHeadModel
        from ..models.bundle import read_checkpoint_config

        folder = resolve_weights(weights)
        model_config, training = read_checkpoint_config(folder)
        model = TalkingHeadModel.from_pretrained(folder, device=torch_device).eval()
        crop_size = model_config.image_size
        weights_record = {"spec": weights, "path": str(folder), "model": model_config.to_dict(), "training": training}
        if finetune_steps:
            from ..losses import ContentLoss

            content_loss = ContentLoss.from_available()
    config = EvalConfig(shots=tuple(shots), finetune_steps=finetune_steps, methods=tuple(methods), seed=seed,
                        crop_size=crop_size, cross_identity=cross_identity)
    backend = create_backend(landmarks, device=str(torch_device))
    started = time.perf_counter()
    report = evaluate_sources(data, backend, config, model=model, device=torch_device, content_loss=content_loss,
                              max_subjects=max_subjects, max_frames=max_frames, min_photos=min_photos,
                              people=names, progress=progress)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "machine": {**machine_record(), "device": str(torch_device)},
        "weights": weights_record,
        "settings": {"data": [str(p) for p in data], "shots": list(shots), "finetune_steps": finetune_steps,
                     "methods": list(methods), "max_subjects": max_subjects, "max_frames": max_frames,
                     "min_photos": min_photos, "people": str(people) if people else None, "seed": seed,
                     "landmarks": backend.name, "crop_size": crop_size, "cross_identity": cross_identity,
                     "content_loss": content_loss.description if content_loss is not None else None},
        **report,
    }
