"""The main job's time by photo size: the same face at 512 px, 1080p and 2048 px, driven by the sample driver.

    python benchmarks/photo_size.py [--renderers warp neural] [--frames N]

The photo is scikit-image's astronaut (a real face, public domain) enlarged to each size; for 1080p it
is 1080 px tall in a 1920 x 1080 frame (its border extended). The driver is samples/drive.mp4, tracked
once (tracking does not depend on the photo). Per size and renderer:

- setup: the photo's landmarks, the person, the renderer;
- render: the whole pipeline writing the video (render, composite and encode run concurrently);
- no encoder: the same frames made and dropped, never encoded;
- encoder share: 1 - no encoder / render (the pipeline overlaps its stages, so this is what encoding
  adds to the wall time, not its own CPU time);
- frames per second of the render, and the process's peak memory so far.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from common import DRIVER, Timer, peak_rss_mb, print_tables, setup_process
from skimage import data

from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.io.images import save_image
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack
from animate_cli.render.pipeline import load_driver, render_frames, render_video

SIZES = {"512 px": (512, 512), "1080p": (1920, 1080), "2048 px": (2048, 2048)}


def make_photo(size: tuple[int, int]) -> np.ndarray:
    width, height = size
    face = cv2.resize(data.astronaut(), (height, height), interpolation=cv2.INTER_CUBIC)
    if width == height:
        return face
    left = (width - height) // 2
    return cv2.copyMakeBorder(face, 0, 0, left, width - height - left, cv2.BORDER_REPLICATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderers", nargs="+", default=["warp", "neural"], choices=["warp", "neural"])
    parser.add_argument("--frames", type=int, default=None, help="Use only the driver's first N frames.")
    args = parser.parse_args()
    setup_process()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engines = {name: build_engine(None, landmarks="dlib", device="auto", renderer=name)
                   for name in args.renderers}
        backend = next(iter(engines.values())).backend
        driver = load_driver(DRIVER, backend, RenderConfig().smoothing)
        if args.frames:
            track = driver.track
            driver.track = LandmarkTrack(track.points[:args.frames], track.valid[:args.frames], track.fps,
                                         track.frame_size)
            driver.video = None
        count = len(driver.track)
        for label, size in SIZES.items():
            photo = folder / f"photo-{size[0]}.png"
            save_image(photo, make_photo(size))
            for name, engine in engines.items():
                config = RenderConfig(audio=False)
                with Timer() as setup:
                    person = engine.make_person([photo], FinetuneConfig(steps=0))
                    renderer = engine.frame_renderer(person)
                with Timer() as render:
                    render_video(renderer, person, driver, folder / f"{name}-{size[0]}.mp4", config)
                with Timer() as bare:
                    stream = render_frames(renderer, person, driver, config)
                    for _ in stream.frames:
                        pass
                share = max(0.0, 1.0 - bare.seconds / render.seconds)
                rows.append([label, f"{size[0]}x{size[1]}", name, f"{setup.seconds:.2f}", f"{render.seconds:.2f}",
                             f"{bare.seconds:.2f}", f"{share:.0%}", f"{count / render.seconds:.1f}",
                             f"{peak_rss_mb():.0f}"])
    print_tables([(f"the main job by photo size ({count} frames of samples/drive.mp4, tracked once)",
                   ["photo", "pixels", "renderer", "setup s", "render s", "no encoder s", "encoder share", "fps",
                    "peak MB"], rows)],
                 ["render: the pipeline writing the video at the default crf and x264 preset; no encoder: the same "
                  "frames made and dropped."])


if __name__ == "__main__":
    main()
