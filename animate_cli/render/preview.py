"""A contact sheet to judge a result at a glance: the photo, a few driving frames and the same
output frames, each labelled with its frame number (``--preview FILE.png``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..io.images import save_image
from ..io.video import read_frame_at
from ..landmarks.drawing import draw_landmark_image

# Output frames shown, spread over the clip, and the height of every tile in pixels.
PREVIEW_FRAMES = 4
TILE_HEIGHT = 240
LABEL_HEIGHT = 22
BACKGROUND = 24


def preview_indices(count: int, frames: int = PREVIEW_FRAMES) -> list[int]:
    """Output frame numbers spread over a clip of ``count`` frames, ends excluded where possible."""
    if count <= 0:
        return []
    if count <= frames:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, frames + 2)[1:-1]})


def keep_frames(frames: Iterator[np.ndarray], wanted: Sequence[int], store: dict[int, np.ndarray],
                shrink_to: int | None = None) -> Iterator[np.ndarray]:
    """Pass ``frames`` through, keeping a copy of those at the ``wanted`` positions in ``store``
    (shrunk to ``shrink_to`` pixels high when given)."""
    wanted = set(wanted)
    for index, frame in enumerate(frames):
        if index in wanted:
            if shrink_to is not None and frame.shape[0] > shrink_to:
                width = max(1, round(frame.shape[1] * shrink_to / frame.shape[0]))
                store[index] = cv2.resize(frame, (width, shrink_to), interpolation=cv2.INTER_AREA)
            else:
                store[index] = frame.copy()
        yield frame


def _tile(image: np.ndarray, label: str, width: int | None = None) -> np.ndarray:
    scale = TILE_HEIGHT / image.shape[0]
    fitted = cv2.resize(image, (max(1, round(image.shape[1] * scale)), TILE_HEIGHT),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    width = width or fitted.shape[1]
    tile = np.full((TILE_HEIGHT + LABEL_HEIGHT, width, 3), BACKGROUND, np.uint8)
    offset = (width - fitted.shape[1]) // 2
    tile[LABEL_HEIGHT:, offset:offset + fitted.shape[1]] = fitted[:, :width]
    cv2.putText(tile, label, (6, LABEL_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return tile


def driver_frame(driver_path: Path, has_video: bool, fps: float, index: int, points: np.ndarray,
                 frame_size: tuple[int, int]) -> np.ndarray:
    """The driving frame ``index``: decoded from the video (a seek, not a full decode), or for a
    saved landmark track, its landmarks drawn on black."""
    if has_video:
        frame = read_frame_at(driver_path, index / fps, height=TILE_HEIGHT)
        if frame is not None:
            return frame
    width, height = frame_size
    side = max(width, height)
    drawing = draw_landmark_image(np.asarray(points, np.float32) * (256 / side), 256)
    return drawing[: round(256 * height / side), : round(256 * width / side)]


def contact_sheet(photo: np.ndarray, driver_tiles: Sequence[tuple[int, np.ndarray]],
                  output_tiles: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Two rows: the photo then the driving frames; below, the output frames under their drivers."""
    width = max([TILE_HEIGHT] + [round(img.shape[1] * TILE_HEIGHT / img.shape[0])
                                 for _, img in (*driver_tiles, *output_tiles)])
    top = [_tile(photo, "photo")]
    bottom = [np.full_like(top[0], BACKGROUND)]
    for (index, driving), (_, output) in zip(driver_tiles, output_tiles):
        top.append(_tile(driving, f"driver #{index}", width))
        bottom.append(_tile(output, f"output #{index}", width))
    gap = np.full((TILE_HEIGHT + LABEL_HEIGHT, 4, 3), BACKGROUND, np.uint8)

    def row(tiles: list[np.ndarray]) -> np.ndarray:
        parts = []
        for tile in tiles:
            parts += [tile, gap]
        return np.concatenate(parts[:-1], axis=1)

    return np.concatenate([row(top), np.full((4, row(top).shape[1], 3), BACKGROUND, np.uint8), row(bottom)], axis=0)


def write_preview(path: str | Path, photo: np.ndarray, driver_tiles: Sequence[tuple[int, np.ndarray]],
                  output_tiles: Sequence[tuple[int, np.ndarray]], overwrite: bool = False) -> Path:
    """Write the contact sheet as a PNG, atomically."""
    return save_image(path, contact_sheet(photo, driver_tiles, output_tiles), overwrite=overwrite)
