"""Judge the result the way a user sees it: full-frame protocols through the real pipeline.

Self-reenactment (the protocol of FOMM, TPSMM and LivePortrait's Table 2): the first frame of a
real talking video is the photo and the video itself the driver; the output (the whole main
job: landmarks, reference frame, retargeting, head motion, rendering, compositing, at the
video's own resolution) is compared with the real frames, which are the right answer:

- SSIM, PSNR and L1 over the whole frame, and over a face box taken from the real frame's
  landmarks (a face that is in the right place inside a wrong head scores badly here, unlike
  the crop protocol of ``crop``);
- AKD: dlib's landmarks on the output against the real frame's, over the real eye-corner distance
  (``face`` = the share of outputs where a face is found);
- mouth: the output's inner-lip opening regressed on the real one (slope; 1 = as wide) and their
  correlation; beside it the driven slope, the same for the smoothed track the renderers are asked
  to follow (``--smoothing`` takes off the fastest openings' peaks: what no renderer then gives back);
- identity distance: dlib descriptors of output and real face;
- detail: how much of the real frame's fine detail the output keeps (``metrics.detail_ratio`` in the face box
  grown 1.2x; 1 = as sharp as the real frame, a re-encode keeps about 0.94-0.99);
- perceptual: the face-trained perceptual distance (``metrics.FacePerceptual``) of the output from
  the real frame, both cut at the real frame's landmarks.

Cross-identity with drivers that start mid-word: each driver is cut at an open-mouth frame, drives
photos of other people, and the output's mouth opening is compared with the driver's (slope and
correlation): a renderer that measures motion from a blindly chosen first frame fails this.

Methods: ``frozen`` (the first frame, unchanged), ``warp`` and ``neural`` (today's motion),
``warp-flat`` / ``neural-flat``: the whole head moved by a 2D similarity (the head motion before the 3D
head), ``warp-crop`` / ``neural-crop``: the motion before whole-head motion (the face moves inside a fixed
crop, frame 0 is the reference, the photo's own expression is kept), for comparison, and ``real``:
the real frames scored against themselves, the floor of the landmark metrics (the detector's own
scatter) and of the identity distance. ``outputs`` adds rows for videos another tool (or an earlier
version of this one) made from the same first frame and driver: ``FOLDER/<video stem>.<ext>``, scored
the same way, so any result can be compared on the same frames.

Per video, each method is also paired frame by frame with the motion before whole-head motion
(``paired_rows``): per-video means of a few dozen frames differ by detector noise, and a difference
within its standard error is not a measured change.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_CRF, FinetuneConfig, RenderConfig
from ..errors import UsageError
from .metrics import (FaceIdentity, FacePerceptual, at_size, detail_ratio, detect_near, identity_distance,
                      landmark_error, pearson, psnr, ssim)
from ..io.images import save_image
from ..io.video import iter_frames, probe_video
from ..landmarks import LandmarkBackend, LandmarkTrack, fill_gaps, mouth_opening, smooth_track, track_video
from ..landmarks.crop import crop_from_landmarks
from ..progress import ProgressReporter, SilentProgress
from ..render.pipeline import Driver, render_frames

log = logging.getLogger(__name__)

FULL_FRAME_METHODS = ("frozen", "warp", "warp-crop", "warp-flat", "neural", "neural-crop", "neural-flat", "real")
# Methods that render nothing: the first frame frozen, and the real frames themselves (the floor of
# every metric's noise: dlib re-detecting the real frames of the 23 talking videos lands 0.006-0.026
# eye distances from the track, 0.010 on average).
BASELINE_METHODS = ("frozen", "real")
# The face box is the landmarks' box grown to this many times its size (forehead, hair, chin).
FACE_BOX_SCALE = 1.5
# The detail measure's box: the face and a little around it (skin, brows, hairline), not the background.
DETAIL_BOX_SCALE = 1.2
# A driver for the mouth-open protocol starts at a frame whose mouth is at least this open
# (inner-lip gap over eye-corner distance), found within its first START_SEARCH share.
OPEN_START = 0.15
START_SEARCH = 0.6


@dataclass(frozen=True)
class FullFrameConfig:
    """What the full-frame protocols run."""

    methods: tuple[str, ...] = ("frozen", "warp", "warp-crop")
    max_frames: int = 120            # frames of each video, from its start
    stride: int = 2                  # metrics on every stride-th frame
    finetune_steps: int | None = None  # None: the main command's default for one photo
    smoothing: float = 1.0
    # (name, folder) pairs: rows scoring FOLDER/<video stem>.<ext>, made elsewhere from the same first
    # frame and driver.
    outputs: tuple[tuple[str, str], ...] = ()
    # The method every other one is paired with per frame (``paired_rows``); None: each method's
    # ``-crop`` variant, else ``warp-crop``.
    paired_with: str | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in FULL_FRAME_METHODS]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r}; choose from: {', '.join(FULL_FRAME_METHODS)}")
        names = [name for name, _ in self.outputs]
        for name, folder in self.outputs:
            if not name or name in FULL_FRAME_METHODS or names.count(name) > 1:
                raise UsageError(f"outputs name {name!r} must be new, unique and not a method's name")
            if not Path(folder).expanduser().is_dir():
                raise UsageError(f"{folder}: the outputs folder for {name!r} is not a folder")
        if self.paired_with is not None and self.paired_with not in (*self.methods, *names):
            raise UsageError(f"paired_with {self.paired_with!r} is neither a chosen method nor an outputs name")
        if self.max_frames < 2 or self.stride < 1:
            raise UsageError("max_frames must be >= 2 and stride >= 1")


def method_render_config(method: str, base: RenderConfig | None = None) -> RenderConfig:
    """The render settings of a method: today's motion, or ``*-crop`` for the motion before it."""
    base = base or RenderConfig()
    if method.endswith("-crop"):
        return replace(base, head_motion=False, reference="first", full_closure=False)
    if method.endswith("-flat"):
        return replace(base, head_model="flat")
    return base


