"""The main job as stages: photos -> landmarks -> person -> per-frame rendering -> composite -> video.

Each stage is a function with typed inputs and outputs; the heavy parts (the model, the landmark
backend, the renderer) are passed in, so tests run each stage with tiny ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from ..config import RenderConfig
from ..errors import InputError
from ..io.driver import check_driver
from ..io.video import VideoInfo, VideoWriter, even_size, iter_frames
from ..landmarks import (LandmarkBackend, LandmarkTrack, fill_gaps, retarget_absolute, retarget_relative,
                         smooth_track, track_video)
from ..landmarks.crop import FaceCrop, crop_from_landmarks
from ..landmarks.reference import References, resolve_reference
from ..landmarks.retarget import about_typical_pose, hold_still
from ..landmarks.tracking import REDETECT_EVERY
from ..person import Person, Shot
from ..photos import PhotoFace, find_faces
from ..progress import ProgressReporter, SilentProgress
from . import track_cache
from .composite import Compositor, compose_affine, crop_mask, face_mask, paste_affine
from .fullres import FullResCompositor
from .head3d import Head3D, RigidMotion, carry_in_3d
from .head_motion import (HeadLayers, HeadMotion, apply_affine, field_step, head_similarities,
                          invert_affine, outline_similarity)
from .preview import TILE_HEIGHT, driver_frame, keep_frames, preview_indices, write_preview
from .renderers import FrameRenderer

log = logging.getLogger(__name__)

# Default output is the photo's resolution; beyond this longest side H.264 encoders and players
# struggle, so larger photos are scaled down (``--size`` overrides).
MAX_DEFAULT_SIDE = 4096
# How far each pipeline stage may run ahead of the next one: enough to keep every stage busy, small
# enough that memory stays flat however long the video. Rendered crops wait in batches; composited
# frames are photo-sized (up to 4096 px, 50 MB each), so only a few wait for the encoder.
RENDERED_BATCHES_AHEAD = 2
COMPOSITED_FRAMES_AHEAD = 4
COMPOSE_WORKERS = 2
# Whole-head motion builds each frame's face mask at 1/MASK_REDUCTION of the crop's size (its feather:
# docs/findings.md, 2026-12-02, "a wider feather on the face mask").
MASK_REDUCTION = 4

T = TypeVar("T")


@dataclass
class Driver:
    """The driving motion: landmarks for every frame, and the video they came from (if any)."""

    path: Path
    track: LandmarkTrack
    video: VideoInfo | None
    # Driver frames kept for a preview (frame number -> small RGB image): while tracking, or by a seek.
    kept_frames: dict[int, np.ndarray] = field(default_factory=dict)


def shot_from_face(face: PhotoFace, image_size: int) -> Shot:
    """A found face cropped for the networks (``image_size`` px)."""
    return Shot.from_photo(str(face.path), face.image, face.points, crop_from_landmarks(face.points, image_size))


def load_shots(paths: Sequence[Path], backend: LandmarkBackend, image_size: int,
               face_index: int = 0) -> list[Shot]:
    """Load each photo, find its face and crop it for the networks."""
    return [shot_from_face(face, image_size) for face in find_faces(paths, backend, face_index)]


def preview_driver_frames(checked: VideoInfo | LandmarkTrack, output_fps: float | None) -> list[int]:
    """The driver frames a preview will show (see ``render_video``), so tracking can keep them."""
    if isinstance(checked, LandmarkTrack):
        return []
    indices = frame_indices(checked.frame_count, checked.fps, output_fps or checked.fps)
    return [int(indices[i]) for i in preview_indices(len(indices))]


def load_driver(path: str | Path, backend: LandmarkBackend, smoothing: float,
                progress: ProgressReporter | None = None,
                checked: VideoInfo | LandmarkTrack | None = None, keep: Sequence[int] = (),
                cache: bool = True) -> Driver:
    """Landmarks of every driving frame: from a saved .npz, or tracked in the video (the raw track is
    cached on disk by the video's bytes and the backend, see ``track_cache``; ``cache=False`` always
    tracks). ``checked``: what ``check_driver`` returned for this path (it is not read twice); ``keep``:
    frame numbers to keep small copies of while tracking (for a preview, without decoding twice; on a
    cache hit they are decoded by a seek each)."""
    path = Path(path)
    progress = progress or SilentProgress()
    checked = checked if checked is not None else check_driver(path)
    kept: dict[int, np.ndarray] = {}
    if isinstance(checked, LandmarkTrack):
        track, video = checked, None
    else:
        video = checked
        key = track_cache.track_key(path, backend, REDETECT_EVERY) if cache else None
        cached_at = track_cache.track_path(key) if key else None
        cached = track_cache.read_track(cached_at, key, video) if cached_at else None
        if cached is not None:
            track = cached
            log.info("landmarks of %d frames from the cache (%s)", len(track), cached_at)
            # A stage with nothing to do: no bar, its time still recorded.
            with progress.stage("landmarks", 0):
                kept = {index: driver_frame(path, True, video.fps, index, track.points[index], track.frame_size)
                        for index in keep if 0 <= index < len(track)}
        else:
            with progress.stage("landmarks", video.frame_count) as advance:
                frames = iter_frames(path, info=video)
                if keep:
                    frames = keep_frames(frames, keep, kept, shrink_to=TILE_HEIGHT)
                track = track_video(backend, frames, video.fps, video.size, REDETECT_EVERY, progress=advance,
                                    path=path)
            if cached_at and len(track) == video.frame_count:
                track_cache.store_track(cached_at, key, track)
    track = fill_gaps(track, path=path)
    if len(track) == 0:
        raise InputError("has no frames", path)
    missing = int((~track.valid).sum())
    if missing:
        log.warning("%s: no face in %d of %d frames; those frames were filled from their neighbours",
                    path, missing, len(track))
    return Driver(path=path, track=smooth_track(track, smoothing), video=video, kept_frames=kept)


def target_crop_points(photo: Shot, track: LandmarkTrack, relative: bool = True) -> np.ndarray:
    """The driver's motion applied to the photo's face, in the photo's crop coordinates (T, 68, 2)
    (frame 0 as the reference, head motion inside the crop: the crop-only and legacy motion)."""
    retarget = retarget_relative if relative else retarget_absolute
    image_points = retarget(photo.points, track.points)
    return np.stack([photo.crop.points_to_crop(points) for points in image_points])


@dataclass(frozen=True)
class MotionPlan:
    """What every driving frame asks of the photo.

    ``crop_points`` (T, 68, 2): the face's landmarks in the renderer's crop coordinates. With
    whole-head motion the crop follows the head, so these hold the expression (and what a
    similarity cannot say, such as yaw) and ``head_matrices`` (T, 2, 3) map photo pixels to output
    pixels (the head's similarity; ``outline_matrices``: the same for the head's outline, which a
    turn of the head moves less than the face); without it the crop is fixed and both are None.
    ``reference``: the driver frames that relative motion is measured from (pose, expression).
    """

    crop_points: np.ndarray
    head_matrices: np.ndarray | None
    reference: References
    outline_matrices: np.ndarray | None = None
    # The 3D head (``head_model="3d"``): the photo's head and each frame's rigid motion; ``crop_points``
    # then hold the expression in the photo's own crop, and ``head_matrices`` the motions' nearest similarities.
    head: Head3D | None = None
    rigid: tuple[RigidMotion, ...] | None = None
    # With the 3D head: the face as the output shows it, in the crop (the targets less the nearest
    # similarity, as the flat head's ``crop_points``): what the eyes' and mouth's redrawing is judged by.
    seen_points: np.ndarray | None = None

    def select(self, indices: np.ndarray) -> "MotionPlan":
        matrices = None if self.head_matrices is None else self.head_matrices[indices]
        outlines = None if self.outline_matrices is None else self.outline_matrices[indices]
        rigid = None if self.rigid is None else tuple(self.rigid[i] for i in indices)
        seen = None if self.seen_points is None else self.seen_points[indices]
        return MotionPlan(self.crop_points[indices], matrices, self.reference, outlines, self.head, rigid, seen)


def choose_references(photo: Shot, track: LandmarkTrack, config: RenderConfig) -> References:
    """The driver frames relative motion is measured from (``config.reference`` resolved)."""
    height, width = photo.image.shape[:2]
    return resolve_reference(config.reference, track.points, track.valid, track.frame_size, photo.points,
                             (width, height))


def _to_crop(photo: Shot, points: Sequence[np.ndarray]) -> np.ndarray:
    """(T, 68, 2) photo-pixel landmarks -> the photo's crop coordinates, float32."""
    if not len(points):
        return np.zeros((0, 68, 2), np.float32)
    return np.stack([photo.crop.points_to_crop(p) for p in points]).astype(np.float32)


