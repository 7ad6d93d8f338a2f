"""The utility commands: ``landmarks``, ``export``, ``pull``, ``publish``, ``init``, ``presets`` and
``exit-codes``. The library is imported inside the command bodies, so ``animate-face --help`` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..config import MAX_SHOTS, FinetuneConfig, list_presets
from ..errors import EXIT_CODES, UsageError
from .common import RichProgress, check_person_source, check_photos, console, errors_to_exit_codes, setup_logging
from .options import (DEFAULT_STEPS, Device, DeviceOpt, FaceIndexOpt, Landmarks, LandmarksOpt, OverwriteOpt,
                      QuietOpt, SeedOpt, StepsOpt, VerboseOpt, WeightsOpt)


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
        from ..io.atomic import atomic_output
        from ..io.video import iter_frames, probe_video
        from ..landmarks import create_backend, track_video
        from ..render.renderers import resolve_device

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
        from ..io.atomic import check_output_path

        check_person_source(photos, person)
        if output.suffix.lower() != ".onnx":
            raise UsageError(f"{output}: the output must be an .onnx file")
        check_output_path(output, overwrite)  # a bad -o fails now, not after fine-tuning
        landmark_backend, faces = check_photos(photos, person, landmarks.value, device.value, face_index)
        from ..export import export_generator
        from ..jobs import build_engine

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


def pull_command(
    spec: Annotated[str, typer.Argument(help="owner/name[@revision] or a folder.", show_default=False)],
    verbose: VerboseOpt = False,
) -> None:
    setup_logging(verbose, False)
    with errors_to_exit_codes(verbose):
        from ..hub import pull
        typer.echo(str(pull(spec)))


def publish_command(
    folder: Annotated[Path, typer.Argument(help="Checkpoint folder.", show_default=False)],
    repo: Annotated[str, typer.Option("--repo", help="owner/name on the Hub.", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_logging(verbose, False)
    with errors_to_exit_codes(verbose):
        from ..hub import publish
        typer.echo(publish(folder, repo, private=private))


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

        from ..config import get_preset
        from ..models import TalkingHeadModel
        from ..model_card import placeholder_model_card

        if (output / "model.safetensors").exists() and not overwrite:
            raise UsageError(f"{output}: already holds a checkpoint; pass --overwrite to replace it")
        config = get_preset(preset, guidance=guidance, blend_region=blend_region)
        torch.manual_seed(seed)
        model = TalkingHeadModel(config)
        record = {"kind": "untrained", "preset": preset, "seed": seed, "command": " ".join(sys.argv[1:])}
        model.save_pretrained(output, training=record, half=half,
                              model_card=placeholder_model_card(preset, config, seed, half))
        console.print(f"wrote an untrained [bold]{preset}[/] checkpoint to {output}", highlight=False)


def presets_command() -> None:
    from ..config import get_preset
    from ..models.stats import preset_table

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


def exit_codes_command() -> None:
    for code, meaning in EXIT_CODES.items():
        typer.echo(f"{code:>4}  {meaning}")


def register_tool_commands(app: typer.Typer) -> None:
    """Add the utility commands to the CLI app, in the order ``--help`` lists them."""
    commands = (
        ("landmarks", "Find and track the face landmarks of a video once, for reuse with --drive.",
         landmarks_command),
        ("export", "Export one person's generator to ONNX (psi baked in, dynamic batch), from photos "
                   "(fine-tuned first) or a person saved with --save-person.", export_command),
        ("pull", "Download weights from the Hub (or check a local folder) and print where they are.", pull_command),
        ("publish", "Upload a checkpoint folder (config.json, model.safetensors, README.md) to the Hub.",
         publish_command),
        ("init", "Write an untrained checkpoint of a preset (a starting point, or a placeholder).", init_command),
        ("presets", "List the model presets with their sizes.", presets_command),
        ("exit-codes", "List the exit codes.", exit_codes_command),
    )
    for name, help_text, command in commands:
        app.command(name, help=help_text)(command)
