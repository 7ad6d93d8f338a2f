"""Pipeline stages tested alone: compositing choices, frame resampling, photo resolution."""

from __future__ import annotations

import numpy as np

from animate_cli.landmarks import create_backend, detect_photo_landmarks
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.person import Shot
from animate_cli.render.pipeline import RenderConfig, composite_batches, frame_indices


def _shot(portrait_path) -> Shot:
    from animate_cli.io.images import load_image
    image = load_image(portrait_path)
    points = detect_photo_landmarks(create_backend("dlib"), image)
    return Shot.from_photo(str(portrait_path), image, points, crop_from_landmarks(points, 128))


def test_whole_crop_paste_moves_hair_and_background_with_the_head(portrait_path):
    """Warp-based crops are pasted whole, so nothing of the photo's own head stays beside a moved one."""
    shot = _shot(portrait_path)
    grey = np.full((1, 128, 128, 3), 77, np.uint8)
    batches = [(shot.crop_points[None], grey)]
    size = (shot.image.shape[1], shot.image.shape[0])
    whole = next(composite_batches(iter(batches), 128, shot, RenderConfig(), size, whole_crop=True))
    face_only = next(composite_batches(iter(batches), 128, shot, RenderConfig(), size, whole_crop=False))
    # A point inside the crop but well outside the face outline: above the forehead, in the hair.
    top = shot.crop.points_to_image(np.array([[64.0, 14.0]]))[0].round().astype(int)
    x, y = int(np.clip(top[0], 0, size[0] - 1)), int(np.clip(top[1], 0, size[1] - 1))
    assert abs(int(whole[y, x, 0]) - 77) <= 3
    assert abs(int(face_only[y, x, 0]) - 77) > 10
    # Far outside the crop both leave the photo untouched.
    assert (whole[-1, -1] == shot.image[-1, -1]).all()


def test_frame_indices_keep_the_duration():
    assert frame_indices(10, 25, 25).tolist() == list(range(10))
    half = frame_indices(100, 30, 15)
    assert len(half) == 50 and half[0] == 0 and half[-1] == 98
    double = frame_indices(10, 10, 20)
    assert len(double) == 20 and double.max() == 9