def plan_motion(photo: Shot, track: LandmarkTrack, config: RenderConfig) -> MotionPlan:
    """Retarget the driver onto the photo (from the chosen reference frame) and split the result
    into the head's similarity and the face's motion inside a crop that follows it."""
    reference = References(0, 0)
    if config.relative:
        reference = choose_references(photo, track, config)
        image_points = retarget_relative(photo.points, track.points, reference.pose,
                                         full_closure=config.full_closure, expression_reference=reference.expression)
        if reference.usual_pose:
            image_points = about_typical_pose(photo.points, image_points)
        if config.moves_whole_head and config.head_model == "3d":
            image_points = carry_in_3d(photo.points, image_points, track.points, reference.pose,
                                       reference.expression, config.full_closure)
        image_points = hold_still(photo.points, image_points)
    else:
        image_points = retarget_absolute(photo.points, track.points)
    if not config.moves_whole_head:
        return MotionPlan(_to_crop(photo, image_points), None, reference)
    if config.head_model == "3d":
        head = Head3D.from_photo(photo.image.shape[:2], photo.points)
        rigid, expressions = head.motions(image_points)
        matrices = head_similarities(photo.points, rigid.project(head.points3d))
        seen = [apply_affine(invert_affine(m), p) for m, p in zip(matrices, image_points)]
        return MotionPlan(_to_crop(photo, expressions), matrices, reference, None, head, rigid.frames(),
                          _to_crop(photo, seen))
    matrices = head_similarities(photo.points, image_points)
    stabilised = [apply_affine(invert_affine(m), p) for m, p in zip(matrices, image_points)]
    outlines = (np.stack([outline_similarity(m, photo.points, p) for m, p in zip(matrices, image_points)])
                if len(matrices) else matrices)
    return MotionPlan(_to_crop(photo, stabilised), matrices, reference, outlines)


