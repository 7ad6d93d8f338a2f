"""The person's photos: which files, and the cheap checks that each loads and shows a face.

No torch here: these checks run before the model loads, so a bad photo fails in about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import MAX_SHOTS
from .errors import InputError, UsageError
from .io.images import IMAGE_EXTENSIONS, list_images, load_image
from .landmarks import LandmarkBackend, detect_photo_landmarks


def resolve_photo_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Photos of one person from files and/or folders (1 to MAX_SHOTS)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise InputError(f"folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})", item)
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise InputError("no such file or folder", item)
    if not paths:
        raise UsageError("give at least one photo of the person")
    if len(paths) > MAX_SHOTS:
        raise UsageError(f"{len(paths)} photos given; the model takes 1 to {MAX_SHOTS} photos of one person "
                         f"(pick the {MAX_SHOTS} most varied ones)")
    return paths


@dataclass(frozen=True)
class PhotoFace:
    """A photo, loaded, with the landmarks of its chosen face (before any crop size is known)."""

    path: Path
    image: np.ndarray
    points: np.ndarray


def find_faces(paths: Sequence[Path], backend: LandmarkBackend, face_index: int = 0) -> list[PhotoFace]:
    """Load each photo and find its face: the cheap checks of the person's photos (InputError for
    an unreadable photo, NoFaceError for one without a usable face, each naming the file)."""
    found = []
    for path in paths:
        image = load_image(path)
        found.append(PhotoFace(Path(path), image, detect_photo_landmarks(backend, image, face_index=face_index,
                                                                         path=path)))
    return found
