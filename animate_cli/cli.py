"""The command line: parse, validate, call the library, turn typed errors into exit codes.

``animate-face PHOTO... --drive VIDEO -o OUT`` is the main command; ``batch``, ``landmarks``,
``pull``, ``publish``, ``init`` and ``presets`` are subcommands.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .cli_options import Device, Landmarks, Mouth, QuietOpt, VerboseOpt
from .config import MAX_SHOTS, ONE_PHOTO_STEPS, SEVERAL_PHOTOS_STEPS, FinetuneConfig, list_presets
from .errors import EXIT_CODES, AnimateFaceError, InterruptedRun, UsageError

console = Console(stderr=True)
log = logging.getLogger("animate_cli")

MAIN_COMMAND = "animate"


class DefaultCommandGroup(TyperGroup):
    """Runs the main command when the first argument is not a subcommand (``animate-face photo.jpg ...``)."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [MAIN_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=DefaultCommandGroup, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Make a still face photo move like the person in a driving video.\n\n"
                       "animate-face photo.jpg --drive speech.mp4 -o out.mp4")


class Renderer(str, Enum):
    neural = "neural"
    warp = "warp"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class RichProgress:
    """Progress bars on stderr, one per stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        start = time.perf_counter()
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description:<10}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console, disable=not self.enabled, transient=False) as progress:
            task = progress.add_task(name, total=total)
            yield lambda n=1: progress.advance(task, n)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Default: warnings the user can act on; -q: errors only; -v: everything the library says."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    for noisy in ("huggingface_hub", "urllib3", "httpx", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.DEBUG)
    # Connection-level chatter (every TCP attempt) says nothing a user can act on, even with -v.
    logging.getLogger("httpcore").setLevel(logging.WARNING)


@contextlib.contextmanager
def errors_to_exit_codes(verbose: bool) -> Iterator[None]:
    """The one place where failures become a one-line message and an exit code."""
    try:
        yield
    except AnimateFaceError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        console.print(f"[bold red]error:[/] {InterruptedRun('interrupted; no partial output was left')}")
        raise typer.Exit(InterruptedRun.exit_code) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as error:  # noqa: BLE001 - the outermost boundary: report bugs as exit 1
        if verbose:
            traceback.print_exc()
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error} "
                      "(rerun with --verbose for the traceback; please report it)", highlight=False)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"animate-face {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Make a still face photo move like the person in a driving video."""


# Options shared by the main command and batch.
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
    "--learned-parts/--no-learned-parts", help="Redraw eyes whose lids close or open with the weights' learned eye "
    "model (both renderers); --no-learned-parts: the warp's own eyes.", rich_help_panel="Model")]
