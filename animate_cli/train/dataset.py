"""Training data: ``prepare`` turns raw photos and videos into a sharded dataset of face crops
with landmarks, and ``EpisodeDataset`` draws meta-learning episodes from it.

Dataset layout (``format_version`` 1)::

    DATASET/index.json        people, videos, frame counts, crop size, shard list, finished sources
    DATASET/report.json       skipped files with reasons, filtered people
    DATASET/shard-00000.npz   images uint8 (N, S, S, 3), points float32 (N, 68, 2) in crop pixels,
                              person int32 (N,), video int32 (N,), names str (N,) (source file)

Every face is cropped exactly as inference crops a photo: ``crop_from_landmarks(points, S)``
of the largest face's dlib landmarks, landmarks mapped into the crop.

How an episode is made (``EpisodeDataset``)
--------------------------------------------
An episode is K shots plus one target frame of one training video, as in the paper. A "video"
is a video file (or clip), or all photos of one person in a photo folder / LFW tar. Episode
number ``p`` is a pure function of ``(seed, p)``: the video is ``p``'s entry in the epoch's
seeded permutation of the training videos (epoch = p // number of videos), and every random
choice below comes from ``numpy.random.default_rng([seed, p])``. So episodes are reproducible,
and a resumed run continues the data order from its step alone.

1. Video with at least K + 1 frames: K + 1 distinct frames drawn without replacement; the first
   is the target, the others the shots.
2. Video with 2..K frames: the target is one frame, the K shots are drawn with replacement from
   the other frames; a repeated frame gets a small geometric jitter (rotation <= 3 degrees,
   scale +-3%, shift +-2% of the crop, applied to image and landmarks alike), so no two shots
   are the same pixels.
3. Video with 1 frame (a person with a single photo): motion by augmentation. Each of the K + 1
   frames is the photo warped (``FaceWarper``, piecewise affine with a synthetic mouth interior)
   to randomly perturbed landmarks: the mouth opened (lower lip and chin down by up to 15% of
   the face size) or closed (the lip gap shrunk), the eyelids lowered (a blink with
   probability 0.3, else up to 30%), and the whole face rotated (+-8 degrees), scaled (+-5%)
   and shifted (+-3% of the face size); then the small geometric jitter of case 2. One colour
   jitter (per-channel gain +-8%, brightness +-12 levels, contrast +-15%, saturation +-20%),
   drawn once per episode, is applied to all its frames, so the target's colours stay
   predictable from the shots.

Episode mix (``mix``): by default episodes visit the training videos uniformly (the epoch
permutation above), as in the paper. With ``mix`` (e.g. ``{"video": 0.4, "photos": 0.4,
"single": 0.2}``) episode ``p`` first draws its kind with those weights, then a video of that
kind uniformly, both from ``default_rng([seed, p, MIX_STREAM])``. The kinds: "video" (frames
of a video file), "photos" (a person with several photos), "single" (a person with one photo,
case 3). This keeps a handful of talking videos, which carry real mouth motion, from drowning
among thousands of photo people. Kinds the data lacks are dropped and the rest renormalised.

Landmark images are drawn from the (jittered, warped) landmarks with ``draw_landmark_images``.
With ``guidance="warp"`` the episode also carries the generator's warped input: the shot
nearest in pose to the target (``nearest_shot_indices``, as at inference) warped to the
target's landmarks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..config import FORMAT_VERSION, GUIDANCE_MODES
from ..errors import AnimateFaceError, InputError, OutputError, UsageError
from ..io.atomic import ensure_folder
from ..io.images import IMAGE_EXTENSIONS, decode_image_bytes, load_image
from ..landmarks.crop import crop_from_landmarks
from ..landmarks.perturb import apply_affine, perturb_landmarks, rotation_about
from ..tensors import images_to_tensor

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
REPORT_NAME = "report.json"
DATASET_FORMAT_VERSION = FORMAT_VERSION
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
# Frames per shard: about 50 MB of uint8 crops at 128 px.
DEFAULT_SHARD_SIZE = 1000
# Faces smaller than this (pixels) are skipped: the crop would be mostly upsampling blur.
MIN_FACE_PX = 32

# Augmentation ranges (see the module docstring; the landmark perturbation's are in landmarks/perturb.py).
JITTER_ROTATION_DEG = 3.0
JITTER_SCALE = 0.03
JITTER_SHIFT = 0.02

# Episode kinds for ``EpisodeDataset(mix=...)`` (see the module docstring).
EPISODE_KINDS = ("video", "photos", "single")
MIX_STREAM = 0x313


def video_kind(entry: Mapping[str, Any]) -> str:
    """The episode kind of an index video entry (datasets written before kinds were recorded
    count every multi-frame entry as "photos")."""
    if int(entry["count"]) <= 1:
        return "single"
    return "video" if entry.get("kind") == "video" else "photos"


def check_mix(weights: Mapping[str, float]) -> dict[str, float]:
    """Episode weights by kind, checked: known kinds, finite weights >= 0, at least one positive."""
    for kind, weight in weights.items():
        if kind not in EPISODE_KINDS:
            raise UsageError(f"--mix: unknown episode kind {kind!r}; use {', '.join(EPISODE_KINDS)}")
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"--mix: {kind} must be a weight >= 0, got {weight:g}")
    if sum(weights.values()) <= 0:
        raise UsageError("--mix: give at least one positive weight, e.g. video=0.4,photos=0.4,single=0.2")
    return dict(weights)


def parse_mix(text: str) -> dict[str, float]:
    """``"video=0.4,photos=0.4,single=0.2"`` -> weights by kind (kinds left out weigh 0)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, _, value = part.partition("=")
        kind = kind.strip()
        try:
            weights[kind] = float(value)
        except ValueError:
            raise UsageError(f"--mix: {kind} needs a number, got {value.strip()!r}") from None
    return check_mix(weights)


