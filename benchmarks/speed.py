"""Speed and memory: rendering fps per preset and backend, fine-tuning, landmarks, long drivers.

    python benchmarks/speed.py [--presets small paper] [--frames N] [--finetune-presets small paper]
                               [--memory-preset PRESET] [--skip-memory]

Every measurement runs in its own subprocess, so each peak memory figure is that configuration's
own (Linux peak RSS; on a GPU also torch's peak allocation):

- rendering: what the product does with the sample driver's motion applied to samples/portrait.jpg
  (the targets of ``render_frames``' motion plan, default settings), per preset (untrained weights,
  warp guidance) and backend: torch, onnx, and on CUDA torch with torch.compile. "renderer fps"
  times the renderer's share down the product's path: ``render_layers`` (landmark images, warps, the
  network, the photo's warp at its face size with the correction, the face layers), or the old crop
  path (``render``) only for a renderer that draws no layers (a generator without warp guidance); the
  "path" column says which. "+ composite fps" adds the full-resolution compositing at the photo's
  size: ``render_frames`` over the same number of frames, rendering and compositing overlapped in its
  threads, the frames dropped, never encoded. "network fps" times the generator call alone on the
  same batches; the first two batches are a warm-up, not timed; renderer and network fps come from
  the median batch time, which other processes' bursts on a shared machine do not move;
- fine-tuning: 8 photos (the portrait, flipped, turned and scaled) and the default steps;
- landmarks: tracking the sample driver, per landmark backend available here;
- memory: the whole main job (feed-forward, default backend) on the sample driver looped to 10 s
  and to 60 s: the peaks must match, since frames stream through.

The device is chosen as the CLI does (CUDA when present), so the script runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (DRIVER, PATH_LABELS, PORTRAIT, Timer, composited_seconds, gpu_peak_mb, peak_rss_mb,
                    print_tables, product_plan, render_batch, setup_process, untrained_weights)

BATCH = 8
# Untimed batches first: allocators, oneDNN primitive caches, cuDNN autotuning and torch.compile
# all pay their first-call costs there.
WARM_UP_BATCHES = 2
RESULT = "RESULT "


# ------------------------------------------------------------------------------------------------
# Children: one measurement each, printed as a JSON line.


def child_render(preset: str, backend: str, compile: bool, frames: int, track_path: str, folder: str) -> dict:
    import numpy as np

    from animate_cli.config import FinetuneConfig
    from animate_cli.jobs import build_engine
    from animate_cli.landmarks import LandmarkTrack
    from animate_cli.landmarks.drawing import draw_landmark_images
    from animate_cli.landmarks.regions import blend_regions

    engine = build_engine(str(untrained_weights(preset, Path(folder))), landmarks="auto", device="auto",
                          backend=backend, compile=compile)
    person = engine.make_person([PORTRAIT], FinetuneConfig(steps=0))
    warm_up_frames = WARM_UP_BATCHES * BATCH
    track = LandmarkTrack.load(track_path)

    def looped(count: int) -> LandmarkTrack:  # loops a short driver
        return LandmarkTrack(np.resize(track.points, (count, *track.points.shape[1:])), np.resize(track.valid, count),
                             track.fps, track.frame_size)

    with Timer() as setup:
        renderer = engine.frame_renderer(person)
    # The targets the product hands the renderer (its motion plan), and its path: face layers where the
    # renderer draws them, the crop path only where it cannot (a generator without warp guidance).
    plan, size, layered = product_plan(renderer, person, looped(frames + warm_up_frames))
    targets, seen = plan.crop_points, plan.seen_points if layered else None
    batches = [(targets[start:start + BATCH], None if seen is None else seen[start:start + BATCH])
               for start in range(0, len(targets), BATCH)]
    with Timer() as warm_up:
        for batch, measure in batches[:WARM_UP_BATCHES]:
            render_batch(renderer, layered, batch, measure)
    batches = batches[WARM_UP_BATCHES:]
    render_times = []
    for batch, measure in batches:
        with Timer() as rendering:
            render_batch(renderer, layered, batch, measure)
        render_times.append(rendering.seconds)
    # The renderer with the compositing at the photo's size, as the product runs them (overlapped in
    # render_frames' threads) over the same number of frames, made and dropped, never encoded.
    composited = composited_seconds(renderer, person, looped(frames))
    # The network alone, on the same inputs (landmark images, warped shots and blend regions prepared
    # beforehand).
    inputs = []
    for batch, _ in batches:
        warped = region = None
        if renderer.guidance == "warp":
            warped = np.stack([renderer.warpers[0].warp(points) for points in batch])
        if renderer.blend_region is not None:
            region = blend_regions(batch, renderer.model_size, renderer.blend_region)
        inputs.append((draw_landmark_images(batch, renderer.model_size), warped, region))
    network_times = []
    for landmark_images, warped, region in inputs:
        with Timer() as network:
            renderer.generate(landmark_images, warped, region)
        network_times.append(network.seconds)
    # fps from the median batch: robust to other processes' bursts on a shared machine.
    return {"setup": setup.seconds, "warm_up": warm_up.seconds, "fps": BATCH / np.median(render_times),
            "network_fps": BATCH / np.median(network_times), "composited_fps": frames / composited,
            "layered": layered, "output": list(size), "crop": renderer.size, "device": engine.device.type,
            "backend": engine.render_backend, "rss": peak_rss_mb(), "gpu": gpu_peak_mb()}


def child_finetune(preset: str, photos: str, folder: str) -> dict:
    from animate_cli.config import FinetuneConfig, resolve_steps
    from animate_cli.jobs import build_engine

    engine = build_engine(str(untrained_weights(preset, Path(folder))), landmarks="auto", device="auto")
    with Timer() as lookup:
        loss = engine.content_loss()
    count = len(list(Path(photos).iterdir()))
    config = resolve_steps(FinetuneConfig(), count)
    with Timer() as finetune:
        engine.make_person([photos], config)
    return {"seconds": finetune.seconds, "steps": config.steps, "photos": count,
            "lookup": lookup.seconds, "loss": loss.description, "device": engine.device.type,
            "rss": peak_rss_mb(), "gpu": gpu_peak_mb()}


def child_landmarks(backend_name: str, track_path: str) -> dict:
    from animate_cli.io.video import iter_frames, probe_video
    from animate_cli.landmarks import create_backend, track_video
    from animate_cli.render.renderers import resolve_device

    backend = create_backend(backend_name, device=str(resolve_device("auto")))
    info = probe_video(DRIVER)
    with Timer() as tracking:
        track = track_video(backend, iter_frames(DRIVER), info.fps, info.size)
    track.save(track_path)
    return {"fps": len(track) / tracking.seconds, "frames": len(track), "found": int(track.valid.sum()),
            "rss": peak_rss_mb()}


def run_child(**spec) -> dict:
    """Run one measurement in a fresh interpreter; its JSON result."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


