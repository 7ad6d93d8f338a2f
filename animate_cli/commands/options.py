"""Choices and option declarations shared by the commands (the main command, batch, export, train, eval)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ..config import ONE_PHOTO_STEPS, SEVERAL_PHOTOS_STEPS


class Renderer(str, Enum):
    neural = "neural"
    warp = "warp"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class Landmarks(str, Enum):
    auto = "auto"
    fan = "fan"
    dlib = "dlib"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Mouth(str, Enum):
    """How the inside of an opening mouth is drawn (``jobs.MOUTHS``)."""
    teeth = "teeth"
    learned = "learned"
    synthetic = "synthetic"


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on internal errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")]

# Options shared by the main command, batch and export.
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="Hub repo owner/name[@revision] or a local folder. Default: $ANIMATE_FACE_WEIGHTS, "
    "else the bundled weights.", rich_help_panel="Model")]
LandmarksOpt = Annotated[Landmarks, typer.Option(
    "--landmarks", help="Landmark backend: auto (FAN when its weights are cached, else dlib), fan or dlib.",
    rich_help_panel="Model")]
RendererOpt = Annotated[Renderer, typer.Option(
    "--renderer", help="neural: the meta-learned generator; warp: a weights-free piecewise-affine warp.",
    rich_help_panel="Model")]
BackendOpt = Annotated[Backend, typer.Option(
    "--backend", help="What runs the generator: torch, onnx (onnxruntime) or auto (torch on a GPU, on a CPU "
    "the faster one measured by benchmarks/speed.py).", rich_help_panel="Model")]
LearnedPartsOpt = Annotated[bool, typer.Option(
    "--learned-parts/--no-learned-parts", help="Redraw eyes that blink shut, or open where the photo's are shut, with "
    "the weights' learned eye model (both renderers; a squint is the photo's own eye under lids slid over it, an "
    "eye opening wider the photo's eye stretched); "
    "--no-learned-parts: the warp's own eyes.", rich_help_panel="Model")]
MouthOpt = Annotated[Mouth, typer.Option(
    "--mouth", help="The inside of an opening mouth: teeth = the learned mouth model's upper teeth over the "
    "synthetic interior, which alone shows where the output enlarges the model's drawing (a large face); learned "
    "= the learned model's whole opening (reads less open); synthetic = the synthetic interior alone (teeth rows, "
    "a dark gap). See README.",
    rich_help_panel="Model")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the generator (torch backend, CUDA).",
                                          rich_help_panel="Model")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA when present (fp16), else CPU.",
                                           rich_help_panel="Model")]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--finetune-steps", min=0, help=f"Fine-tuning steps on the photos (0 = feed-forward, no training). Default: "
    f"{ONE_PHOTO_STEPS} for one photo, {SEVERAL_PHOTOS_STEPS} for several (measured; see README).",
    show_default=False, rich_help_panel="Fine-tuning")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed for fine-tuning.", rich_help_panel="Fine-tuning")]
SizeOpt = Annotated[Optional[int], typer.Option("--size", help="Longest side of the output in pixels "
                                                "(default: the photo's).", rich_help_panel="Output")]
FpsOpt = Annotated[Optional[float], typer.Option("--fps", help="Output frame rate (default: the driver's).",
                                                 rich_help_panel="Output")]
CrfOpt = Annotated[int, typer.Option("--crf", help="H.264 quality, 0 (lossless) to 51; lower is better.",
                                     rich_help_panel="Output")]
NoAudioOpt = Annotated[bool, typer.Option("--no-audio", help="Do not copy the driver's audio.",
                                          rich_help_panel="Output")]
CropOnlyOpt = Annotated[bool, typer.Option("--crop-only", help="Write just the face crop, not pasted back.",
                                           rich_help_panel="Output")]
SideOpt = Annotated[bool, typer.Option("--side-by-side", help="Write driver | result side by side.",
                                       rich_help_panel="Output")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.",
                                            rich_help_panel="Output")]
SmoothOpt = Annotated[float, typer.Option("--smoothing", min=0.0, help="Temporal smoothing of the driver's "
                                          "landmarks (0 = off).", rich_help_panel="Motion")]
AbsoluteOpt = Annotated[bool, typer.Option("--absolute", help="Use the driver's landmarks as they are instead of "
                                           "relative motion (the driver's face shape then leaks in).",
                                           rich_help_panel="Motion")]
FaceIndexOpt = Annotated[int, typer.Option("--face-index", min=0, help="Which face in the photo, largest first.",
                                           rich_help_panel="Motion")]
ReferenceOpt = Annotated[str, typer.Option(
    "--reference", help="Driver frame that motion is measured from: auto (the frame posed most like the photo for "
    "head pose, the one whose expression is closest to the photo's for expression), first, or a frame number.",
    rich_help_panel="Motion")]
HeadMotionOpt = Annotated[bool, typer.Option(
    "--head-motion/--no-head-motion", help="Move the whole head (hair, ears, neck) with the driver over a still "
    "background; --no-head-motion moves only the face inside a fixed crop.", rich_help_panel="Motion")]
HeadModelOpt = Annotated[str, typer.Option(
    "--head-model", help="How the whole head turns: 3d (a 3D head: the face turns as a face, the outline less) or "
    "flat (a 2D similarity, as before).", rich_help_panel="Motion")]

DEFAULT_STEPS = None  # the measured default for the number of photos (config.default_finetune_steps)