# ----------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class SourceUnit:
    """One unit of preparation work, finished (and recorded) as a whole.

    ``kind`` is "photos" (files of one person), "tar" (members of an uncompressed tar, as
    (name, data offset, size)) or "video" (one video file).
    """

    id: str
    kind: str
    person: str
    video: str
    paths: tuple[str, ...] = ()
    tar: str | None = None
    members: tuple[tuple[str, int, int], ...] = ()

    @property
    def file_count(self) -> int:
        return len(self.members) if self.kind == "tar" else len(self.paths)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def scan_source(source: Path) -> list[SourceUnit]:
    """The units of one source: a folder (VoxCeleb ``person/video/clip.mp4``, plain videos,
    ``Name/*.jpg`` photos) or an uncompressed ``.tar`` of photos (LFW ``lfw/Name/*.jpg``).

    Photos in a sub-folder are one person named by the folder's relative path; photos directly
    in the source are one person each. A video directly in the source is one person (its stem);
    a deeper video belongs to the person of its first folder.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError("no such file or folder", source)
    root = str(source.resolve())
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise InputError("is neither a folder nor a .tar archive", source)
        return _scan_tar(source, root)

    photos: dict[str, list[str]] = {}
    units = []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and _visible(p, source)):
        relative = path.relative_to(source)
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            group = relative.parent.as_posix() if len(relative.parts) > 1 else f"{relative.stem}"
            photos.setdefault(group, []).append(str(path))
        elif suffix in VIDEO_EXTENSIONS:
            person = relative.parts[0] if len(relative.parts) > 1 else relative.stem
            video = relative.with_suffix("").as_posix()
            units.append(SourceUnit(id=f"{root}::{relative.as_posix()}", kind="video", person=person,
                                    video=video, paths=(str(path),)))
    for group, paths in photos.items():
        units.append(SourceUnit(id=f"{root}::{group}/", kind="photos", person=group, video=f"{group}/photos",
                                paths=tuple(paths)))
    return sorted(units, key=lambda unit: unit.id)


def _scan_tar(path: Path, root: str) -> list[SourceUnit]:
    try:
        # "r:" (no compression): members are then read by offset, without unpacking the archive.
        with tarfile.open(path, "r:") as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
    except tarfile.ReadError as error:
        raise InputError(f"cannot read the tar archive ({error}); compressed archives must be "
                         "decompressed first", path) from error
    groups: dict[str, list[tuple[str, int, int]]] = {}
    for member in members:
        name = Path(member.name)
        if name.suffix.lower() not in IMAGE_EXTENSIONS or len(name.parts) < 2 or name.name.startswith("."):
            continue
        groups.setdefault(name.parent.name, []).append((member.name, member.offset_data, member.size))
    return [SourceUnit(id=f"{root}::{person}/", kind="tar", person=person, video=f"{person}/photos", tar=str(path),
                       members=tuple(sorted(items)))
            for person, items in sorted(groups.items())]


def _stable_order(name: str) -> str:
    """A seed-free pseudo-random order of names, so ``--limit-people`` picks a varied subset."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def select_units(units: Sequence[SourceUnit], limit_people: int | None, min_photos: int) -> tuple[list[SourceUnit], int]:
    """Drop photo people with fewer than ``min_photos`` files, then keep ``limit_people`` people
    (a stable hash order of names). Returns (units, number of people filtered by min_photos)."""
    kept, filtered = [], set()
    for unit in units:
        if unit.kind != "video" and unit.file_count < min_photos:
            filtered.add(unit.person)
        else:
            kept.append(unit)
    if limit_people is not None:
        people = sorted({unit.person for unit in kept}, key=_stable_order)[:limit_people]
        chosen = set(people)
        kept = [unit for unit in kept if unit.person in chosen]
    return kept, len(filtered)