MouthOpt = Annotated[Mouth, typer.Option(
    "--mouth", help="The inside of an opening mouth: teeth = the learned mouth model's teeth over the synthetic "
    "interior's dark opening (reads about as open as a real mouth); learned = the learned model's whole opening "
    "(reads less open); synthetic = the synthetic interior alone (reads a little wider). See README.",
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

DEFAULT_STEPS = None  # the measured default for the number of photos (config.default_finetune_steps)


def _check_person_source(photos: list[Path] | None, person: Path | None) -> None:
    """The person comes from photos or from a saved --person folder: exactly one of them."""
    if not photos and person is None:
        raise UsageError("give photos of the person (or --person DIR)")
    if photos and person is not None:
        raise UsageError("give either photos or --person, not both")


def _check_photos(photos: list[Path] | None, person: Path | None, landmarks: str, device: str, face_index: int):
    """The landmark backend, and the person's photos loaded with their faces found (None with --person):
    checked before the model loads and long before fine-tuning, without importing torch on a
    machine with no GPU. No progress bar: a bad photo fails with its one line alone."""
    from .devices import resolve_device_name
    from .landmarks import create_backend
    from .photos import find_faces, resolve_photo_paths

    backend = create_backend(landmarks, device=resolve_device_name(device))
    faces = find_faces(resolve_photo_paths(photos), backend, face_index) if person is None else None
    return backend, faces


def _render_config(size, fps, crf, no_audio, crop_only, side_by_side, smoothing, absolute, overwrite,
                   reference="auto", head_motion=True):
    from .config import RenderConfig
    return RenderConfig(size=size, fps=fps, crf=crf, audio=not no_audio, crop_only=crop_only,
                        side_by_side=side_by_side, smoothing=smoothing, relative=not absolute,
                        overwrite=overwrite, reference=reference, head_motion=head_motion)


@app.command(MAIN_COMMAND, help="Animate photos of one person (1-32 files or a folder) with a driving video.")
def animate_command(
    photos: Annotated[Optional[list[Path]], typer.Argument(
        help=f"1 to {MAX_SHOTS} photos of one person, or a folder of them.", show_default=False)] = None,
    drive: Annotated[Path, typer.Option("--drive", "-d", help="Driving video, or landmarks saved by "
                                        "`animate-face landmarks` (.npz).", show_default=False)] = ...,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .mp4 (default: "
                                                   "PHOTO-DRIVER.mp4 here).")] = None,
    weights: WeightsOpt = None,
    landmarks: LandmarksOpt = Landmarks.auto,
    renderer: RendererOpt = Renderer.neural,
    backend: BackendOpt = Backend.auto,
    compile_generator: CompileOpt = False,
    learned_parts: LearnedPartsOpt = True,
    mouth: MouthOpt = Mouth.teeth,
    device: DeviceOpt = Device.auto,
    finetune_steps: StepsOpt = DEFAULT_STEPS,
    seed: SeedOpt = 0,
    save_person: Annotated[Optional[Path], typer.Option("--save-person", help="Keep the fine-tuned person in "
                                                        "this folder.", rich_help_panel="Fine-tuning")] = None,
    person: Annotated[Optional[Path], typer.Option("--person", help="Reuse a person saved with --save-person "
                                                   "(skips fine-tuning).", rich_help_panel="Fine-tuning")] = None,
    size: SizeOpt = None, fps: FpsOpt = None, crf: CrfOpt = 18, no_audio: NoAudioOpt = False,
    crop_only: CropOnlyOpt = False, side_by_side: SideOpt = False, overwrite: OverwriteOpt = False,
    smoothing: SmoothOpt = 1.0, absolute: AbsoluteOpt = False, face_index: FaceIndexOpt = 0,
    reference: ReferenceOpt = "auto", head_motion: HeadMotionOpt = True,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Also write a contact sheet PNG: the "
                                                    "photo, a few driving frames and the same output frames.",
                                                    rich_help_panel="Output")] = None,
    verbose: VerboseOpt = False, quiet: QuietOpt = False,
) -> None:
    setup_logging(verbose, quiet)
    with errors_to_exit_codes(verbose):
        from .io.driver import check_driver

        _check_person_source(photos, person)
        if person is not None and save_person is not None:
            raise UsageError("--save-person cannot be combined with --person")
        config = _render_config(size, fps, crf, no_audio, crop_only, side_by_side, smoothing, absolute, overwrite,
                                reference, head_motion)
        finetune = FinetuneConfig(steps=finetune_steps, seed=seed)
        first = photos[0] if photos else person
        output = output or Path(f"{first.stem}-{drive.stem}.mp4")
        if output.suffix.lower() != ".mp4":
            raise UsageError(f"{output}: the output must be an .mp4 file")
        if output.exists() and not overwrite:
            raise UsageError(f"{output}: exists; pass --overwrite to replace it")
        from .io.atomic import check_output_path
        check_output_path(output, overwrite)  # a bad -o fails now, not after the slow work
        if preview is not None:
            if preview.suffix.lower() != ".png":
                raise UsageError(f"{preview}: the preview must be a .png file")
            check_output_path(preview, overwrite)

        # Cheap checks first (the driver opens and has frames, the photos load and show a face), then
        # the model, the driver's landmarks, and only then the slow fine-tuning.
        started = time.perf_counter()
        checked = check_driver(drive)
        landmark_backend, faces = _check_photos(photos, person, landmarks.value, device.value, face_index)
        from .jobs import build_engine
        from .render.pipeline import describe_reference, load_driver, preview_driver_frames

        progress = RichProgress(enabled=not quiet)
        engine = build_engine(weights, landmarks.value, device.value, renderer.value, backend.value,
                              compile_generator, landmark_backend=landmark_backend, learned_parts=learned_parts,
                              mouth=mouth.value)
        subject = engine.load_person(person) if person is not None else None
        shots = engine.load_photos(faces) if subject is None else subject.shots
        keep = preview_driver_frames(checked, config.fps) if preview is not None else ()
        driver = load_driver(drive, engine.backend, config.smoothing, progress, checked=checked, keep=keep)
        if not quiet:
            console.print(f"[dim]{engine.summary()} · {describe_reference(shots[0], driver, config)}[/]",
                          highlight=False, soft_wrap=True)
        if subject is None:
            subject = engine.make_person(shots, finetune, face_index, progress)
        if save_person is not None:
            subject.save(save_person, engine.model.config, overwrite=overwrite)
            log.info("saved the person to %s", save_person)
        engine.animate(subject, driver, output, config, progress, preview=preview)
        if not quiet:
            also = f" and {preview}" if preview is not None else ""
            console.print(f"wrote [bold]{output}[/]{also} ({len(driver.track)} frames, "
                          f"{time.perf_counter() - started:.1f} s)", highlight=False, soft_wrap=True)


