"""Milliseconds a frame each compositing step takes: where the full-resolution compositor's time goes.

    python benchmarks/compose.py [--photo PATH | --size 512|1080p|2048] [--renderer warp|neural] [--frames N]

The person is made without fine-tuning and the driver (samples/drive.mp4) tracked once (neither is timed);
then the frames are made and dropped (never encoded) with one compositing worker, so the steps' timers do not
overlap, and each step of ``FullResCompositor.compose`` (and the head's backward map) is timed around its call.
Defaults: the samples' photo and the bundled weights' neural renderer (the main job). ``--size`` uses
scikit-image's astronaut at that size, as ``photo_size.py`` does. To time another version of the package, run
this file from outside the checkout with ``PYTHONPATH`` naming its folder.
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from pathlib import Path

from common import DRIVER, PORTRAIT, print_tables, setup_process
from photo_size import SIZES, make_photo

import animate_cli
from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.io.images import save_image
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack
from animate_cli.render import fullres, head_motion, pipeline
from animate_cli.render.pipeline import load_driver, render_frames

STEPS = ("compose", "_resample", "_over_plate", "_lay_over", "_paint", "_plate_weight", "_face_mask", "_turned_box")


def timed(owner: type, name: str, seconds: collections.Counter, calls: collections.Counter) -> None:
    method = getattr(owner, name)

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start
            calls[name] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=None, help=f"a photo (default: {PORTRAIT.name})")
    parser.add_argument("--size", choices=[label.split()[0] for label in SIZES], default=None,
                        help="the astronaut at this size instead")
    parser.add_argument("--renderer", choices=["warp", "neural"], default="neural")
    parser.add_argument("--frames", type=int, default=None, help="only the driver's first N frames")
    args = parser.parse_args()
    setup_process()
    seconds, calls = collections.Counter(), collections.Counter()
    for name in STEPS:
        timed(fullres.FullResCompositor, name, seconds, calls)
    timed(head_motion.HeadMotion, "backward_map", seconds, calls)
    pipeline.COMPOSE_WORKERS = 1
    engine = build_engine(None, landmarks="dlib", device="auto", renderer=args.renderer)
    driver = load_driver(DRIVER, engine.backend, RenderConfig().smoothing, cache=False)
    if args.frames:
        track = driver.track
        driver.track = LandmarkTrack(track.points[:args.frames], track.valid[:args.frames], track.fps,
                                     track.frame_size)
        driver.video = None
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(args.photo) if args.photo else PORTRAIT
        if args.size:
            photo = Path(tmp) / "astronaut.png"
            save_image(photo, make_photo(next(size for label, size in SIZES.items() if label.split()[0] == args.size)))
        person = engine.make_person([photo], FinetuneConfig(steps=0))
        renderer = engine.frame_renderer(person)
        start = time.perf_counter()
        frames = sum(1 for _ in render_frames(renderer, person, driver, RenderConfig(audio=False)).frames)
        wall = time.perf_counter() - start
    rows = [[name, f"{1000 * seconds[name] / frames:.2f}", str(calls[name])]
            for name in ("compose", "backward_map", *STEPS[1:])]
    print(f"animate_cli: {animate_cli.__file__}")
    print_tables([(f"compositing {photo.name if not args.size else args.size} ({args.renderer}, {frames} frames, "
                   f"one worker, {wall:.2f} s made and dropped)", ["step", "ms a frame", "calls"], rows)],
                 ["compose includes the steps below it; backward_map is the head's field, inside compose."])


if __name__ == "__main__":
    main()