# ----------------------------------------------------------------------------------------------
# Workers

_WORKER_BACKEND: Any = None


def _init_worker() -> None:
    """Each worker process builds its own dlib backend; OpenCV threads would fight the others."""
    global _WORKER_BACKEND
    cv2.setNumThreads(1)
    from ..landmarks import create_backend

    _WORKER_BACKEND = create_backend("dlib")


@dataclass
class UnitResult:
    unit_id: str
    person: str
    video: str
    images: np.ndarray
    points: np.ndarray
    names: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    min_photos_failed: bool = False
    kind: str = "photos"           # "video" (frames of one video file) or "photos" (one person's photos)


def _reason(error: AnimateFaceError) -> str:
    text = str(error)
    prefix = f"{error.path}: " if error.path else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _iter_unit_images(unit: SourceUnit, frames_per_video: int) -> Iterator[tuple[str, np.ndarray | AnimateFaceError]]:
    """(name, image or the error that made it unreadable) for each photo or sampled frame."""
    if unit.kind == "photos":
        for path in unit.paths:
            try:
                yield path, load_image(path)
            except InputError as error:
                yield path, error
    elif unit.kind == "tar":
        assert unit.tar is not None
        with open(unit.tar, "rb") as handle:
            for name, offset, size in unit.members:
                handle.seek(offset)
                label = f"{unit.tar}::{name}"
                try:
                    yield label, decode_image_bytes(handle.read(size), label)
                except InputError as error:
                    yield label, error
    else:
        from ..io.video import iter_frames, probe_video

        path = unit.paths[0]
        try:
            info = probe_video(path)
        except InputError as error:
            yield path, error
            return
        # Evenly spread frames, so one video contributes varied poses and mouth shapes.
        wanted = set(np.unique(np.linspace(0, info.frame_count - 1, max(1, frames_per_video)).round().astype(int)))
        for index, frame in enumerate(iter_frames(path, info=info)):
            if index in wanted:
                yield f"{path}#{index}", frame


def process_unit(unit: SourceUnit, size: int, frames_per_video: int, min_photos: int = 1,
                 backend: Any = None) -> UnitResult:
    """Landmarks, crop and crop-space landmarks of every photo / sampled frame of one unit."""
    from ..landmarks import detect_photo_landmarks

    backend = backend if backend is not None else _WORKER_BACKEND
    images, points, names, skipped = [], [], [], []
    for name, image in _iter_unit_images(unit, frames_per_video):
        if isinstance(image, AnimateFaceError):
            skipped.append({"file": name, "reason": _reason(image)})
            continue
        try:
            found = detect_photo_landmarks(backend, image, min_face_px=MIN_FACE_PX, path=name)
        except AnimateFaceError as error:
            skipped.append({"file": name, "reason": _reason(error)})
            continue
        crop = crop_from_landmarks(found, size)
        images.append(crop.crop_image(image))
        points.append(crop.points_to_crop(found))
        names.append(name)
    result = UnitResult(unit.id, unit.person, unit.video,
                        np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                        np.stack(points).astype(np.float32) if points else np.zeros((0, 68, 2), np.float32),
                        names, skipped, kind="video" if unit.kind == "video" else "photos")
    if unit.kind != "video" and 0 < len(images) < min_photos:
        result.min_photos_failed = True
    return result


