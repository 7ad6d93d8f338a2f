"""Seconds per stage of the main job on the samples (samples/portrait.jpg driven by samples/drive.mp4).

    python benchmarks/stages.py [--presets small paper] [--steps N] [--backend auto|torch|onnx]
                                [--blend-region all|mouth_border]

For each preset, with untrained weights of that preset (warp guidance; speed does not depend on
the weights' values) and the default fine-tuning steps:

- photo landmarks, driver landmarks (tracking every driving frame);
- fine-tuning;
- renderer setup (spectral norm folded; for onnx, the in-memory export);
- generation: time inside the renderer (landmark images, warps, the network, the detail path),
  measured inside the overlapped pipeline;
- compositing + encoding alone: the same crops replayed through the pipeline without a network;
- render wall time: the overlapped pipeline (generation, compositing and encoding concurrently),
  and the frames per second it gives.

The device is chosen as the CLI does (CUDA when present), so the script runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (DRIVER, PORTRAIT, ReplayRenderer, TimedRenderer, Timer, print_tables, setup_process,
                    untrained_weights)

from animate_cli.config import FinetuneConfig, default_finetune_steps
from animate_cli.jobs import build_engine
from animate_cli.progress import SilentProgress
from animate_cli.render.pipeline import RenderConfig, load_driver, render_video


def run_preset(preset: str, steps: int, backend: str, folder: Path, blend_region: str) -> list[str]:
    weights = untrained_weights(preset, folder, blend_region=blend_region)
    engine = build_engine(str(weights), landmarks="auto", device="auto", backend=backend)
    with Timer() as lookup:
        engine.content_loss()  # once per process: VGG19 from the cache or the Hub, else the substitute
    progress = SilentProgress()
    person = engine.make_person([PORTRAIT], FinetuneConfig(steps=steps), progress=progress)
    driver = load_driver(DRIVER, engine.backend, smoothing=1.0, progress=progress, cache=False)  # tracking timed
    frames = len(driver.track)
    with Timer() as setup:
        renderer = TimedRenderer(engine.frame_renderer(person))
    config = RenderConfig()
    with Timer() as render:
        render_video(renderer, person, driver, folder / f"{preset}.mp4", config)
    with Timer() as replay:
        render_video(ReplayRenderer(renderer.crops, renderer.size, renderer.draws_layers, renderer.keeps_crop_border),
                     person, driver, folder / f"{preset}-replay.mp4",
                     config)
    landmarks = progress.seconds["landmarks"]
    total = (progress.seconds["photos"] + landmarks + progress.seconds["fine-tune"] + setup.seconds
             + render.seconds)
    print(f"{preset}: content loss lookup {lookup.seconds:.1f} s ({engine.content_loss().description})")
    return [preset, f"{engine.render_backend} ({engine.device.type})", f"{progress.seconds['photos']:.2f}",
            f"{landmarks:.1f} ({frames / landmarks:.0f} fps)", f"{progress.seconds['fine-tune']:.1f} ({steps})",
            f"{setup.seconds:.1f}", f"{renderer.seconds:.1f}", f"{replay.seconds:.1f}",
            f"{render.seconds:.1f}", f"{frames / render.seconds:.2f}", f"{total:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--steps", type=int, default=default_finetune_steps(1),
                        help="fine-tuning steps (default: the CLI's for one photo)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--blend-region", default="mouth_border", choices=["all", "mouth_border"],
                        help="the warp-guided generator's blend region (the bundled weights: mouth_border)")
    args = parser.parse_args()
    setup_process()
    with tempfile.TemporaryDirectory(prefix="animate-face-bench-") as tmp:
        rows = [run_preset(preset, args.steps, args.backend, Path(tmp), args.blend_region)
                for preset in args.presets]
    columns = ["preset", "backend", "photo landmarks s", "driver landmarks s", "fine-tune s (steps)",
               "renderer setup s", "generation s", "composite+encode s (alone)", "render wall s (overlapped)",
               "render fps", "total s"]
    print_tables([(f"animate-face stages: {PORTRAIT.name} driven by {DRIVER.name}", columns, rows)], [
        f"Untrained weights of each preset (guidance warp, blend region {args.blend_region}), default settings "
        "otherwise (output at the photo's size, H.264 at the default crf and preset, audio).",
        "Generation is timed inside the overlapped pipeline, where it shares the CPU with compositing and "
        "encoding; render wall < generation + composite+encode is the overlap's gain.",
    ])


if __name__ == "__main__":
    main()
