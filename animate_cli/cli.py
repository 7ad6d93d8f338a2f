"""The command line: parse, validate, call the library, turn typed errors into exit codes.

``animate-face PHOTO... --drive VIDEO -o OUT`` is the main command and ``batch`` runs it for many
people; the other subcommands live in ``animate_cli.commands`` (tools, train, eval) and are
assembled here. Shared helpers come from ``commands.common``, never from this module.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .commands.common import (RichProgress, check_person_source, check_photos, console, errors_to_exit_codes,
                              setup_logging)
from .commands.eval import register_eval_command
from .commands.options import (DEFAULT_STEPS, AbsoluteOpt, Backend, BackendOpt, CompileOpt, CrfOpt, CropOnlyOpt,
                               Device, DeviceOpt, FaceIndexOpt, FpsOpt, HeadModelOpt, HeadMotionOpt, Landmarks,
                               LandmarksOpt, LearnedPartsOpt, Mouth, MouthOpt, NoAudioOpt, OverwriteOpt, QuietOpt, ReferenceOpt,
                               Renderer, RendererOpt, SeedOpt, SideOpt, SizeOpt, SmoothOpt, StepsOpt, VerboseOpt,
                               WeightsOpt)
from .commands.tools import register_tool_commands
from .commands.train import register_training_commands
from .config import DEFAULT_CRF, MAX_SHOTS, FinetuneConfig
from .errors import UsageError

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"animate-face {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Make a still face photo move like the person in a driving video."""


def _render_config(size, fps, crf, no_audio, crop_only, side_by_side, smoothing, absolute, overwrite,
                   reference="auto", head_motion=True, head_model="3d"):
    from .config import RenderConfig
    return RenderConfig(size=size, fps=fps, crf=crf, audio=not no_audio, crop_only=crop_only,
                        side_by_side=side_by_side, smoothing=smoothing, relative=not absolute,
                        overwrite=overwrite, reference=reference, head_motion=head_motion, head_model=head_model)


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
    size: SizeOpt = None, fps: FpsOpt = None, crf: CrfOpt = DEFAULT_CRF, no_audio: NoAudioOpt = False,
    crop_only: CropOnlyOpt = False, side_by_side: SideOpt = False, overwrite: OverwriteOpt = False,
    smoothing: SmoothOpt = 1.0, absolute: AbsoluteOpt = False, face_index: FaceIndexOpt = 0,
    reference: ReferenceOpt = "auto", head_motion: HeadMotionOpt = True, head_model: HeadModelOpt = "3d",
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Also write a contact sheet PNG: the "
                                                    "photo, a few driving frames and the same output frames.",
                                                    rich_help_panel="Output")] = None,
    verbose: VerboseOpt = False, quiet: QuietOpt = False,
) -> None:
    setup_logging(verbose, quiet)
    with errors_to_exit_codes(verbose):
        from .io.driver import check_driver

        check_person_source(photos, person)
        if person is not None and save_person is not None:
            raise UsageError("--save-person cannot be combined with --person")
        config = _render_config(size, fps, crf, no_audio, crop_only, side_by_side, smoothing, absolute, overwrite,
                                reference, head_motion, head_model)
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
        landmark_backend, faces = check_photos(photos, person, landmarks.value, device.value, face_index)
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
    size: SizeOpt = None, fps: FpsOpt = None, crf: CrfOpt = DEFAULT_CRF, no_audio: NoAudioOpt = False,
    crop_only: CropOnlyOpt = False, side_by_side: SideOpt = False, overwrite: OverwriteOpt = False,
    smoothing: SmoothOpt = 1.0, absolute: AbsoluteOpt = False, face_index: FaceIndexOpt = 0,
    reference: ReferenceOpt = "auto", head_motion: HeadMotionOpt = True, head_model: HeadModelOpt = "3d",
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
                                reference, head_motion, head_model)
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


# The other commands live in animate_cli.commands; registered after the main two, in --help order.
register_tool_commands(app)
register_training_commands(app)
register_eval_command(app)


def main() -> None:
    """Console-script entry point: process-wide settings belong here, not at import."""
    import cv2

    # OpenCV's worker threads fight torch's on small machines (training steps measured 3-20x slower).
    cv2.setNumThreads(1)
    app()


if __name__ == "__main__":
    main()