@app.command("batch", help="Animate many people with one driver: each image in DIR, and each subfolder, "
                            "is one person. Finished outputs are skipped on a re-run.")
def batch_command(
    folder: Annotated[Path, typer.Argument(help="Folder of people.", show_default=False)],
    drive: Annotated[Path, typer.Option("--drive", "-d", help="Driving video or landmarks .npz.",
                                        show_default=False)] = ...,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for the outputs (PERSON.mp4).",
                                          show_default=False)] = ...,
    weights: WeightsOpt = None,
    landmarks: LandmarksOpt = Landmarks.auto,
    renderer: RendererOpt = Renderer.neural,
    backend: BackendOpt = Backend.auto,
    compile_generator: CompileOpt = False,
    learned_parts: LearnedPartsOpt = True,
    mouth: MouthOpt = Mouth.teeth,
    device: DeviceOpt = Device.auto,
    finetune_steps: StepsOpt = DEFAULT_STEPS,
    seed: SeedOpt = 0,
    size: SizeOpt = None, fps: FpsOpt = None, crf: CrfOpt = 18, no_audio: NoAudioOpt = False,
    crop_only: CropOnlyOpt = False, side_by_side: SideOpt = False, overwrite: OverwriteOpt = False,
    smoothing: SmoothOpt = 1.0, absolute: AbsoluteOpt = False, face_index: FaceIndexOpt = 0,
    reference: ReferenceOpt = "auto", head_motion: HeadMotionOpt = True,
    preview: Annotated[bool, typer.Option("--preview", help="Also write a contact sheet PERSON.png beside each "
                                          "PERSON.mp4.", rich_help_panel="Output")] = False,
    use_ray: Annotated[bool, typer.Option("--ray", help="Run on a Ray cluster: the one RAY_ADDRESS names, else a "
                                          "local Ray. Needs the extra: pip install \"animate-face\\[ray]\".",
                                          rich_help_panel="Cluster")] = False,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster to run on "
                                                       "(host:6379, ray://host:10001); implies --ray.",
                                                       show_default=False, rich_help_panel="Cluster")] = None,
    collect: Annotated[bool, typer.Option("--collect", help="With --ray: the workers send the videos back and "
                                          "this machine writes them (no shared --out-dir).",
                                          rich_help_panel="Cluster")] = False,
    ray_workers: Annotated[Optional[int], typer.Option("--ray-workers", min=1, help="With --ray: how many workers "
                                                       "(default: one per free CPU of the cluster).",
                                                       show_default=False, rich_help_panel="Cluster")] = None,
    verbose: VerboseOpt = False, quiet: QuietOpt = False,
) -> None:
    setup_logging(verbose, quiet)
    with errors_to_exit_codes(verbose):
        from .ray_batch import check_ray_options, run_ray_batch
        use_ray = check_ray_options(use_ray, ray_address, collect, ray_workers)  # exit 2 at once (no Ray installed)
        from .batch import discover_people, run_batch
        from .errors import BatchFailure
        from .io.atomic import ensure_folder
        from .io.driver import check_driver
        from .jobs import build_engine
        from .render.pipeline import load_driver, preview_driver_frames

        config = _render_config(size, fps, crf, no_audio, crop_only, side_by_side, smoothing, absolute, overwrite,
                                reference, head_motion)
        finetune = FinetuneConfig(steps=finetune_steps, seed=seed)
        people = discover_people(folder)
        checked = check_driver(drive)
        ensure_folder(out_dir, "the output folder")
        progress = RichProgress(enabled=not quiet)
        engine = build_engine(weights, landmarks.value, device.value, renderer.value, backend.value,
                              compile_generator, learned_parts=learned_parts, mouth=mouth.value)
        keep = preview_driver_frames(checked, config.fps) if preview else ()
        driver = load_driver(drive, engine.backend, config.smoothing, progress, checked=checked, keep=keep)
        if not quiet:
            console.print(f"[dim]{engine.summary()}[/]", highlight=False, soft_wrap=True)
        if not use_ray:
            results = run_batch(engine, people, driver, out_dir, finetune, config, face_index, progress,
                                preview=preview)
        else:
            results = run_ray_batch(engine, people, driver, out_dir, finetune, config, face_index, progress,
                                    preview=preview, address=ray_address, collect=collect, workers=ray_workers)

        table = Table(title=f"batch: {len(results)} people")
        for column in ("person", "status", "seconds", "output / reason"):
            table.add_column(column)
        colours = {"done": "green", "skipped": "yellow", "failed": "red"}
        for result in results:
            table.add_row(result.name, f"[{colours[result.status]}]{result.status}[/]", f"{result.seconds:.1f}",
                          result.reason if result.status == "failed" else str(result.output))
        if not quiet:
            console.print(table)
        failed = [r.name for r in results if r.status == "failed"]
        if failed:
            raise BatchFailure(f"{len(failed)} of {len(results)} people failed: {', '.join(failed)}")