def _process_in_worker(job: tuple[SourceUnit, int, int, int]) -> UnitResult:
    unit, size, frames_per_video, min_photos = job
    return process_unit(unit, size, frames_per_video, min_photos)


# ----------------------------------------------------------------------------------------------
# Prepare


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did."""

    out: Path
    people: int
    videos: int
    frames: int
    shards: int
    new_units: int
    reused_units: int
    skipped: list[dict[str, str]]
    filtered_people: int
    seconds: float


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write ({error.strerror or error})", path) from error


def read_index(dataset_dir: str | Path) -> dict[str, Any]:
    """The dataset's ``index.json``, checked; raises InputError when missing or of another version."""
    path = Path(dataset_dir) / INDEX_NAME
    if not path.is_file():
        raise InputError(f"not a prepared dataset (no {INDEX_NAME}); run `animate-face prepare` first",
                         Path(dataset_dir))
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the dataset index ({str(error).splitlines()[0]})", path) from error
    if not isinstance(index, dict) or index.get("format_version") != DATASET_FORMAT_VERSION:
        raise InputError(f"dataset format version {index.get('format_version') if isinstance(index, dict) else '?'} "
                         f"is not {DATASET_FORMAT_VERSION}; prepare it again", path)
    return index


class _ShardWriter:
    """Buffers unit results and writes them as shards, committing the units and the index only
    after their shard is on disk (so an interrupted run redoes exactly the unwritten units)."""

    def __init__(self, out: Path, index: dict[str, Any], report: dict[str, Any], shard_size: int):
        self.out, self.index, self.report, self.shard_size = out, index, report, shard_size
        self.buffer: list[UnitResult] = []
        self.people = {name: i for i, name in enumerate(index["people"])}
        self.video_names = {video["name"] for video in index["videos"]}

    def add(self, result: UnitResult) -> None:
        self.buffer.append(result)
        if sum(len(r.names) for r in self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        images, points, person, video, names = [], [], [], [], []
        for result in self.buffer:
            self.report["skipped"].extend(result.skipped)
            if result.min_photos_failed:
                self.report["filtered"].append({"person": result.person, "reason":
                                                f"only {len(result.names)} usable photos"})
                continue
            if not len(result.names):
                continue
            person_index = self.people.setdefault(result.person, len(self.people))
            if person_index == len(self.index["people"]):
                self.index["people"].append(result.person)
            video_index = len(self.index["videos"])
            # The same person and folder name in two sources: keep both videos apart.
            name = result.video if result.video not in self.video_names else f"{result.video}#{video_index}"
            self.video_names.add(name)
            self.index["videos"].append({"name": name, "person": person_index, "count": len(result.names),
                                         "kind": result.kind})
            images.append(result.images)
            points.append(result.points)
            person.append(np.full(len(result.names), person_index, np.int32))
            video.append(np.full(len(result.names), video_index, np.int32))
            names.extend(result.names)
        if images:
            shard = f"shard-{len(self.index['shards']):05d}.npz"
            temporary = self.out / f".{shard}.tmp-{os.getpid()}.npz"
            try:
                np.savez_compressed(temporary, images=np.concatenate(images), points=np.concatenate(points),
                                    person=np.concatenate(person), video=np.concatenate(video),
                                    names=np.array(names, dtype=str))
                os.replace(temporary, self.out / shard)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise OutputError(f"cannot write a shard ({error.strerror or error})", self.out / shard) from error
            self.index["shards"].append({"file": shard, "count": len(names)})
            self.index["count"] += len(names)
        self.index["finished_units"].extend(result.unit_id for result in self.buffer)
        self.buffer = []
        _write_json(self.out / REPORT_NAME, self.report)
        _write_json(self.out / INDEX_NAME, self.index)


def prepare_dataset(sources: Sequence[str | Path], out: str | Path, size: int = 256, frames_per_video: int = 32,
                    workers: int = 2, progress: Callable[[int], None] | None = None,
                    limit_people: int | None = None, min_photos: int = 1,
                    shard_size: int = DEFAULT_SHARD_SIZE) -> PrepareReport:
    """Turn photo folders, LFW tars and video folders into a sharded dataset in ``out``.

    Resumable: sources (units: one person's photos, one video) finished by an earlier run are
    recorded in ``index.json`` and skipped. Unreadable files and photos without a usable face are
    skipped and listed in ``report.json``. ``progress(1)`` is called per finished unit.
    """
    start = time.perf_counter()
    if size < 16:
        raise UsageError(f"--size must be at least 16, got {size}")
    if frames_per_video < 1 or workers < 0 or min_photos < 1 or shard_size < 1:
        raise UsageError("frames per video, min photos and shard size must be >= 1, workers >= 0")
    if limit_people is not None and limit_people < 1:
        raise UsageError(f"--limit-people must be >= 1, got {limit_people}")
    if not sources:
        raise UsageError("give at least one source folder or .tar")
    out = ensure_folder(out, "the dataset folder")

    units: list[SourceUnit] = []
    for source in sources:
        units.extend(scan_source(Path(source)))
    units, filtered = select_units(units, limit_people, min_photos)

    if (out / INDEX_NAME).exists():
        index = read_index(out)
        if index["size"] != size:
            raise UsageError(f"{out}: this dataset was prepared at size {index['size']}, not {size}; "
                             "use another --out or the same --size")
        report = json.loads((out / REPORT_NAME).read_text(encoding="utf-8")) if (out / REPORT_NAME).exists() \
            else {"skipped": [], "filtered": []}
    else:
        index = {"format_version": DATASET_FORMAT_VERSION, "size": size, "people": [], "videos": [],
                 "shards": [], "count": 0, "sources": [], "finished_units": [], "complete": False}
        report = {"skipped": [], "filtered": []}
    index["complete"] = False
    index["sources"] = sorted(set(index["sources"]) | {str(Path(s).expanduser().resolve()) for s in sources})
    report["filtered_by_min_photos"] = filtered
    finished = set(index["finished_units"])
    pending = [unit for unit in units if unit.id not in finished]
    reused = len(units) - len(pending)
    if progress is not None and reused:
        progress(reused)
    log.info("prepare: %d units (%d already done), size %d, %d workers", len(units), reused, size, workers)

    writer = _ShardWriter(out, index, report, shard_size)
    jobs = [(unit, size, frames_per_video, min_photos) for unit in pending]
    if workers <= 1 or len(pending) <= 1:
        from ..landmarks import create_backend

        backend = create_backend("dlib") if pending else None
        for unit in pending:
            writer.add(process_unit(unit, size, frames_per_video, min_photos, backend=backend))
            if progress is not None:
                progress(1)
    else:
        # "spawn": the parent may hold torch and OpenMP threads, which do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(pending)), initializer=_init_worker) as pool:
            # imap keeps the units' order, so indices of people and videos are reproducible.
            for result in pool.imap(_process_in_worker, jobs, chunksize=1):
                writer.add(result)
                if progress is not None:
                    progress(1)
    writer.flush()
    index["complete"] = True
    _write_json(out / INDEX_NAME, index)
    seconds = time.perf_counter() - start
    log.info("prepared %d frames of %d people in %.1f s (%d files skipped)", index["count"], len(index["people"]),
             seconds, len(report["skipped"]))
    return PrepareReport(out=out, people=len(index["people"]), videos=len(index["videos"]), frames=index["count"],
                         shards=len(index["shards"]), new_units=len(pending), reused_units=reused,
                         skipped=list(report["skipped"]), filtered_people=filtered + len(report["filtered"]),
                         seconds=seconds)


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class FrameStore:
    """All frames of a prepared dataset in memory."""

    size: int
    images: np.ndarray          # uint8 (N, S, S, 3)
    points: np.ndarray          # float32 (N, 68, 2)
    person: np.ndarray          # int64 (N,)
    video: np.ndarray           # int64 (N,)
    people: list[str]
    videos: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.images)


