"""Compare the eye model with the warp's own eye (the lids slid over it), by how far the lids close.

    python scripts/measure_eye_closure.py VIDEO... [--max-frames 150]

Each video's first frame is the photo and its real landmarks drive it (self-reenactment, as ``eval-parts``
does): for every frame and eye whose lid gap differs from the photo's by more than EYE_CHANGE_START, the eye
crop of the warp alone (``FaceWarper``: closing lids slide over the photo's eye) and of the learned eye model
drawn over it at full strength are compared with the real frame's (SSIM and L1, 0-255), grouped by the
target's gap over the photo's. ``EYE_CLOSING`` in animate_cli/parts/paint.py decides where the model draws.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from animate_cli.eval.metrics import ssim
from animate_cli.eval.parts import CROP_SIZE
from animate_cli.hub import resolve_weights
from animate_cli.io.video import iter_frames, probe_video
from animate_cli.landmarks import create_backend, track_video
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.parts import load_parts
from animate_cli.parts.geometry import EYES, cut_part, eye_openness, part_matrix
from animate_cli.parts.paint import EYE_CHANGE_START, PartsPainter
from animate_cli.render.warp import FaceWarper

GROUPS = ((0.0, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, np.inf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--max-frames", type=int, default=150)
    args = parser.parse_args()
    parts = load_parts(resolve_weights(None))
    backend = create_backend("dlib")
    scores: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for path in args.videos:
        info = probe_video(path)
        frames = [frame for _, frame in zip(range(args.max_frames), iter_frames(path, info=info))]
        track = track_video(backend, frames, info.fps, path=path)
        crop = crop_from_landmarks(track.points[0], CROP_SIZE)
        photo, photo_points = crop.crop_image(frames[0]), crop.points_to_crop(track.points[0])
        warper = FaceWarper(photo, photo_points)
        painter = PartsPainter(parts, photo, photo_points, draw=EYES)
        shut = _shut(photo_points)
        for index in range(1, len(frames)):
            if not track.valid[index]:
                continue
            points = crop.points_to_crop(track.points[index])
            real = crop.crop_image(frames[index])
            warped = warper.warp(points)
            # The model over it at full strength (measured as if shut: its strength's closing fade left out).
            drawn = painter.paint(warped[None], points[None], measure_points=shut[None])[0]
            for part in EYES:
                gap, photo_gap = eye_openness(points, part), eye_openness(photo_points, part)
                if abs(gap - photo_gap) <= EYE_CHANGE_START:
                    continue
                group = next(i for i, (low, high) in enumerate(GROUPS) if low <= gap / photo_gap < high)
                size = parts.config.size_of(part)
                matrix = part_matrix(points, part, size)
                truth = cut_part(real, matrix, size).astype(np.float32)
                for name, image in (("warp", warped), ("model", drawn)):
                    made = cut_part(image, matrix, size)
                    scores[group, name].append((ssim(made, truth.astype(np.uint8)), float(np.abs(made - truth).mean())))
        print(f"{path}: done", flush=True)
    print("| target gap / photo's | crops | warp SSIM / L1 | model SSIM / L1 | warp - model SSIM (paired) |")
    print("|---|---|---|---|---|")
    for group, (low, high) in enumerate(GROUPS):
        warp, model = (np.array(scores[group, name]) for name in ("warp", "model"))
        if not len(warp):
            continue
        change = warp[:, 0] - model[:, 0]
        print(f"| {low:.2f}-{high:.2f} | {len(warp)} | {warp[:, 0].mean():.4f} / {warp[:, 1].mean():.2f} | "
              f"{model[:, 0].mean():.4f} / {model[:, 1].mean():.2f} | "
              f"{change.mean():+.4f} ± {change.std() / np.sqrt(len(change)):.4f} |")


def _shut(points: np.ndarray) -> np.ndarray:
    """``points`` with both eyes shut."""
    shut = np.asarray(points, np.float32).copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        shut[upper] = shut[lower]
    return shut


if __name__ == "__main__":
    main()
