"""The local batch against ``batch --ray`` on this machine: the same people, driver and settings.

    python benchmarks/ray_batch.py [--people 8] [--seconds 3] [--workers 1 2]

Needs the ``ray`` extra. ``--people`` copies of samples/portrait.jpg are driven by the first
``--seconds`` of samples/drive.mp4 with the CLI's defaults (bundled weights, landmarks auto, default
fine-tuning steps, full frame with audio). The engine and the driver's landmarks are prepared once,
as the batch command does, and not timed; then, each into a fresh folder:

- the local batch (``batch.run_batch``: one process);
- the Ray batch (``ray_batch.run_ray_batch``) with each ``--workers`` count, on a local Ray started
  once beforehand (its start is timed apart): each worker is a process with one thread that loads
  the model once, so the time includes the workers' start and the shipping of photos and videos.

The local batch runs twice: as the CLI runs it (torch's threads: one per core) and on one thread,
the work of one Ray worker (after one untimed person, so neither pays this process's one-time
costs); the difference between that and Ray with one worker, per person, is
what Ray costs per person (workers' start, shipping photos and videos). "speed-up" is against the
CLI's local batch. Every person of every run must come out "done".
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from common import DRIVER, PORTRAIT, Timer, print_tables, setup_process

from animate_cli.batch import BatchResult, discover_people, run_batch
from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.io.atomic import ensure_folder
from animate_cli.io.video import ffmpeg_exe
from animate_cli.jobs import build_engine
from animate_cli.ray_batch import import_ray, run_ray_batch
from animate_cli.render.pipeline import load_driver


def check_done(label: str, results: list[BatchResult]) -> None:
    failed = [f"{r.name} ({r.status}: {r.reason})" for r in results if r.status != "done"]
    if failed:
        raise SystemExit(f"{label}: not every person was done: {', '.join(failed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the driver clip")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    setup_process()
    ray = import_ray()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        driver_path = folder / "drive.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(DRIVER), "-t", f"{args.seconds}", "-c:v", "libx264",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", str(driver_path)], check=True)
        (folder / "people").mkdir()
        for index in range(args.people):
            (folder / "people" / f"p{index}.jpg").write_bytes(PORTRAIT.read_bytes())
        people = discover_people(folder / "people")
        engine = build_engine(None, "auto", "auto")
        driver = load_driver(driver_path, engine.backend, 1.0)
        finetune, config = FinetuneConfig(), RenderConfig()

        # One untimed person first: this process's one-time costs (lazy imports, first sessions) are not
        # the local batch's per-person cost. (Each Ray worker pays its own: part of what Ray costs.)
        check_done("warm-up", run_batch(engine, people[:1], driver, ensure_folder(folder / "warm-up"), finetune,
                                        config))
        threads = torch.get_num_threads()
        seconds = {}
        for label, count in ((f"local batch, {threads} threads (the CLI's)", threads), ("local batch, 1 thread", 1)):
            torch.set_num_threads(count)
            with Timer() as timer:
                check_done(label, run_batch(engine, people, driver, ensure_folder(folder / f"local-{count}"),
                                            finetune, config))
            seconds[label] = timer.seconds
        torch.set_num_threads(threads)
        with Timer() as start:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
        try:
            for workers in args.workers:
                label = f"batch --ray, {workers} worker{'s' if workers > 1 else ''} (1 thread each)"
                with Timer() as timer:
                    results = run_ray_batch(engine, people, driver, ensure_folder(folder / f"ray-{workers}"),
                                            finetune, config, workers=workers)
                check_done(label, results)
                seconds[label] = timer.seconds
        finally:
            ray.shutdown()
    reference = next(iter(seconds.values()))
    rows = [[label, f"{value:.1f}", f"{value / len(people):.2f}", f"{reference / value:.2f}x"]
            for label, value in seconds.items()]
    one_thread = seconds["local batch, 1 thread"]
    notes = [f"Ray {ray.__version__}; starting the local Ray took {start.seconds:.1f} s (not in the rows)."]
    if 1 in args.workers:
        ray_one = seconds["batch --ray, 1 worker (1 thread each)"]
        notes.append(f"Ray's cost per person (1 worker against the local batch on 1 thread, the same work): "
                     f"{(ray_one - one_thread) / len(people):+.2f} s.")
    frames = len(driver.track)
    print_tables([(f"{len(people)} people, a {args.seconds:g} s driver ({frames} frames), {engine.summary()}",
                   ["run", "seconds", "s / person", "speed-up"], rows)], notes)


if __name__ == "__main__":
    main()
