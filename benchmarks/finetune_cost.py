"""Seconds of fine-tuning per step count, for 1 photo and for 8, with the default content loss.

    python benchmarks/finetune_cost.py [--weights weights] [--steps 0 10 20 40 100] [--shots 1 8]
                                       [--no-face-loss]

The photos: ``samples/portrait.jpg`` for 1, and N frames spread over ``samples/drive.mp4`` for N > 1 (the
same person; no shared data needed). Each cell is the wall time of ``finetune_person`` (embedding,
the steps, and the checks that keep the best step), after one warm-up run. The content loss is the one
fine-tuning uses by default on this machine (offline: the pixel substitute plus dlib's face ResNet;
``--no-face-loss``: the substitute alone).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import DRIVER, PORTRAIT, REPO, Timer, peak_rss_mb, print_tables, setup_process

from animate_cli.config import FinetuneConfig
from animate_cli.finetune import finetune_person
from animate_cli.io.images import load_image
from animate_cli.io.video import iter_frames
from animate_cli.landmarks import create_backend, detect_photo_landmarks
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.losses import ContentLoss
from animate_cli.models import TalkingHeadModel
from animate_cli.person import Shot


def shots_of(images: list[np.ndarray], size: int) -> list[Shot]:
    backend = create_backend("dlib")
    shots = []
    for index, image in enumerate(images):
        points = detect_photo_landmarks(backend, image)
        shots.append(Shot.from_photo(f"photo-{index}", image, points, crop_from_landmarks(points, size)))
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(REPO / "weights"))
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 40, 100])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-face-loss", action="store_true")
    args = parser.parse_args()
    setup_process()
    model = TalkingHeadModel.from_pretrained(args.weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loss = ContentLoss.from_available(allow_download=False, face=not args.no_face_loss)
    frames = list(iter_frames(DRIVER))
    rows = []
    for count in args.shots:
        images = ([load_image(PORTRAIT)] if count == 1
                  else [frames[i] for i in np.linspace(0, len(frames) - 1, count).astype(int)])
        shots = shots_of(images, model.config.image_size)
        finetune_person(model, shots, FinetuneConfig(steps=2), loss, device)  # warm-up
        for steps in args.steps:
            with Timer() as timer:
                person = finetune_person(model, shots, FinetuneConfig(steps=steps), loss, device)
            kept = person.record.get("kept_step", 0) if person.record else 0
            rows.append([str(count), str(steps), f"{timer.seconds:.1f}",
                         f"{timer.seconds / steps:.2f}" if steps else "–", str(kept)])
    print_tables([("fine-tuning cost", ["photos", "steps", "seconds", "s/step", "kept step"], rows)], [
        f"Weights {args.weights} ({model.config.image_size} px), device {device.type}, "
        f"content loss: {loss.description}.",
        f"Peak RSS {peak_rss_mb():.0f} MB; torch threads {torch.get_num_threads()}.",
    ])


if __name__ == "__main__":
    main()