def describe_reference(photo: Shot, driver: Driver, config: RenderConfig) -> str:
    """The reference frames ``plan_motion`` will use, in words (for the one-line run summary)."""
    if not config.relative:
        return "absolute motion"
    refs = choose_references(photo, driver.track, config)
    if refs.usual_pose:
        return f"the head about the driver's usual pose, expression reference frame {refs.expression}"
    if refs.pose == refs.expression:
        return f"reference frame {refs.pose}"
    return f"reference frame {refs.pose}, expression {refs.expression}"


def scale_affine(matrix: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """A photo-pixel affine expressed for the photo resized by (scale_x, scale_y) (pixel centres kept)."""
    to_small = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1]])
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return (to_small @ full @ np.linalg.inv(to_small))[:2]


def frame_indices(frame_count: int, source_fps: float, output_fps: float) -> np.ndarray:
    """Which driver frame each output frame shows, keeping the duration (and so the audio) the same."""
    if abs(source_fps - output_fps) < 1e-6:
        return np.arange(frame_count)
    count = max(1, round(frame_count * output_fps / source_fps))
    return np.minimum(np.round(np.arange(count) * source_fps / output_fps).astype(int), frame_count - 1)


def output_size(photo: Shot, config: RenderConfig, crop_size: int) -> tuple[int, int]:
    """(width, height) of the output video, even, following the photo's aspect ratio."""
    height, width = (crop_size, crop_size) if config.crop_only else photo.image.shape[:2]
    longest = config.size or min(max(width, height), MAX_DEFAULT_SIDE)
    scale = longest / max(width, height)
    return even_size(round(width * scale), round(height * scale))