@app.command("landmarks", help="Find and track the face landmarks of a video once, for reuse with --drive.")
def landmarks_command(
    video: Annotated[Path, typer.Argument(help="Driving video.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .npz file.", show_default=False)],
    landmarks: LandmarksOpt = Landmarks.auto,
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False, quiet: QuietOpt = False,
) -> None:
    setup_logging(verbose, quiet)
    with errors_to_exit_codes(verbose):
        from .io.atomic import atomic_output
        from .io.video import iter_frames, probe_video
        from .landmarks import create_backend, track_video
        from .render.renderers import resolve_device

        if output.suffix.lower() != ".npz":
            raise UsageError(f"{output}: the output must be an .npz file")
        backend = create_backend(landmarks.value, device=str(resolve_device(device.value)))
        info = probe_video(video)
        progress = RichProgress(enabled=not quiet)
        with progress.stage("landmarks", info.frame_count) as advance:
            track = track_video(backend, iter_frames(video), info.fps, info.size, progress=advance, path=video)
        with atomic_output(output, overwrite=overwrite) as tmp:
            track.save(tmp)
        found = int(track.valid.sum())
        console.print(f"wrote [bold]{output}[/]: {len(track)} frames, face found in {found}", highlight=False)


@app.command("export", help="Export one person's generator to ONNX (psi baked in, dynamic batch), from photos "
                             "(fine-tuned first) or a person saved with --save-person.")
def export_command(
    photos: Annotated[Optional[list[Path]], typer.Argument(
        help=f"1 to {MAX_SHOTS} photos of one person, or a folder of them.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .onnx file.", show_default=False)] = ...,
    person: Annotated[Optional[Path], typer.Option("--person", help="A person saved with --save-person "
                                                   "(skips fine-tuning).", rich_help_panel="Fine-tuning")] = None,
    weights: WeightsOpt = None,
    landmarks: LandmarksOpt = Landmarks.auto,
    device: DeviceOpt = Device.auto,
    finetune_steps: StepsOpt = DEFAULT_STEPS,
    seed: SeedOpt = 0,
    face_index: FaceIndexOpt = 0,
    opset: Annotated[int, typer.Option("--opset", min=13, help="ONNX opset version.")] = 17,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False, quiet: QuietOpt = False,
) -> None:
    setup_logging(verbose, quiet)
    with errors_to_exit_codes(verbose):
        from .io.atomic import check_output_path

        _check_person_source(photos, person)
        if output.suffix.lower() != ".onnx":
            raise UsageError(f"{output}: the output must be an .onnx file")
        check_output_path(output, overwrite)  # a bad -o fails now, not after fine-tuning
        landmark_backend, faces = _check_photos(photos, person, landmarks.value, device.value, face_index)
        from .export import export_generator
        from .jobs import build_engine

        engine = build_engine(weights, landmarks.value, device.value, landmark_backend=landmark_backend)
        if person is not None:
            subject = engine.load_person(person)
        else:
            subject = engine.make_person(engine.load_photos(faces), FinetuneConfig(steps=finetune_steps, seed=seed),
                                         face_index, RichProgress(enabled=not quiet))
        export_generator(engine.model, subject, output, opset=opset, overwrite=overwrite)
        config = engine.model.config
        size = config.image_size
        inputs = "landmark_images, warped" if config.guidance == "warp" else "landmark_images"
        region = f", region (N, 1, {size}, {size}) in [0, 1]" if config.uses_region else ""
        console.print(f"wrote [bold]{output}[/]: inputs {inputs} (N, 3, {size}, {size}) in [-1, 1]{region}, "
                      "output frames", highlight=False)


