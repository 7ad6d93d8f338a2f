"""What the learned mouth and eyes cost: render fps with and without them, per renderer.

    python benchmarks/parts.py [--weights FOLDER] [--driver VIDEO] [--frames N]

The photo is samples/portrait.jpg; the driver is a real talking video from ../shared/realdata
when present (its mouth opens wider than the portrait's in most frames, so the part models run in
most frames), else the sample driver. Each renderer (warp; neural through the CPU's default
backend) renders the same targets in batches of 8 without part models, with the default learned eyes, and
with the learned mouth too (``--learned-mouth``); fps come
from the median batch after two warm-up batches. The table says in how many frames each part was
redrawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import DRIVER, PORTRAIT, REPO, Timer, print_tables, setup_process

BATCH = 8
WARM_UP_BATCHES = 2
REAL_DRIVER = REPO.parent / "shared" / "realdata" / "train" / "edtalk_mouth_source.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="checkpoint with part models (default: the bundled)")
    parser.add_argument("--driver", type=Path, default=REAL_DRIVER if REAL_DRIVER.is_file() else DRIVER)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()
    setup_process()

    from animate_cli.config import FinetuneConfig
    from animate_cli.io.video import iter_frames, probe_video
    from animate_cli.jobs import build_engine, describe_parts
    from animate_cli.landmarks import create_backend, track_video
    from animate_cli.parts.geometry import PARTS
    from animate_cli.parts.paint import part_strength
    from animate_cli.render.pipeline import target_crop_points

    backend = create_backend("dlib")
    info = probe_video(args.driver)
    frames = [f for _, f in zip(range(args.frames + WARM_UP_BATCHES * BATCH), iter_frames(args.driver, info=info))]
    track = track_video(backend, frames, info.fps)
    rows = []
    for renderer_name in ("warp", "neural"):
        for learned, mouth in ((False, False), (True, False), (True, True)):
            engine = build_engine(args.weights, landmarks="dlib", device="cpu", renderer=renderer_name,
                                  landmark_backend=backend, learned_parts=learned, learned_mouth=mouth)
            person = engine.make_person([PORTRAIT], FinetuneConfig(steps=0))
            targets = target_crop_points(person.photo, track)
            renderer = engine.frame_renderer(person)
            batches = [targets[s:s + BATCH] for s in range(0, len(targets) - BATCH + 1, BATCH)]
            times = []
            for number, batch in enumerate(batches):
                with Timer() as timer:
                    renderer.render(batch)
                if number >= WARM_UP_BATCHES:
                    times.append(timer.seconds)
            painted = ""
            if learned and engine.parts is not None:
                scale = renderer.size / (getattr(renderer, "model_size", None) or renderer.size)
                source = person.photo.crop.with_size(renderer.size).points_to_crop(person.photo.points)
                counts = {part: sum(part_strength(part, source, p * scale) > 0 for p in targets) for part in PARTS}
                painted = (f"mouth {counts['mouth'] if mouth else 0}, eyes {counts['right_eye'] + counts['left_eye']}"
                           f" of {len(targets)}")
            label = describe_parts(engine.part_names if engine.parts is not None else ())
            rows.append([renderer_name, label, str(renderer.size), f"{BATCH / np.median(times):.1f}", painted])
    print_tables([(f"render fps, {args.driver.name} driving samples/portrait.jpg", ["renderer", "mouth and eyes",
                                                                                 "crop px", "fps", "redrawn"],
                   rows)],
                 [f"{len(targets)} frames, batches of {BATCH}, median batch after {WARM_UP_BATCHES} warm-up batches; "
                  "neural: the CPU's default backend."])


if __name__ == "__main__":
    main()