def fit_frame(frame: np.ndarray, size: tuple[int, int], enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``frame`` at the output's (width, height): as it is, its odd last column or row dropped (the encoder's
    even size; resizing 577 px to 576 blurred the whole frame to under half its detail), or resized."""
    height, width = frame.shape[:2]
    if 0 <= width - size[0] <= 1 and 0 <= height - size[1] <= 1:
        return frame if (width, height) == size else frame[:size[1], :size[0]]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if width > size[0] else enlarge)


def photo_at_output_size(photo: Shot, size: tuple[int, int]) -> Shot:
    """The photo shrunk once to the output's (width, height), its crop and landmarks moved along;
    the crop image and crop-space landmarks stay as they are. Compositing a large photo at full
    size and shrinking every frame costs about a second a frame for an 8000 px photo."""
    height, width = photo.image.shape[:2]
    if size[0] >= width - 1 or size[1] >= height - 1:
        return photo        # the same size, or one odd pixel more (``fit_frame`` drops it from each frame)
    scale_x, scale_y = size[0] / width, size[1] / height
    image = cv2.resize(photo.image, size, interpolation=cv2.INTER_AREA)
    # Pixel centres: x' = (x + 0.5) * scale - 0.5.
    center = ((photo.crop.center[0] + 0.5) * scale_x - 0.5, (photo.crop.center[1] + 0.5) * scale_y - 0.5)
    crop = FaceCrop(center, photo.crop.side * scale_x, photo.crop.size)
    points = ((photo.points + 0.5) * np.array([scale_x, scale_y]) - 0.5).astype(np.float32)
    return replace(photo, image=image, points=points, crop=crop)


def run_ahead(items: Iterator[T], limit: int, name: str) -> Iterator[T]:
    """Iterate ``items`` in a worker thread, at most ``limit`` items ahead of the consumer.

    Chained, these make a pipeline whose slowest stage sets the pace. An exception in the worker
    is raised here, in the consumer; closing this generator (or an exception in the consumer)
    stops the worker, which finishes its current item and exits, and closes ``items`` in turn.
    """
    buffer: queue.Queue = queue.Queue(maxsize=limit)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[object, object]) -> bool:
        while not stop.is_set():  # the consumer may be gone: never block forever
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed over to the consumer, which re-raises it
            put((done, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def compose_frames(renderer: FrameRenderer, photo: Shot, targets: np.ndarray, config: RenderConfig,
                   size: tuple[int, int], head_matrices: np.ndarray | None = None,
                   outline_matrices: np.ndarray | None = None, head: Head3D | None = None,
                   rigid: Sequence[RigidMotion] | None = None, seen: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Render the targets in batches and paste each face back into the photo (or keep the crop).

    With ``head_matrices`` (photo -> output similarity per target, in ``photo``'s pixels) the whole
    head moves first (``HeadMotion``, by ``outline_matrices`` when given) and the face crop, which
    follows the head, is pasted into the moved head.

    With ``head`` and ``rigid`` (the 3D head and each target's rigid motion, ``plan_motion``) the head
    turns in 3D and ``targets`` are the expression in the photo's own crop (full-resolution path only);
    ``seen``: the face as the output shows it, in the crop, which decides how strongly parts are redrawn.

    Generation and compositing run in two worker threads, each a little ahead of the next stage
    (the caller, usually the encoder), so the slowest stage sets the pace; frames come out in order.
    """
    layered = not config.crop_only and getattr(renderer, "draws_layers", False)
    # How many output pixels one pixel of the working size covers (the face's crop as the output shows it).
    shown = photo.crop.side / renderer.size

    def rendered_batches() -> Iterator[tuple[np.ndarray, Any]]:
        for start in range(0, len(targets), config.batch_size):
            batch = targets[start:start + config.batch_size]
            if layered:
                measured = None if seen is None else seen[start:start + config.batch_size]
                yield batch, renderer.render_layers(batch, measure_points=measured, shown=shown)
            else:
                yield batch, renderer.render(batch)

    generated = run_ahead(rendered_batches(), RENDERED_BATCHES_AHEAD, "generate")
    motion = (HeadMotion(HeadLayers.from_photo(photo.image, photo.points), field_step(photo.points))
              if head_matrices is not None and not config.crop_only else None)
    outlines = head_matrices if outline_matrices is None else outline_matrices
    whole_crop = getattr(renderer, "keeps_crop_border", False)
    if layered:
        compositor = FullResCompositor(photo, renderer.size, motion, whole_crop=whole_crop, head3d=head)
        composited = composite_layers(generated, compositor, size, head_matrices, outlines, rigid)
    elif motion is not None:
        composited = composite_head_batches(generated, renderer.size, photo, motion, head_matrices, size, outlines)
    else:
        composited = composite_batches(generated, renderer.size, photo, config, size, whole_crop=whole_crop)
    try:
        yield from run_ahead(composited, COMPOSITED_FRAMES_AHEAD, "composite")
    finally:
        generated.close()  # after the compositing thread has stopped: it was the one iterating it