def load_frames(dataset_dir: str | Path) -> FrameStore:
    """Read every shard of a prepared dataset (npz without pickle)."""
    dataset_dir = Path(dataset_dir)
    index = read_index(dataset_dir)
    parts: dict[str, list[np.ndarray]] = {"images": [], "points": [], "person": [], "video": []}
    for shard in index["shards"]:
        path = dataset_dir / shard["file"]
        try:
            with np.load(path, allow_pickle=False) as data:
                for key in parts:
                    parts[key].append(data[key])
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"cannot read the shard ({str(error).splitlines()[0]})", path) from error
        if len(parts["images"][-1]) != shard["count"]:
            raise InputError(f"shard holds {len(parts['images'][-1])} frames, index says {shard['count']}", path)
    size = index["size"]
    if not parts["images"]:
        raise InputError("the dataset holds no frames", dataset_dir)
    return FrameStore(size=size, images=np.concatenate(parts["images"]), points=np.concatenate(parts["points"]),
                      person=np.concatenate(parts["person"]).astype(np.int64),
                      video=np.concatenate(parts["video"]).astype(np.int64),
                      people=list(index["people"]), videos=list(index["videos"]))


def split_people(index: Mapping[str, Any] | FrameStore, holdout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training people, held-out people). The held-out people are drawn (seeded) among those
    with at least two frames, so each can be evaluated with shots and a target."""
    if isinstance(index, FrameStore):
        people, videos = index.people, index.videos
    else:
        people, videos = list(index["people"]), list(index["videos"])
    counts = np.zeros(len(people), np.int64)
    for video in videos:
        counts[video["person"]] += video["count"]
    if holdout < 0:
        raise UsageError(f"--holdout must be >= 0, got {holdout}")
    candidates = sorted(people[i] for i in np.flatnonzero(counts >= 2))
    if holdout > len(candidates) or holdout >= len(people):
        raise UsageError(f"cannot hold out {holdout} people: the dataset has {len(people)} people, "
                         f"{len(candidates)} of them with 2 or more frames")
    rng = np.random.default_rng(seed)
    held = sorted(candidates[i] for i in rng.choice(len(candidates), holdout, replace=False)) if holdout else []
    held_set = set(held)
    return [name for name in people if name not in held_set], held


# ----------------------------------------------------------------------------------------------
# Augmentation


def geometric_jitter(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small rotation, scale and shift of the whole crop, landmarks moved alike."""
    side = image.shape[0]
    matrix = rotation_about(np.array([side / 2, side / 2]), rng.uniform(-JITTER_ROTATION_DEG, JITTER_ROTATION_DEG),
                             1.0 + rng.uniform(-JITTER_SCALE, JITTER_SCALE),
                             rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size=2) * side)
    warped = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, apply_affine(matrix, points)