@app.command("pull", help="Download weights from the Hub (or check a local folder) and print where they are.")
def pull_command(
    spec: Annotated[str, typer.Argument(help="owner/name[@revision] or a folder.", show_default=False)],
    verbose: VerboseOpt = False,
) -> None:
    setup_logging(verbose, False)
    with errors_to_exit_codes(verbose):
        from .hub import pull
        typer.echo(str(pull(spec)))


@app.command("publish", help="Upload a checkpoint folder (config.json, model.safetensors, README.md) to the Hub.")
def publish_command(
    folder: Annotated[Path, typer.Argument(help="Checkpoint folder.", show_default=False)],
    repo: Annotated[str, typer.Option("--repo", help="owner/name on the Hub.", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_logging(verbose, False)
    with errors_to_exit_codes(verbose):
        from .hub import publish
        typer.echo(publish(folder, repo, private=private))


@app.command("init", help="Write an untrained checkpoint of a preset (a starting point, or a placeholder).")
def init_command(
    output: Annotated[Path, typer.Argument(help="Checkpoint folder to create.", show_default=False)],
    preset: Annotated[str, typer.Option("--preset", help=f"One of: {', '.join(list_presets())}.")] = "small",
    guidance: Annotated[str, typer.Option("--guidance", help="none (the paper's generator) or warp.")] = "warp",
    blend_region: Annotated[str, typer.Option("--blend-region", help="Warp guidance: where the generator may "
                                              "paint over the warp: all, or mouth_border (the mouth and "
                                              "outside the face).")] = "all",
    seed: SeedOpt = 0,
    half: Annotated[bool, typer.Option("--half", help="Store weights in float16.")] = False,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_logging(verbose, False)
    with errors_to_exit_codes(verbose):
        import torch

        from .config import get_preset
        from .models import TalkingHeadModel
        from .model_card import placeholder_model_card

        if (output / "model.safetensors").exists() and not overwrite:
            raise UsageError(f"{output}: already holds a checkpoint; pass --overwrite to replace it")
        config = get_preset(preset, guidance=guidance, blend_region=blend_region)
        torch.manual_seed(seed)
        model = TalkingHeadModel(config)
        record = {"kind": "untrained", "preset": preset, "seed": seed, "command": " ".join(sys.argv[1:])}
        model.save_pretrained(output, training=record, half=half,
                              model_card=placeholder_model_card(preset, config, seed, half))
        console.print(f"wrote an untrained [bold]{preset}[/] checkpoint to {output}", highlight=False)


@app.command("presets", help="List the model presets with their sizes.")
def presets_command() -> None:
    from .config import get_preset
    from .models.stats import preset_table

    table = Table(title="model presets")
    for column in ("preset", "image", "channels", "embedding", "E params", "G params", "D params", "G GFLOP/frame"):
        table.add_column(column)
    for row in preset_table():
        preset = get_preset(row["preset"])
        table.add_row(row["preset"], f"{preset.image_size} px", "-".join(map(str, preset.channels)),
                      str(preset.embedding_dim),
                      f"{row['embedder_params'] / 1e6:.1f} M", f"{row['generator_params'] / 1e6:.1f} M",
                      f"{row['discriminator_params'] / 1e6:.1f} M", f"{row['generator_gflops']:.1f}")
    Console().print(table)


@app.command("exit-codes", help="List the exit codes.")
def exit_codes_command() -> None:
    for code, meaning in EXIT_CODES.items():
        typer.echo(f"{code:>4}  {meaning}")


def _register_more_commands() -> None:
    # Kept in their own modules (they hold much of their own option handling); registered here.
    from .eval_command import register_eval_command
    from .train.commands import register_training_commands

    register_training_commands(app)
    register_eval_command(app)


_register_more_commands()


def main() -> None:
    """Console-script entry point: process-wide settings belong here, not at import."""
    import cv2

    # OpenCV's worker threads fight torch's on small machines (training steps measured 3-20x slower).
    cv2.setNumThreads(1)
    app()


if __name__ == "__main__":
    main()