def read_frames(path: str | Path, count: int) -> tuple[list[np.ndarray], float]:
    """The first ``count`` frames of a video and its frame rate."""
    info = probe_video(path)
    frames = []
    for frame in iter_frames(path, info=info):
        frames.append(frame)
        if len(frames) >= count:
            break
    if len(frames) < 2:
        raise UsageError(f"{path}: needs at least 2 frames to evaluate")
    return frames, info.fps


def output_video(folder: str | Path, video: Path) -> Path | None:
    """The video in ``folder`` made from ``video`` (same stem, any video extension); None if there is none."""
    import glob

    from .crop import VIDEO_EXTENSIONS

    found = sorted(p for p in Path(folder).expanduser().glob(f"{glob.escape(video.stem)}.*")
                   if p.suffix.lower() in VIDEO_EXTENSIONS)
    return found[0] if found else None


def read_output(path: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The first ``len(frames)`` frames of an output made elsewhere; it must have at least that many."""
    outputs, _ = read_frames(path, len(frames))
    if len(outputs) < len(frames):
        raise UsageError(f"{path}: has {len(outputs)} frames, fewer than the {len(frames)} driver frames evaluated")
    return outputs


def face_box(points: np.ndarray, shape: tuple[int, ...], scale: float = FACE_BOX_SCALE) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the face box of real landmarks (``scale`` x their extent), clipped to the image."""
    crop = crop_from_landmarks(np.asarray(points, np.float64), 1, scale=scale)
    half = crop.side / 2
    height, width = shape[:2]
    x0, y0 = max(int(round(crop.center[0] - half)), 0), max(int(round(crop.center[1] - half)), 0)
    x1, y1 = min(int(round(crop.center[0] + half)), width), min(int(round(crop.center[1] + half)), height)
    return x0, y0, max(x1, x0 + 8), max(y1, y0 + 8)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in [0, 1]."""
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32)))) / 255.0


def regression_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x; NaN when x does not vary."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or float(np.var(x)) < 1e-8:
        return math.nan
    return float(np.cov(x, y, bias=True)[0, 1] / np.var(x))


@dataclass
class Renderers:
    """The engines a protocol renders with (``neural`` None when not measured)."""

    backend: LandmarkBackend
    warp: Any
    neural: Any | None = None

    def engine(self, method: str) -> Any:
        engine = self.neural if method.startswith("neural") else self.warp
        if engine is None:
            raise UsageError(f"method {method} needs weights (the neural renderer)")
        return engine


def _track(backend: LandmarkBackend, frames: list[np.ndarray], fps: float, smoothing: float,
           path: str) -> tuple[LandmarkTrack, LandmarkTrack]:
    """The raw track (validity as detected) and the gap-filled, smoothed one the driver uses."""
    size = (frames[0].shape[1], frames[0].shape[0])
    raw = track_video(backend, iter(frames), fps, size, path=path)
    return raw, smooth_track(fill_gaps(raw, path=path), smoothing)


def _make_person(engine: Any, photo: np.ndarray, finetune_steps: int | None, folder: Path, name: str) -> Any:
    path = folder / f"{name}.png"
    save_image(path, photo)
    return engine.make_person([path], FinetuneConfig(steps=finetune_steps, seed=0))


def _render(engine: Any, person: Any, driver: Driver, method: str, config: FullFrameConfig) -> list[np.ndarray]:
    render = method_render_config(method, RenderConfig(smoothing=config.smoothing, audio=False))
    stream = render_frames(engine.frame_renderer(person), person, driver, render)
    try:
        return list(stream.frames)
    finally:
        stream.frames.close()


def _summary(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def self_reenactment(videos: Sequence[str | Path], renderers: Renderers, config: FullFrameConfig,
                     identity: FaceIdentity | None = None, progress: ProgressReporter | None = None,
                     perceptual: FacePerceptual | None = None) -> list[dict[str, Any]]:
    """One row per (video, method): the full-frame self-reenactment metrics (see the module doc)."""
    progress = progress or SilentProgress()
    identity = identity or FaceIdentity()
    perceptual = perceptual or FacePerceptual()
    backend = renderers.backend
    rows = []
    with tempfile.TemporaryDirectory(prefix="animate-face-eval-") as tmp:
        for video in map(Path, videos):
            frames, fps = read_frames(video, config.max_frames)
            raw, track = _track(backend, frames, fps, config.smoothing, str(video))
            if not raw.valid[0]:
                log.warning("%s: no face in the first frame; skipped", video)
                continue
            driver = Driver(path=video, track=track, video=None)
            measured = [i for i in range(1, len(frames), config.stride) if raw.valid[i]]
            real_ids = {i: identity.descriptor(frames[i], raw.points[i]) for i in measured}
            # The mouth the renderers are asked for: the smoothed track's opening against the real one.
            driven = regression_slope([mouth_opening(raw.points[i]) for i in measured],
                                      [mouth_opening(track.points[i]) for i in measured])
            people: dict[int, Any] = {}
            with progress.stage(video.stem[:10], len(config.methods) + len(config.outputs)) as advance:
                for method in config.methods:
                    if method == "frozen":
                        outputs = [frames[0]] * len(frames)
                    elif method == "real":
                        outputs = frames
                    else:
                        engine = renderers.engine(method)
                        key = id(engine)
                        if key not in people:
                            people[key] = _make_person(engine, frames[0], config.finetune_steps
                                                       if engine is renderers.neural else 0, Path(tmp), video.stem)
                        outputs = _render(engine, people[key], driver, method, config)
                    rows.append(_score_video(video, method, frames, outputs, raw, measured, real_ids, backend,
                                             identity, perceptual, driven))
                    advance(1)
                for name, folder in config.outputs:
                    path = output_video(folder, video)
                    if path is None:
                        log.warning("%s: no output for %s in %s; its %s row is left out", name, video.name, folder,
                                    name)
                    else:
                        rows.append(_score_video(video, name, frames, read_output(path, frames), raw, measured,
                                                 real_ids, backend, identity, perceptual, driven))
                    advance(1)
    return rows


def _score_video(video: Path, method: str, frames: list[np.ndarray], outputs: list[np.ndarray], raw: LandmarkTrack,
                 measured: list[int], real_ids: dict[int, np.ndarray], backend: LandmarkBackend,
                 identity: FaceIdentity, perceptual: FacePerceptual, driven_slope: float = math.nan) -> dict[str, Any]:
    values: dict[str, list[float]] = {k: [] for k in ("ssim", "psnr", "l1", "box_ssim", "box_psnr", "box_l1",
                                                      "akd", "identity_distance", "perceptual", "detail")}
    real_mouth, output_mouth, found = [], [], 0
    frame_akd: list[float | None] = []
    for i in measured:
        real, out, points = frames[i], outputs[i], raw.points[i]
        out = at_size(out, (real.shape[1], real.shape[0]))
        values["ssim"].append(ssim(out, real))
        values["psnr"].append(min(psnr(out, real), 60.0))
        values["l1"].append(l1(out, real))
        x0, y0, x1, y1 = face_box(points, real.shape)
        values["box_ssim"].append(ssim(out[y0:y1, x0:x1], real[y0:y1, x0:x1]))
        values["box_psnr"].append(min(psnr(out[y0:y1, x0:x1], real[y0:y1, x0:x1]), 60.0))
        values["box_l1"].append(l1(out[y0:y1, x0:x1], real[y0:y1, x0:x1]))
        x0, y0, x1, y1 = face_box(points, real.shape, DETAIL_BOX_SCALE)
        values["detail"].append(detail_ratio(out[y0:y1, x0:x1], real[y0:y1, x0:x1]))
        detected = detect_near(backend, out, points)
        if detected is not None:
            found += 1
            error = float(landmark_error(points, detected))
            values["akd"].append(error)
            frame_akd.append(error)
            real_mouth.append(float(mouth_opening(points)))
            output_mouth.append(float(mouth_opening(detected)))
        else:
            frame_akd.append(None)
        values["identity_distance"].append(identity_distance(
            identity.descriptor(out, detected if detected is not None else points), real_ids[i]))
        # At the real frame's landmarks: a face in the wrong place costs here too.
        values["perceptual"].append(float(perceptual.distances(out[None], real[None], points[None])[0]))
    row: dict[str, Any] = {"video": video.name, "method": method, "frames": len(measured),
                           "size": [frames[0].shape[1], frames[0].shape[0]]}
    row.update({key: _summary(v) for key, v in values.items()})
    row["face_found"] = found / max(len(measured), 1)
    # Per measured frame, for paired comparisons between methods (``paired_rows``).
    row["per_frame"] = {"frame": list(measured), "box_ssim": values["box_ssim"], "akd": frame_akd}
    row["mouth_slope"] = regression_slope(real_mouth, output_mouth)
    row["driven_slope"] = driven_slope
    row["mouth_corr"] = pearson(real_mouth, output_mouth) if len(real_mouth) >= 3 else math.nan
    row["head_motion"] = float(np.mean([np.linalg.norm(raw.points[i].mean(0) - raw.points[0].mean(0))
                                        for i in measured]) / max(float(np.ptp(raw.points[0][:, 0])), 1.0))
    return row


def open_mouth_start(points: np.ndarray, valid: np.ndarray) -> int | None:
    """The first frame, within the first ``START_SEARCH`` of a track, whose mouth is at least
    ``OPEN_START`` open (the most open one if none is); None when the mouth never opens."""
    openings = np.where(valid, mouth_opening(points), -1.0)
    search = openings[:max(1, int(len(openings) * START_SEARCH))]
    above = np.flatnonzero(search >= OPEN_START)
    if len(above):
        return int(above[0])
    best = int(np.argmax(search))
    return best if search[best] > 0.05 else None


def mouth_open_cross_identity(photos: Sequence[str | Path], drivers: Sequence[str | Path], renderers: Renderers,
                              config: FullFrameConfig, progress: ProgressReporter | None = None
                              ) -> list[dict[str, Any]]:
    """One row per (photo, driver, method): the output's mouth opening against the driver's, with
    each driver cut to start at an open-mouth frame."""
    from ..landmarks import detect_photo_landmarks
    from ..io.images import load_image

    progress = progress or SilentProgress()
    backend = renderers.backend
    rows = []
    cut_drivers = []
    for video in map(Path, drivers):
        frames, fps = read_frames(video, config.max_frames * 3)
        raw, _ = _track(backend, frames, fps, 0.0, str(video))
        start = open_mouth_start(raw.points, raw.valid)
        if start is None:
            log.warning("%s: the mouth never opens; skipped", video)
            continue
        end = min(start + config.max_frames, len(frames))
        cut_raw = LandmarkTrack(raw.points[start:end], raw.valid[start:end], fps, raw.frame_size)
        track = smooth_track(fill_gaps(cut_raw, path=str(video)), config.smoothing)
        cut_drivers.append((video, start, cut_raw, Driver(path=video, track=track, video=None)))
    methods = [m for m in config.methods if m not in BASELINE_METHODS]
    for photo_path in map(Path, photos):
        image = load_image(photo_path)
        photo_points = detect_photo_landmarks(backend, image, path=photo_path)
        people: dict[int, Any] = {}
        with progress.stage(photo_path.stem[:10], len(methods) * len(cut_drivers)) as advance:
            for video, start, cut_raw, driver in cut_drivers:
                for method in methods:
                    engine = renderers.engine(method)
                    if id(engine) not in people:
                        people[id(engine)] = engine.make_person(
                            [photo_path], FinetuneConfig(steps=config.finetune_steps if engine is renderers.neural
                                                         else 0, seed=0))
                    outputs = _render(engine, people[id(engine)], driver, method, config)
                    driven, produced = [], []
                    for i in range(0, len(outputs), config.stride):
                        if not cut_raw.valid[i]:
                            continue
                        detected = detect_near(backend, outputs[i], photo_points)
                        if detected is not None:
                            driven.append(float(mouth_opening(cut_raw.points[i])))
                            produced.append(float(mouth_opening(detected)))
                    rows.append({"photo": photo_path.name, "driver": video.name, "start": start, "method": method,
                                 "frames": len(driven), "driver_max": max(driven) if driven else None,
                                 "output_max": max(produced) if produced else None,
                                 "mouth_slope": regression_slope(driven, produced),
                                 "mouth_corr": pearson(driven, produced) if len(driven) >= 3 else math.nan})
                    advance(1)
    return rows


PAIRED_KEYS = ("box_ssim", "akd")


def paired_baseline(method: str, methods: Sequence[str], paired_with: str | None = None) -> str | None:
    """The method ``method`` is paired with: ``paired_with`` when given (and ran), else its ``-crop``
    variant (the motion before whole-head motion) when that ran, else ``warp-crop`` when that ran;
    None for the baselines themselves."""
    if method in BASELINE_METHODS or method == paired_with:
        return None
    if paired_with is not None:
        return paired_with if paired_with in methods else None
    if method.endswith("-crop"):
        return None
    for candidate in (f"{method}-crop", "warp-crop"):
        if candidate in methods:
            return candidate
    return None


def paired_rows(rows: Sequence[dict[str, Any]], paired_with: str | None = None) -> list[dict[str, Any]]:
    """Per video and method, the per-frame difference from its baseline (``paired_baseline``) on
    the frames both measured: mean and its standard error, for box SSIM and AKD.

    Per-video means of a few dozen frames differ by detector noise; a difference within its
    standard error is not a measured change.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_key = {(r["video"], r["method"]): r for r in rows}
    out = []
    for row in rows:
        baseline = paired_baseline(row["method"], methods, paired_with)
        other = by_key.get((row["video"], baseline)) if baseline else None
        if other is None or "per_frame" not in row or "per_frame" not in other:
            continue
        entry: dict[str, Any] = {"video": row["video"], "method": row["method"], "baseline": baseline}
        theirs = dict(zip(other["per_frame"]["frame"], zip(*(other["per_frame"][k] for k in PAIRED_KEYS))))
        for k, key in enumerate(PAIRED_KEYS):
            diffs = [mine - theirs[f][k] for f, mine in zip(row["per_frame"]["frame"], row["per_frame"][key])
                     if f in theirs and mine is not None and theirs[f][k] is not None]
            entry[key] = float(np.mean(diffs)) if diffs else None
            entry[f"{key}_se"] = (float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1
                                  else None)
            entry[f"{key}_frames"] = len(diffs)
        out.append(entry)
    return out


def average_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per method, the mean of each metric over the rows (videos or photo-driver pairs)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for method in methods:
        chosen = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "count": len(chosen)}
        for key in keys:
            entry[key] = _summary([r.get(key) for r in chosen])
        out.append(entry)
    return out