@dataclass(frozen=True)
class ColourJitter:
    """Per-channel gain, brightness, contrast and saturation changes, drawn once, applied to many."""

    gain: tuple[float, float, float]
    brightness: float
    contrast: float
    saturation: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> "ColourJitter":
        return cls(gain=tuple(rng.uniform(0.92, 1.08, size=3)), brightness=rng.uniform(-12, 12),
                   contrast=rng.uniform(0.85, 1.15), saturation=rng.uniform(0.8, 1.2))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32) * np.array(self.gain, np.float32)
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * self.saturation
        x = (x - x.mean()) * self.contrast + x.mean() + self.brightness
        return np.clip(x, 0, 255).round().astype(np.uint8)


def augment_single_photo(image: np.ndarray, points: np.ndarray, count: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames of one photo with made-up motion: uint8 (count, S, S, 3) and their
    landmarks (count, 68, 2). See the module docstring for the perturbations."""
    from ..render.warp import FaceWarper

    warper = FaceWarper(image, points)
    colour = ColourJitter.random(rng)
    frames, frame_points = [], []
    for _ in range(count):
        target = perturb_landmarks(points, rng)
        frame, target = geometric_jitter(warper.warp(target), target, rng)
        frames.append(colour(frame))
        frame_points.append(target)
    return np.stack(frames), np.stack(frame_points).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Episodes


def resize_store(store: FrameStore, image_size: int) -> FrameStore:
    """The store's crops resized to ``image_size`` (landmarks scaled alike); the crop is the same."""
    if image_size == store.size:
        return store
    if image_size > store.size:
        raise UsageError(f"the dataset was prepared at {store.size} px, smaller than the model's {image_size} px; "
                         "prepare it again with a larger --size")
    images = np.stack([cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
                       for image in store.images])
    scale = image_size / store.size
    return FrameStore(size=image_size, images=images, points=(store.points * scale).astype(np.float32),
                      person=store.person, video=store.video, people=store.people, videos=store.videos)


class EpisodeDataset(torch.utils.data.Dataset):
    """Meta-learning episodes (K shots + a target of one video) of the chosen people.

    ``dataset[p]`` is episode number ``p`` (any p >= 0; ``len`` is one epoch, one episode per
    training video); see the module docstring for how it is made. It returns a dict of tensors:
    ``shot_images``, ``shot_landmarks`` (K, 3, S, S) and ``target_image``, ``target_landmarks``
    (3, S, S) in [-1, 1]; ``target_points`` (68, 2); ``video_index`` (the training video: a
    column of the discriminator's W), ``person_index`` and ``target_frame`` (the frame's index
    in the store); with ``guidance="warp"`` also ``warped`` (3, S, S), and with a
    ``blend_region`` (``ModelConfig.region_input``) the target's ``region`` (1, S, S) in [0, 1].
    """

    def __init__(self, store: FrameStore, shots: int = 8, image_size: int | None = None, seed: int = 0,
                 guidance: str = "none", people: Sequence[str] | None = None,
                 mix: Mapping[str, float] | None = None, blend_region: str | None = None):
        if shots < 1:
            raise UsageError(f"shots must be >= 1, got {shots}")
        if guidance not in GUIDANCE_MODES:
            raise UsageError(f"guidance must be one of {', '.join(GUIDANCE_MODES)}, got {guidance!r}")
        self.store = resize_store(store, image_size or store.size)
        self.size = self.store.size
        self.shots, self.seed, self.guidance = shots, seed, guidance
        self.blend_region = blend_region if guidance == "warp" else None
        wanted = set(store.people if people is None else people)
        unknown = wanted - set(store.people)
        if unknown:
            raise UsageError(f"people not in the dataset: {', '.join(sorted(unknown)[:3])}")
        by_video: dict[int, list[int]] = {}
        for frame, video in enumerate(self.store.video.tolist()):
            by_video.setdefault(video, []).append(frame)
        self.video_ids = [v for v, entry in enumerate(store.videos)
                          if store.people[entry["person"]] in wanted and v in by_video]
        if not self.video_ids:
            raise UsageError("no training videos left (all people held out?)")
        self.video_frames = [np.array(by_video[v]) for v in self.video_ids]
        self.video_names = [store.videos[v]["name"] for v in self.video_ids]
        self.people = sorted(wanted)
        self.mix_kinds: list[tuple[str, float, np.ndarray]] = []
        if mix is not None:
            kinds = [video_kind(store.videos[v]) for v in self.video_ids]
            present = [(kind, float(mix.get(kind, 0.0))) for kind in EPISODE_KINDS]
            present = [(kind, weight) for kind, weight in present if weight > 0 and kind in kinds]
            if not present:
                raise UsageError(f"--mix: the training data has no episodes of the weighted kinds "
                                 f"(it has: {', '.join(sorted(set(kinds)))})")
            total = sum(weight for _, weight in present)
            self.mix_kinds = [(kind, weight / total, np.array([i for i, k in enumerate(kinds) if k == kind]))
                              for kind, weight in present]

    def kind_counts(self) -> dict[str, int]:
        """Training videos of each episode kind."""
        counts = dict.fromkeys(EPISODE_KINDS, 0)
        for v in self.video_ids:
            counts[video_kind(self.store.videos[v])] += 1
        return counts

    @property
    def num_videos(self) -> int:
        """Training videos: the number of W columns the discriminator needs."""
        return len(self.video_ids)

    def __len__(self) -> int:
        return self.num_videos

    def video_of(self, episode: int) -> int:
        """The training video of episode ``episode``: its entry in the epoch's seeded permutation,
        or with a mix, a draw of a kind and then of a video of that kind."""
        if self.mix_kinds:
            rng = np.random.default_rng([self.seed, int(episode), MIX_STREAM])
            choice = rng.choice(len(self.mix_kinds), p=[weight for _, weight, _ in self.mix_kinds])
            members = self.mix_kinds[choice][2]
            return int(members[rng.integers(len(members))])
        count = self.num_videos
        epoch, position = divmod(int(episode), count)
        order = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(count)
        return int(order[position])

    def frames(self, episode: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """The episode's K + 1 frames as uint8 (K+1, S, S, 3) and landmarks (K+1, 68, 2), target
        first; plus the training video index and the target's frame index."""
        if episode < 0:
            raise IndexError(f"episode numbers are >= 0, got {episode}")
        video = self.video_of(episode)
        rng = np.random.default_rng([self.seed, int(episode)])
        frames = self.video_frames[video]
        images, points = self.store.images, self.store.points
        k = self.shots
        if len(frames) == 1:
            out_images, out_points = augment_single_photo(images[frames[0]], points[frames[0]], k + 1, rng)
            return out_images, out_points, video, int(frames[0])
        if len(frames) >= k + 1:
            chosen = rng.choice(frames, k + 1, replace=False)
            return images[chosen], points[chosen], video, int(chosen[0])
        target = int(rng.choice(frames))
        others = frames[frames != target]
        picks = others[rng.choice(len(others), k, replace=len(others) < k)]
        out_images, out_points, seen = [images[target]], [points[target]], set()
        for frame in picks.tolist():
            image, frame_points = images[frame], points[frame]
            if frame in seen:
                image, frame_points = geometric_jitter(image, frame_points, rng)
            seen.add(frame)
            out_images.append(image)
            out_points.append(frame_points)
        return np.stack(out_images), np.stack(out_points).astype(np.float32), video, target

    def __getitem__(self, episode: int) -> dict[str, torch.Tensor]:
        from ..finetune import nearest_shot_indices
        from ..landmarks import draw_landmark_images

        images, points, video, target_frame = self.frames(episode)
        landmark_images = draw_landmark_images(points, self.size)
        tensors = images_to_tensor(images)
        landmark_tensors = images_to_tensor(landmark_images)
        item = {
            "shot_images": tensors[1:], "shot_landmarks": landmark_tensors[1:],
            "target_image": tensors[0], "target_landmarks": landmark_tensors[0],
            "target_points": torch.from_numpy(points[0].copy()),
            "video_index": torch.tensor(video, dtype=torch.long),
            "person_index": torch.tensor(int(self.store.person[target_frame]), dtype=torch.long),
            "target_frame": torch.tensor(target_frame, dtype=torch.long),
        }
        if self.guidance == "warp":
            from ..render.warp import FaceWarper

            nearest = 1 + int(nearest_shot_indices(points[1:], points[:1])[0])
            warped = FaceWarper(images[nearest], points[nearest]).warp(points[0])
            item["warped"] = images_to_tensor(warped)[0]
        if self.blend_region is not None:
            from ..landmarks.regions import blend_regions

            item["region"] = torch.from_numpy(blend_regions(points[:1], self.size, self.blend_region)[0])
        return item


def episode_batches(dataset: EpisodeDataset, batch_size: int, start_step: int, rank: int = 0,
                    world_size: int = 1) -> Iterator[list[int]]:
    """Episode numbers of each training step from ``start_step`` on (endless): step s on rank r
    takes episodes ``(s * world_size + r) * batch_size + j``, so ranks never share an episode and
    a resumed run continues exactly where it stopped."""
    step = start_step
    while True:
        first = (step * world_size + rank) * batch_size
        yield list(range(first, first + batch_size))
        step += 1


class EpisodeBatchSampler(torch.utils.data.Sampler[list[int]]):
    """``episode_batches`` as a DataLoader batch sampler."""

    def __init__(self, dataset: EpisodeDataset, batch_size: int, start_step: int, rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.start_step = dataset, batch_size, start_step
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        return episode_batches(self.dataset, self.batch_size, self.start_step, self.rank, self.world_size)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)
