"""Seconds the motion plan takes before the first frame: ``plan_motion`` (retargeting, and the 3D head's rigid
motion and expression for every driving frame).

    python benchmarks/plan.py [--photo PATH] [--drive PATH] [--repeat N]

The person is made without fine-tuning and the driver tracked once (neither is timed); the plan is made once
untimed, then ``--repeat`` times, each time printed, then the best. Defaults: the samples (the main job). To time
another version of the package, run this file from outside the checkout with ``PYTHONPATH`` naming its folder.
"""

from __future__ import annotations

import argparse
import time

from common import DRIVER, PORTRAIT, machine, setup_process

import animate_cli
from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.jobs import build_engine
from animate_cli.progress import SilentProgress
from animate_cli.render.pipeline import load_driver, output_photos, plan_motion

CROP_SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(PORTRAIT))
    parser.add_argument("--drive", default=str(DRIVER))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup_process()
    engine = build_engine(None, landmarks="auto", device="cpu", renderer="warp")
    progress = SilentProgress()
    person = engine.make_person([args.photo], FinetuneConfig(steps=0), progress=progress)
    track = load_driver(args.drive, engine.backend, smoothing=1.0, progress=progress).track
    _, _, planned = output_photos(person.photo, RenderConfig(), CROP_SIZE)
    config = RenderConfig()
    plan_motion(planned, track, config)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        plan_motion(planned, track, config)
        times.append(time.perf_counter() - start)
    print(machine())
    print(f"animate_cli: {animate_cli.__file__}")
    print(f"{len(track)} driving frames, plan_motion: " + " ".join(f"{t:.3f}" for t in times)
          + f" s; best {min(times):.3f} s")


if __name__ == "__main__":
    main()