# ------------------------------------------------------------------------------------------------
# Inputs made once.


def make_photos(folder: Path, count: int = 8) -> Path:
    """``count`` photos of the portrait's person: the portrait flipped, turned and scaled."""
    import cv2

    from animate_cli.io.images import load_image, save_image

    image = load_image(PORTRAIT)
    height, width = image.shape[:2]
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    for index in range(count):
        angle, scale = (-6, -3, 0, 3, 6, -4, 4, 0)[index], (1.0, 0.95, 1.05, 1.0, 0.97, 1.03, 1.0, 0.9)[index]
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        shot = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        save_image(photos / f"shot{index}.png", shot[:, ::-1].copy() if index % 2 else shot)
    return photos


def looped_driver(seconds: float, folder: Path) -> Path:
    """The sample driver looped to ``seconds`` (video and audio), as a new H.264 file."""
    from animate_cli.io.video import ffmpeg_exe

    path = folder / f"drive-{seconds:g}s.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(DRIVER), "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True)
    return path


def job_memory(driver: Path, weights: Path, folder: Path) -> dict:
    """The main job on ``driver`` in a child process: its wall time and its own peak RSS (wait4)."""
    output = folder / f"out-{driver.stem}.mp4"
    command = [sys.executable, "-m", "animate_cli.cli", str(PORTRAIT), "--drive", str(driver), "-o", str(output),
               "--weights", str(weights), "--finetune-steps", "0", "--overwrite", "-q"]
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"main job on {driver} failed:\n{stderr.read().decode(errors='replace')[-3000:]}")
    from animate_cli.io.video import probe_output

    return {"seconds": seconds, "rss": usage.ru_maxrss / 1024, "frames": probe_output(output)["frame_count"]}