def composite_layers(batches: Iterator[tuple[np.ndarray, list]], compositor: FullResCompositor, size: tuple[int, int],
                     head_matrices: np.ndarray | None, outline_matrices: np.ndarray | None,
                     rigid: Sequence[RigidMotion] | None = None) -> Iterator[np.ndarray]:
    """(target points, face layers) batches -> output frames of ``size`` (width, height), each the photo
    resampled once at its own resolution with what it lacks laid over it (``render.fullres``)."""
    def compose(layer: Any, points: np.ndarray, index: int) -> np.ndarray:
        matrix = outline = None
        if head_matrices is not None:
            matrix, outline = head_matrices[index], outline_matrices[index]
        frame = compositor.compose(layer, points, matrix, outline, None if rigid is None else rigid[index])
        return fit_frame(frame, size, cv2.INTER_CUBIC)

    # Frames are composed COMPOSE_WORKERS at a time (OpenCV and numpy release the GIL): a large photo's
    # frames cost most here, while the renderer's thread waits.
    pending: collections.deque = collections.deque()
    index = 0
    with concurrent.futures.ThreadPoolExecutor(COMPOSE_WORKERS, thread_name_prefix="compose") as pool:
        try:
            for batch, layers in batches:
                for layer, points in zip(layers, batch):
                    pending.append(pool.submit(compose, layer, points, index))
                    index += 1
                    if len(pending) >= COMPOSE_WORKERS:
                        yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def composite_batches(batches: Iterator[tuple[np.ndarray, np.ndarray]], crop_size: int, photo: Shot,
                      config: RenderConfig, size: tuple[int, int], whole_crop: bool = False) -> Iterator[np.ndarray]:
    """(target points, rendered crops) batches -> output frames of ``size`` (width, height).

    ``whole_crop``: the crops match the photo at their border (a warp of the photo), so the whole
    crop is pasted with a faded border and head, hair and neck move together; otherwise a mask
    around the face, where it is now and where it was in the photo.
    """
    # Renderers may return crops larger than the shot's crop (more detail): same region, more pixels.
    scale = crop_size / photo.crop.size
    compositor = None if config.crop_only else Compositor(photo.image, photo.crop.with_size(crop_size),
                                                          crop_mask(crop_size) if whole_crop else None)
    photo_mask = face_mask(photo.crop_points * scale, crop_size)
    for batch, crops in batches:
        for crop_image, points in zip(crops, batch):
            if compositor is None:
                frame = crop_image
            elif whole_crop:
                frame = compositor.compose(crop_image)
            else:
                # The face moves: cover where it is now and where it was in the photo.
                mask = np.maximum(face_mask(points * scale, crop_size), photo_mask)
                frame = compositor.compose(crop_image, mask)
            yield fit_frame(frame, size)