def still_driver(photos: Sequence[str | Path], renderers: Renderers, methods: Sequence[str], frames: int = 20,
                 crf: int = DEFAULT_CRF, progress: ProgressReporter | None = None) -> list[dict[str, Any]]:
    """One row per (photo, method): the photo driven by a video of itself (``frames`` identical frames,
    encoded at ``crf``) through the whole main job, written at the same ``crf`` and read back. A still
    driver must give the photo back: face-box PSNR and detail against the photo, beside the ceiling (the
    driver's own frames, the photo encoded once at that crf)."""
    from ..io.images import load_image
    from ..io.video import VideoWriter, even_size
    from ..landmarks import detect_photo_landmarks
    from ..render.pipeline import load_driver, render_video

    progress = progress or SilentProgress()
    backend = renderers.backend
    rows = []
    methods = [m for m in methods if m not in BASELINE_METHODS]
    with tempfile.TemporaryDirectory(prefix="animate-face-still-") as tmp:
        for photo_path in map(Path, photos):
            image = load_image(photo_path)
            width, height = even_size(image.shape[1], image.shape[0])
            image = np.ascontiguousarray(image[:height, :width])
            points = detect_photo_landmarks(backend, image, path=photo_path)
            photo = Path(tmp) / f"{photo_path.stem}.png"
            save_image(photo, image)
            video = Path(tmp) / f"{photo_path.stem}-still.mp4"
            with VideoWriter(video, 25.0, (width, height), crf=crf) as writer:
                for _ in range(frames):
                    writer.write(image)
            ceiling, _ = read_frames(video, 2)
            box = face_box(points, image.shape)
            detail_box = face_box(points, image.shape, DETAIL_BOX_SCALE)

            def scores(output: np.ndarray) -> tuple[float, float]:
                x0, y0, x1, y1 = box
                dx0, dy0, dx1, dy1 = detail_box
                return (min(psnr(output[y0:y1, x0:x1], image[y0:y1, x0:x1]), 60.0),
                        detail_ratio(output[dy0:dy1, dx0:dx1], image[dy0:dy1, dx0:dx1]))

            ceiling_psnr, ceiling_detail = scores(ceiling[0])
            with progress.stage(photo_path.stem[:10], len(methods)) as advance:
                for method in methods:
                    engine = renderers.engine(method)
                    person = engine.make_person([photo], FinetuneConfig(steps=0, seed=0))
                    driver = load_driver(video, backend, RenderConfig().smoothing)
                    output = Path(tmp) / f"{photo_path.stem}-{method}.mp4"
                    render_video(engine.frame_renderer(person), person, driver, output,
                                 method_render_config(method, RenderConfig(crf=crf, audio=False)))
                    outputs, _ = read_frames(output, frames)
                    measured = [scores(frame) for frame in outputs]
                    rows.append({"photo": photo_path.name, "method": method, "size": [width, height],
                                 "frames": len(outputs), "box_psnr": _summary([m[0] for m in measured]),
                                 "detail": _summary([m[1] for m in measured]), "ceiling_box_psnr": ceiling_psnr,
                                 "ceiling_detail": ceiling_detail})
                    advance(1)
    return rows