# ------------------------------------------------------------------------------------------------


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--frames", type=int, help="frames timed per preset and backend "
                        "(default: 64 for small, 16 for paper on a CPU; 400 on a GPU)")
    parser.add_argument("--finetune-presets", nargs="*", default=None, help="default: --presets")
    parser.add_argument("--memory-preset", help="preset of the 10 s / 60 s runs (default: small on a GPU, "
                        "tiny on a CPU, where a 60 s driver at small would take several minutes)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    setup_process()
    if args.child:
        spec = json.loads(args.child)
        kind = spec.pop("kind")
        child = {"render": child_render, "finetune": child_finetune, "landmarks": child_landmarks}[kind]
        print(RESULT + json.dumps(child(**spec)), flush=True)
        return

    import torch

    from animate_cli.landmarks.fan_backend import fan_weights_cached

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="animate-face-speed-") as tmp:
        folder = Path(tmp)
        track = str(folder / "drive.npz")
        tables = []

        rows = []
        for name in ["dlib"] + (["fan"] if fan_weights_cached() else []):
            result = run_child(kind="landmarks", backend_name=name, track_path=track)
            rows.append([name, f"{result['fps']:.1f}", f"{result['found']}/{result['frames']}", mb(result["rss"])])
        tables.append(("landmarks: tracking samples/drive.mp4 (256x256)",
                       ["backend", "fps", "face found", "peak RSS MB"], rows))

        rows = []
        for preset in args.presets:
            untrained_weights(preset, folder)
            frames = args.frames or (400 if cuda else {"paper": 16}.get(preset, 64))
            variants = [("torch", False), ("onnx", False)] + ([("torch", True)] if cuda else [])
            results = {}
            for backend, compile in variants:
                results[backend, compile] = result = run_child(kind="render", preset=preset, backend=backend,
                                                               compile=compile, frames=frames, track_path=track,
                                                               folder=tmp)
                rows.append([preset, backend + (" + compile" if compile else ""), result["device"],
                             PATH_LABELS[result["layered"]], f"{result['crop']} px", str(frames),
                             f"{result['setup']:.1f}", f"{result['warm_up']:.1f}", f"{result['network_fps']:.2f}",
                             f"{result['fps']:.2f}", "{}x{}".format(*result["output"]),
                             f"{result['composited_fps']:.2f}", mb(result["rss"]), mb(result["gpu"])])
            torch_fps, onnx_fps = results["torch", False]["fps"], results["onnx", False]["fps"]
            faster, ratio = ("onnx", onnx_fps / torch_fps) if onnx_fps > torch_fps else ("torch", torch_fps / onnx_fps)
            rows.append([preset, f"faster: {faster}", "", "", "", "", "", "", "", f"x{ratio:.2f}", "", "", "", ""])
        tables.append(("rendering (warp guidance, untrained weights, batches of 8)",
                       ["preset", "backend", "device", "path", "crop", "frames", "setup s", "warm-up s", "network fps",
                        "renderer fps", "output px", "+ composite fps", "peak RSS MB", "GPU peak MB"], rows))

        rows = []
        photos = make_photos(folder)
        for preset in args.presets if args.finetune_presets is None else args.finetune_presets:
            result = run_child(kind="finetune", preset=preset, photos=str(photos), folder=tmp)
            rows.append([preset, result["device"], str(result["photos"]), str(result["steps"]),
                         f"{result['seconds']:.1f}", f"{result['lookup']:.1f}", result["loss"], mb(result["rss"]),
                         mb(result["gpu"])])
        tables.append(("fine-tuning (embedding + default steps)",
                       ["preset", "device", "photos", "steps", "seconds", "content-loss lookup s", "content loss",
                        "peak RSS MB", "GPU peak MB"], rows))

        if not args.skip_memory:
            preset = args.memory_preset or ("small" if cuda else "tiny")
            weights = untrained_weights(preset, folder)
            rows = []
            for seconds in (10, 60):
                result = job_memory(looped_driver(seconds, folder), weights, folder)
                rows.append([f"{seconds} s", str(result["frames"]), preset, f"{result['seconds']:.1f}",
                             mb(result["rss"])])
            change = (float(rows[1][4].replace(",", "")) / float(rows[0][4].replace(",", "")) - 1) * 100
            rows.append(["60 s vs 10 s", "", "", "", f"{change:+.1f} %"])
            tables.append(("memory: the whole main job (feed-forward) on the sample driver looped",
                           ["driver", "frames", "preset", "wall s", "peak RSS MB"], rows))

    print_tables(tables, [
        "Renderer fps: the renderer's share per frame, down the path the product takes (layers: render_layers, "
        "i.e. landmark image, warp of the nearest photo, generator, the photo's warp at its face size + the "
        "correction; crop: the old render, only for a renderer that draws no layers, a generator without warp "
        "guidance); network fps: the generator call alone; + composite fps: render_frames (the product's motion plan, "
        "rendering and full-resolution compositing at the output size, overlapped), frames dropped, not encoded.",
        "Peak RSS is each measurement's own process (a fresh interpreter per row).",
    ])


if __name__ == "__main__":
    main()