def composite_head_batches(batches: Iterator[tuple[np.ndarray, np.ndarray]], crop_size: int, photo: Shot,
                           motion: HeadMotion, head_matrices: np.ndarray, size: tuple[int, int],
                           outline_matrices: np.ndarray) -> Iterator[np.ndarray]:
    """(crop points, rendered crops) batches -> output frames: the head moved by its outline's
    similarity, then the face crop (which follows the face's) pasted over it with a soft face mask."""
    scale = crop_size / photo.crop.size
    crop_to_photo = photo.crop.with_size(crop_size).inverse_matrix
    # The mask is smooth: made at a quarter of the crop's size and enlarged (a 512 px mask with its
    # dilation and blur cost more than the whole motion stage).
    small = max(32, crop_size // MASK_REDUCTION)
    factor = small / crop_size

    def mask_for(points: np.ndarray) -> np.ndarray:
        reduced = face_mask((points * scale + 0.5) * factor - 0.5, small)
        return cv2.resize(reduced, (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)

    photo_mask = mask_for(photo.crop_points)
    index = 0
    for batch, crops in batches:
        for crop_image, points in zip(crops, batch):
            matrix = head_matrices[index]
            frame = motion.render(outline_matrices[index])
            index += 1
            mask = np.maximum(mask_for(points), photo_mask)
            paste_affine(frame, crop_image, compose_affine(matrix, crop_to_photo), mask)
            yield fit_frame(frame, size)


def side_by_side_frames(frames: Iterator[np.ndarray], driver: Driver, indices: np.ndarray) -> Iterator[np.ndarray]:
    """Driver | result, the driver scaled to the result's height."""
    driver_frames = iter_frames(driver.path) if driver.video is not None else iter(())
    current, position = None, -1
    for index, frame in zip(indices, frames):
        while position < index:
            current = next(driver_frames, current)
            position += 1
        height = frame.shape[0]
        if current is None:
            left = np.zeros((height, height, 3), np.uint8)
        else:
            width = max(2, round(current.shape[1] * height / current.shape[0]) // 2 * 2)
            left = cv2.resize(current, (width, height), interpolation=cv2.INTER_AREA)
        yield np.concatenate([left, frame], axis=1)


@dataclass
class FrameStream:
    """The output frames of one driving, in order, with what made them."""

    frames: Iterator[np.ndarray]
    size: tuple[int, int]           # (width, height) of each frame
    fps: float
    indices: np.ndarray             # the driver frame each output frame shows
    reference: References           # the driver frames relative motion is measured from


def output_photos(photo: Shot, config: RenderConfig, crop_size: int) -> tuple[tuple[int, int], Shot, Shot]:
    """The output's (width, height), the photo the frames are composed over (shrunk once to the output's size,
    ``photo_at_output_size``), and the photo the motion is planned on: the 3D head in the pixels of the photo as
    the output shows it (its depths with them), else the photo itself."""
    size = output_size(photo, config, crop_size)
    backdrop = photo if config.crop_only else photo_at_output_size(photo, size)
    planned = backdrop if config.moves_whole_head and config.head_model == "3d" else photo
    return size, backdrop, planned


def render_frames(renderer: FrameRenderer, person: Person, driver: Driver, config: RenderConfig) -> FrameStream:
    """Every output frame (composited, not yet side by side), produced lazily in worker threads;
    close ``frames`` when stopping early."""
    photo = person.photo
    source_fps = driver.video.fps if driver.video else driver.track.fps
    fps = config.fps or source_fps
    indices = frame_indices(len(driver.track), source_fps, fps)
    size, backdrop, planned = output_photos(photo, config, renderer.size)
    plan = plan_motion(planned, driver.track, config).select(indices)
    log.debug("reference frames: pose %d, expression %d", plan.reference.pose, plan.reference.expression)
    matrices, outlines = plan.head_matrices, plan.outline_matrices
    if matrices is not None and backdrop is not planned:
        sx, sy = backdrop.image.shape[1] / photo.image.shape[1], backdrop.image.shape[0] / photo.image.shape[0]
        matrices = np.stack([scale_affine(m, sx, sy) for m in matrices])
        outlines = np.stack([scale_affine(m, sx, sy) for m in outlines])
    frames = compose_frames(renderer, backdrop, plan.crop_points, config, size, head_matrices=matrices,
                            outline_matrices=outlines, head=plan.head, rigid=plan.rigid, seen=plan.seen_points)
    return FrameStream(frames, size, fps, indices, plan.reference)


def render_video(renderer: FrameRenderer, person: Person, driver: Driver, output: str | Path,
                 config: RenderConfig, progress: ProgressReporter | None = None,
                 preview: str | Path | None = None) -> Path:
    """Render every driving frame and write the video atomically (with the driver's audio);
    ``preview``: also write a PNG contact sheet (photo, driving frames, the same output frames)."""
    progress = progress or SilentProgress()
    stream = render_frames(renderer, person, driver, config)
    composed, size, fps, indices = stream.frames, stream.size, stream.fps, stream.indices
    kept: dict[int, np.ndarray] = {}
    shown = preview_indices(len(indices)) if preview is not None else []
    frames = keep_frames(composed, shown, kept) if shown else composed
    if config.side_by_side:
        frames = side_by_side_frames(frames, driver, indices)
        driver_width = (round(driver.video.size[0] * size[1] / driver.video.size[1]) // 2 * 2
                        if driver.video else size[1])
        size = (size[0] + max(2, driver_width), size[1])
    audio_from = driver.path if (config.audio and driver.video and driver.video.has_audio) else None
    # closing(): whatever stops the writing (an error, Ctrl-C) also stops the worker threads and
    # the driver's decoder, not only the encoder.
    with contextlib.closing(composed), contextlib.closing(frames), \
            progress.stage("render", len(indices)) as advance, \
            VideoWriter(output, fps, size, crf=config.crf, audio_from=audio_from,
                        overwrite=config.overwrite) as writer:
        for frame in frames:
            writer.write(frame)
            advance(1)
    if preview is not None:
        track = driver.track
        source_fps = driver.video.fps if driver.video else track.fps
        driving = [(int(indices[i]), driver.kept_frames.get(int(indices[i])) if int(indices[i]) in driver.kept_frames
                    else driver_frame(driver.path, driver.video is not None, source_fps, int(indices[i]),
                                      track.points[indices[i]], track.frame_size)) for i in shown]
        write_preview(preview, person.photo.image, driving, [(int(indices[i]), kept[i]) for i in shown],
                      overwrite=config.overwrite)
    return Path(output)
