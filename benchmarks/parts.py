"""What the learned mouth and eyes cost: render fps with and without them, per renderer.

    python benchmarks/parts.py [--weights FOLDER] [--driver VIDEO] [--frames N]

The photo is samples/portrait.jpg; the driver is a real talking video from ../shared/realdata
when present (its mouth opens wider than the portrait's in most frames, so the part models run in
most frames), else the sample driver. Each renderer (warp; neural through the CPU's default
backend) renders the same targets in batches of 8 without part models, with the learned eyes and the
synthetic mouth, with the learned teeth over it (``--mouth teeth``, the default) and with the learned
mouth's whole opening (``--mouth learned``). The eight configurations take turns,
``--rounds`` times over all targets (a busy shared machine slows them alike); fps are the median
over rounds of each round's median batch, after two warm-up batches. The table says in how many
frames each part was redrawn.
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all configurations")
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
    configurations = []
    for renderer_name in ("warp", "neural"):
        for learned, mouth in ((False, "synthetic"), (True, "synthetic"), (True, "teeth"), (True, "learned")):
            engine = build_engine(args.weights, landmarks="dlib", device="cpu", renderer=renderer_name,
                                  landmark_backend=backend, learned_parts=learned, mouth=mouth)
            person = engine.make_person([PORTRAIT], FinetuneConfig(steps=0))
            targets = target_crop_points(person.photo, track)
            renderer = engine.frame_renderer(person)
            batches = [targets[s:s + BATCH] for s in range(0, len(targets) - BATCH + 1, BATCH)]
            for batch in batches[:WARM_UP_BATCHES]:
                renderer.render(batch)
            configurations.append((renderer_name, learned, mouth, engine, person, targets, renderer, batches))
    round_fps: list[list[float]] = [[] for _ in configurations]
    for _ in range(args.rounds):
        for index, configuration in enumerate(configurations):
            renderer, batches = configuration[-2:]
            times = []
            for batch in batches[WARM_UP_BATCHES:]:
                with Timer() as timer:
                    renderer.render(batch)
                times.append(timer.seconds)
            round_fps[index].append(BATCH / float(np.median(times)))
    rows = []
    for (renderer_name, learned, mouth, engine, person, targets, renderer, _), fps in zip(configurations, round_fps):
        painted = ""
        if learned and engine.parts is not None:
            scale = renderer.size / (getattr(renderer, "model_size", None) or renderer.size)
            source = person.photo.crop.with_size(renderer.size).points_to_crop(person.photo.points)
            counts = {part: sum(part_strength(part, source, p * scale) > 0 for p in targets) for part in PARTS}
            painted = (f"mouth {counts['mouth'] if mouth != 'synthetic' else 0}, eyes {counts['right_eye'] + counts['left_eye']}"
                       f" of {len(targets)}")
        label = describe_parts(engine.part_names if engine.parts is not None else ())
        rows.append([renderer_name, label, str(renderer.size), f"{np.median(fps):.1f}",
                     f"{min(fps):.1f}-{max(fps):.1f}", painted])
    print_tables([(f"render fps, {args.driver.name} driving samples/portrait.jpg", ["renderer", "mouth and eyes",
                                                                                 "crop px", "fps", "rounds' fps",
                                                                                 "redrawn"],
                   rows)],
                 [f"{len(targets)} frames, batches of {BATCH}, {args.rounds} interleaved rounds (median of each round's "
                  f"median batch) after {WARM_UP_BATCHES} warm-up batches; "
                  "neural: the CPU's default backend."])


if __name__ == "__main__":
    main()
