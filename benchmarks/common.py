"""What the benchmark scripts share: the machine's description, untrained weights of a preset,
timing helpers and markdown tables (Rich, so they paste into README as they are)."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "samples" / "portrait.jpg"
DRIVER = REPO / "samples" / "drive.mp4"


def setup_process() -> None:
    """What the CLI's entry point sets process-wide (OpenCV threads fight torch's on small machines)."""
    import cv2

    cv2.setNumThreads(1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine: CPU, cores, GPU, library versions, load."""
    import onnxruntime

    parts = [f"CPU: {cpu_model()}, {os.cpu_count()} cores"]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    parts.append(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    parts.append("load average (1 min) {:.2f}".format(os.getloadavg()[0]))
    return "; ".join(parts)


def untrained_weights(preset: str, folder: Path, guidance: str = "warp", seed: int = 0,
                      blend_region: str = "all") -> Path:
    """An untrained checkpoint of ``preset``, as `animate-face init` writes it (speed does not
    depend on the weights' values)."""
    from animate_cli.config import get_preset
    from animate_cli.models import TalkingHeadModel

    target = folder / f"{preset}-{guidance}-{blend_region}"
    if not (target / "model.safetensors").exists():
        torch.manual_seed(seed)
        TalkingHeadModel(get_preset(preset, guidance=guidance, blend_region=blend_region)).save_pretrained(
            target, training={"kind": "untrained", "preset": preset, "seed": seed})
    return target


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> "Timer":
        synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize()
        self.seconds = time.perf_counter() - self.start


class TimedRenderer:
    """A renderer wrapper that adds up the time spent rendering (``render``, or ``render_layers`` for the
    full-resolution path the pipeline takes when the renderer draws layers) and keeps what it made."""

    def __init__(self, renderer, keep: bool = True):
        self.renderer = renderer
        self.size = renderer.size
        self.draws_layers = getattr(renderer, "draws_layers", False)
        self.keeps_crop_border = getattr(renderer, "keeps_crop_border", False)
        self.seconds = 0.0
        self.crops: list = []
        self.keep = keep

    def _timed(self, render, target_points: np.ndarray):
        with Timer() as timer:
            made = render(target_points)
        self.seconds += timer.seconds
        if self.keep:
            self.crops.append(made)
        return made

    def render(self, target_points: np.ndarray) -> np.ndarray:
        return self._timed(self.renderer.render, target_points)

    def render_layers(self, target_points: np.ndarray, measure_points: np.ndarray | None = None,
                      shown: float = 1.0) -> list:
        return self._timed(lambda points: self.renderer.render_layers(points, measure_points=measure_points,
                                                                      shown=shown), target_points)


class ReplayRenderer:
    """Hands back crops (or face layers) rendered earlier, so compositing and encoding can be timed alone."""

    def __init__(self, crops: list, size: int, draws_layers: bool = False, keeps_crop_border: bool = False):
        self.batches = iter(crops)
        self.size = size
        self.draws_layers = draws_layers
        self.keeps_crop_border = keeps_crop_border

    def render(self, target_points: np.ndarray) -> np.ndarray:
        crops = next(self.batches)
        assert len(crops) == len(target_points)
        return crops

    def render_layers(self, target_points: np.ndarray, measure_points: np.ndarray | None = None,
                      shown: float = 1.0) -> list:
        return self.render(target_points)


def product_plan(renderer, person, track, config=None):
    """What ``render_frames`` hands ``renderer`` for ``track`` (default ``RenderConfig``): the motion plan
    (``plan_motion`` on the photo as the output shows it; ``crop_points`` are the targets, ``seen_points`` the
    measure points), the output's (width, height), and the path: True where the renderer draws layers
    (``render_layers``, then ``FullResCompositor`` at the output size), False for the crop path (``render``)."""
    from animate_cli.render.pipeline import RenderConfig, output_photos, plan_motion

    config = config or RenderConfig()
    size, _, planned = output_photos(person.photo, config, renderer.size)
    layered = not config.crop_only and getattr(renderer, "draws_layers", False)
    return plan_motion(planned, track, config), size, layered


def render_batch(renderer, layered: bool, targets: np.ndarray, measure: np.ndarray | None = None):
    """One batch down the path ``product_plan`` chose, as ``compose_frames`` renders it."""
    return renderer.render_layers(targets, measure_points=measure) if layered else renderer.render(targets)


def composited_seconds(renderer, person, track, config=None) -> float:
    """Wall seconds of ``render_frames`` (plan, render and composite at the output size, overlapped in its
    threads as in the product) over ``track``, the frames made and dropped, never encoded."""
    from animate_cli.render.pipeline import Driver, RenderConfig, render_frames

    with Timer() as timer:
        stream = render_frames(renderer, person, Driver(DRIVER, track, None), config or RenderConfig())
        for _ in stream.frames:
            pass
    return timer.seconds


# The path timed, as the tables name it: face layers composited at full resolution, or the old crop path
# (only for a renderer that draws no layers: a generator without warp guidance).
PATH_LABELS = {True: "layers", False: "crop"}


def print_tables(tables: list[tuple[str, list[str], list[list[str]]]], notes: list[str]) -> None:
    """Markdown tables (title, columns, rows), then the machine's line and notes, on stdout."""
    console = Console(width=250)
    for title, columns, rows in tables:
        table = Table(*columns, title=title, box=box.MARKDOWN)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"\nMachine: {machine()}", highlight=False)
    for note in notes:
        console.print(note, highlight=False)
