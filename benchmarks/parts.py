"""What the learned mouth and eyes cost: render fps with and without them, per renderer.

    python benchmarks/parts.py [--weights FOLDER] [--driver VIDEO] [--frames N] [--rounds N]

The photo is samples/portrait.jpg; the driver is a real talking video from ../shared/realdata
when present (its mouth opens wider than the portrait's in most frames, so the part models run in
most frames), else the sample driver. Each renderer (warp; neural through the CPU's default
backend) renders the same targets in batches of 8 without part models, with the learned eyes and the
synthetic mouth, with the learned teeth over it (``--mouth teeth``, the default) and with the learned
mouth's whole opening (``--mouth learned``).

What is timed is what the product does (``render_frames`` with the default settings: whole head, 3D
head): the targets are its motion plan's, and a renderer that draws layers (the warp, a warp-guided
generator) is timed in ``render_layers`` (the renderer's share: "renderer fps"), then with the
full-resolution compositing at the photo's size ("+ composite fps": ``render_frames`` over the same
frames, rendering and compositing overlapped in its threads as in the product, the frames dropped,
never encoded). Only a renderer that draws no layers (a generator without warp guidance) is timed in
the old crop path (``render``, then the crop pasted back); the table's "path" says which.

The eight configurations take turns, ``--rounds`` times over all targets (a busy shared machine slows
them alike); renderer fps are the median over rounds of each round's median batch, after two warm-up
batches; "+ composite fps" the median over rounds of frames / wall time. The table says in how many
frames each part was redrawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import (DRIVER, PATH_LABELS, PORTRAIT, REPO, Timer, composited_seconds, print_tables, product_plan,
                    render_batch, setup_process)

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
    from animate_cli.landmarks import LandmarkTrack, create_backend, track_video
    from animate_cli.parts.geometry import PARTS
    from animate_cli.parts.paint import part_strength

    backend = create_backend("dlib")
    info = probe_video(args.driver)
    frames = [f for _, f in zip(range(args.frames + WARM_UP_BATCHES * BATCH), iter_frames(args.driver, info=info))]
    track = track_video(backend, frames, info.fps)
    skip = WARM_UP_BATCHES * BATCH
    # The frames "+ composite" is timed over: the same as the renderer's timed batches.
    timed_track = LandmarkTrack(track.points[skip:], track.valid[skip:], track.fps, track.frame_size)
    configurations = []
    for renderer_name in ("warp", "neural"):
        for learned, mouth in ((False, "synthetic"), (True, "synthetic"), (True, "teeth"), (True, "learned")):
            engine = build_engine(args.weights, landmarks="dlib", device="cpu", renderer=renderer_name,
                                  landmark_backend=backend, learned_parts=learned, mouth=mouth)
            person = engine.make_person([PORTRAIT], FinetuneConfig(steps=0))
            renderer = engine.frame_renderer(person)
            plan, size, layered = product_plan(renderer, person, track)
            targets = plan.crop_points
            seen = plan.seen_points if layered else None  # the 3D head's face as the output shows it
            measured = targets if seen is None else seen  # what decides how strongly parts are redrawn
            batches = [(targets[s:s + BATCH], None if seen is None else seen[s:s + BATCH])
                       for s in range(0, len(targets) - BATCH + 1, BATCH)]
            for batch, measure in batches[:WARM_UP_BATCHES]:
                render_batch(renderer, layered, batch, measure)
            configurations.append((renderer_name, learned, mouth, engine, person, measured, renderer, layered, size,
                                   batches))
    round_fps: list[list[float]] = [[] for _ in configurations]
    round_composited: list[list[float]] = [[] for _ in configurations]
    for _ in range(args.rounds):
        for index, (*_, person, _, renderer, layered, _, batches) in enumerate(configurations):
            times = []
            for batch, measure in batches[WARM_UP_BATCHES:]:
                with Timer() as timer:
                    render_batch(renderer, layered, batch, measure)
                times.append(timer.seconds)
            round_fps[index].append(BATCH / float(np.median(times)))
            round_composited[index].append(len(timed_track) / composited_seconds(renderer, person, timed_track))
    rows = []
    for (renderer_name, learned, mouth, engine, person, measured, renderer, layered, size, _), fps, composited in zip(
            configurations, round_fps, round_composited):
        painted = ""
        if learned and engine.parts is not None:
            scale = renderer.size / (getattr(renderer, "model_size", None) or renderer.size)
            source = person.photo.crop.with_size(renderer.size).points_to_crop(person.photo.points)
            counts = {part: sum(part_strength(part, source, p * scale) > 0 for p in measured) for part in PARTS}
            painted = (f"mouth {counts['mouth'] if mouth != 'synthetic' else 0}, eyes {counts['right_eye'] + counts['left_eye']}"
                       f" of {len(measured)}")
        label = describe_parts(engine.part_names if engine.parts is not None else ())
        rows.append([renderer_name, label, PATH_LABELS[layered], str(renderer.size), f"{np.median(fps):.1f}",
                     f"{min(fps):.1f}-{max(fps):.1f}", f"{size[0]}x{size[1]}", f"{np.median(composited):.1f}",
                     painted])
    print_tables([(f"render fps, {args.driver.name} driving samples/portrait.jpg", ["renderer", "mouth and eyes",
                                                                                 "path", "crop px", "renderer fps",
                                                                                 "rounds' fps", "output px",
                                                                                 "+ composite fps", "redrawn"],
                   rows)],
                 [f"{len(timed_track)} frames timed, batches of {BATCH}, {args.rounds} interleaved rounds (median of "
                  f"each round's median batch) after {WARM_UP_BATCHES} warm-up batches; "
                  "neural: the CPU's default backend.",
                  "path: layers = render_layers timed (renderer fps), then + the full-resolution compositing at the "
                  "photo's size (render_frames over the timed frames: plan, render, composite; made and dropped, not "
                  "encoded); crop = the old render path, only where the renderer draws no layers (a generator "
                  "without warp guidance). "
                  "Targets: the product's motion plan (default settings: whole head, 3D head)."])


if __name__ == "__main__":
    main()
