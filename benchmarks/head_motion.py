"""Speed of whole-head motion with the warp renderer on a 512 px photo.

    python benchmarks/head_motion.py [--frames N]

The photo is scikit-image's astronaut (512 x 512, offline), driven by samples/drive.mp4. Rows:
whole-head motion on (the default) and off (``--no-head-motion``: the face moves inside a fixed
crop). Columns: the once-per-photo setup (segmentation and background plate), the motion stage
alone per frame, frames per second of the overlapped pipeline without encoding, and with H.264
encoding as the main command writes it, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from common import DRIVER, Timer, peak_rss_mb, print_tables, setup_process

from animate_cli.config import FinetuneConfig
from animate_cli.io.images import save_image
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack
from animate_cli.render.head_motion import HeadLayers, HeadMotion
from animate_cli.render.pipeline import Driver, RenderConfig, plan_motion, render_frames, render_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=185, help="driving frames (the sample has 185)")
    args = parser.parse_args()
    setup_process()
    from skimage import data

    engine = build_engine(renderer="warp", landmarks="dlib")
    rows = []
    with tempfile.TemporaryDirectory(prefix="animate-face-bench-") as tmp:
        photo_path = save_image(Path(tmp) / "astronaut.png", data.astronaut())
        person = engine.make_person([photo_path], FinetuneConfig(steps=0))
        from animate_cli.render.pipeline import load_driver

        full = load_driver(DRIVER, engine.backend, smoothing=1.0)
        count = min(args.frames, len(full.track))
        track = LandmarkTrack(full.track.points[:count], full.track.valid[:count], full.track.fps,
                              full.track.frame_size)
        driver = Driver(full.path, track, full.video)
        photo = person.photo
        with Timer() as setup:
            layers = HeadLayers.from_photo(photo.image, photo.points)
        plan = plan_motion(photo, track, RenderConfig())
        motion = HeadMotion(layers)
        with Timer() as stage:
            for matrix in plan.outline_matrices:
                motion.render(matrix)
        for name, config in (("on (default)", RenderConfig(audio=False)),
                             ("off (--no-head-motion)", RenderConfig(audio=False, head_motion=False))):
            renderer = engine.frame_renderer(person)
            with Timer() as frames_only:
                stream = render_frames(renderer, person, driver, config)
                produced = sum(1 for _ in stream.frames)
            with Timer() as encoded:
                render_video(renderer, person, driver, Path(tmp) / f"{len(rows)}.mp4", replace(config, overwrite=True))
            on = config.head_motion
            rows.append([name, f"{photo.image.shape[1]}x{photo.image.shape[0]}",
                         f"{setup.seconds:.2f}" if on else "–",
                         f"{1000 * stage.seconds / count:.1f}" if on else "–",
                         f"{produced / frames_only.seconds:.1f}", f"{count / encoded.seconds:.1f}",
                         f"{peak_rss_mb():.0f}"])
    columns = ["head motion", "photo", "setup s (matte + plate)", "motion stage ms/frame", "render fps (no encode)",
               "render fps (H.264)", "peak RSS MB"]
    print_tables([(f"warp renderer, astronaut driven by {DRIVER.name} ({count} frames)", columns, rows)], [
        "Overlapped pipeline (rendering and compositing in worker threads, encoding in the caller).",
    ])


if __name__ == "__main__":
    main()
