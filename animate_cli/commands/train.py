"""The ``prepare`` and ``train`` commands. The library is imported inside the command bodies, so
``animate-face --help`` stays fast."""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import PARTS_ADVERSARIAL_WEIGHT, PARTS_EDGE_WEIGHT, PARTS_PHOTO_SHARE, PARTS_TONE_WEIGHT, list_presets
from .common import RichProgress, console, errors_to_exit_codes, setup_logging
from .options import Device, QuietOpt, VerboseOpt

PRESET_HELP = f"Model size preset: {', '.join(list_presets())}."


class Guidance(str, Enum):
    none = "none"
    warp = "warp"


class BlendRegion(str, Enum):
    all = "all"
    mouth_border = "mouth_border"


def register_training_commands(app: typer.Typer) -> None:
    """Add ``prepare``, ``train`` and ``train-parts`` to the CLI app."""

    @app.command("prepare", help="Turn photo folders (Name/*.jpg), LFW .tar archives and video folders "
                                 "(person/video/clip.mp4) into a training dataset of face crops with landmarks. "
                                 "Resumable: a re-run skips finished sources.")
    def prepare_command(
        sources: Annotated[list[Path], typer.Argument(help="Folders of photos or videos, or uncompressed .tar "
                                                           "archives of photos.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to create or complete.",
                                          show_default=False)],
        size: Annotated[int, typer.Option("--size", min=16, help="Crop size in pixels (at least the model's "
                                          "image size).")] = 256,
        frames_per_video: Annotated[int, typer.Option("--frames-per-video", min=1, help="Frames sampled evenly "
                                                      "from each video.")] = 32,
        workers: Annotated[int, typer.Option("--workers", "-j", min=0, help="Parallel processes (each loads "
                                             "its own face detector).")] = 2,
        limit_people: Annotated[Optional[int], typer.Option("--limit-people", min=1, help="Keep this many "
                                                            "people (a fixed pseudo-random subset).")] = None,
        min_photos: Annotated[int, typer.Option("--min-photos", min=1, help="Skip photo people with fewer "
                                                "photos.")] = 1,
        verbose: VerboseOpt = False, quiet: QuietOpt = False,
    ) -> None:
        setup_logging(verbose, quiet)
        with errors_to_exit_codes(verbose):
            from ..train.dataset import prepare_dataset, scan_source, select_units

            units = []
            for source in sources:
                units.extend(scan_source(source))
            units, _ = select_units(units, limit_people, min_photos)
            with RichProgress(enabled=not quiet).stage("prepare", len(units)) as advance:
                report = prepare_dataset(sources, out, size=size, frames_per_video=frames_per_video,
                                         workers=workers, progress=advance, limit_people=limit_people,
                                         min_photos=min_photos)
            console.print(f"wrote [bold]{out}[/]: {report.frames} frames of {report.people} people "
                          f"({report.videos} videos, {report.shards} shards); {len(report.skipped)} files "
                          f"skipped (see {out / 'report.json'})", highlight=False)

    @app.command("train", help="Meta-learn the embedder, generator and discriminator on a prepared dataset. "
                               "Multi-GPU / multi-process: torchrun --nproc_per_node N -m animate_cli.cli train ...")
    def train_command(
        dataset: Annotated[Path, typer.Argument(help="Dataset folder written by `animate-face prepare`.",
                                                show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, samples, losses.",
                                          show_default=False)],
        preset: Annotated[str, typer.Option("--preset", help=PRESET_HELP, rich_help_panel="Model")] = "small",
        image_size: Annotated[Optional[int], typer.Option("--image-size", help="Override the preset's image "
                                                          "size.", rich_help_panel="Model")] = None,
        guidance: Annotated[Guidance, typer.Option("--guidance", help="none: the paper's generator; warp: also "
                                                   "feed the nearest shot warped to the target.",
                                                   rich_help_panel="Model")] = Guidance.none,
        blend_region: Annotated[BlendRegion, typer.Option("--blend-region", help="Warp guidance: where the "
                                                          "generator may paint over the warp (all, or "
                                                          "mouth_border: the mouth and outside the face).",
                                                          rich_help_panel="Model")] = BlendRegion.all,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Total training steps (a resumed run goes on "
                                           "to this step).", rich_help_panel="Training")] = 10000,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Episodes per process and step.",
                                                rich_help_panel="Training")] = 4,
        shots: Annotated[int, typer.Option("--shots", "-k", min=1, help="Shots K per episode.",
                                           rich_help_panel="Training")] = 8,
        mix: Annotated[Optional[str], typer.Option("--mix", help="Episode weights by kind, e.g. "
                                                   "video=0.4,photos=0.4,single=0.2 (video: frames of a video file; "
                                                   "photos: a person with several photos; single: one photo, "
                                                   "augmented). Default: every training video equally often.",
                                                   rich_help_panel="Training")] = None,
        lr_generator: Annotated[float, typer.Option("--lr-generator", min=0.0, help="Adam learning rate of E "
                                                    "and G (the paper's 5e-5).", rich_help_panel="Training")] = 5e-5,
        lr_discriminator: Annotated[float, typer.Option("--lr-discriminator", min=0.0, help="Adam learning rate "
                                                        "of D (the paper's 2e-4).", rich_help_panel="Training")] = 2e-4,
        holdout: Annotated[int, typer.Option("--holdout", min=0, help="People kept out of training for "
                                             "evaluation (listed in RUN/run.json).",
                                             rich_help_panel="Training")] = 0,
        seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (initialisation, episodes, "
                                          "held-out people).", rich_help_panel="Training")] = 0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last "
                                             "checkpoint.", rich_help_panel="Training")] = False,
        checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Steps between "
                                                      "checkpoints.", rich_help_panel="Output")] = 500,
        sample_every: Annotated[int, typer.Option("--sample-every", min=1, help="Steps between sample grids.",
                                                  rich_help_panel="Output")] = 250,
        log_every: Annotated[int, typer.Option("--log-every", min=1, help="Steps between loss log lines.",
                                               rich_help_panel="Output")] = 10,
        device: Annotated[Device, typer.Option("--device", help="auto = CUDA when present.",
                                                    rich_help_panel="Hardware")] = Device.auto,
        no_amp: Annotated[bool, typer.Option("--no-amp", help="No mixed precision on CUDA.",
                                             rich_help_panel="Hardware")] = False,
        num_workers: Annotated[int, typer.Option("--num-workers", min=0, help="Data loader processes.",
                                                 rich_help_panel="Hardware")] = 0,
        offline: Annotated[bool, typer.Option("--offline", help="Do not download VGG19 for the content loss "
                                              "(local files from ANIMATE_FACE_VGG19 / ANIMATE_FACE_VGGFACE "
                                              "are still used).", rich_help_panel="Training")] = False,
        verbose: VerboseOpt = False, quiet: QuietOpt = False,
    ) -> None:
        # Under torchrun every process runs this command; only rank 0 talks.
        main_rank = int(os.environ.get("RANK", "0")) == 0
        setup_logging(verbose, quiet or not main_rank)
        with errors_to_exit_codes(verbose):
            from ..config import get_preset
            from ..train.dataset import parse_mix
            from ..train.loop import TrainConfig, train

            overrides = {"guidance": guidance.value, "blend_region": blend_region.value}
            if image_size is not None:
                overrides["image_size"] = image_size
            model_config = get_preset(preset, **overrides)
            config = TrainConfig(steps=steps, batch_size=batch_size, lr_generator=lr_generator,
                                 lr_discriminator=lr_discriminator, shots=shots, holdout=holdout, seed=seed,
                                 checkpoint_every=checkpoint_every, sample_every=sample_every, log_every=log_every,
                                 amp=not no_amp, num_workers=num_workers, device=device.value,
                                 mix=parse_mix(mix) if mix is not None else None)
            with RichProgress(enabled=not quiet and main_rank).stage("train", steps) as advance:
                result = train(dataset, out, model_config, config, resume=resume, progress=advance,
                               allow_download=not offline)
            if main_rank:
                losses = result.last_losses or {}
                console.print(f"trained to step {result.step}: G {losses.get('loss_g', float('nan')):.3f}, "
                              f"D {losses.get('loss_d', float('nan')):.3f}; last checkpoint "
                              f"[bold]{result.checkpoint}[/]", highlight=False)

    @app.command("train-parts", help="Train the learned mouth and eye models on prepared datasets (videos, "
                                     "and photos such as LFW) and add them to a checkpoint folder "
                                     "(parts.safetensors and the parts section of config.json).")
    def train_parts_command(
        datasets: Annotated[list[Path], typer.Argument(help="Dataset folders written by `animate-face prepare` "
                                                            "(at least one with videos).", show_default=False)],
        into: Annotated[Path, typer.Option("--into", help="Checkpoint folder to add the part models to.",
                                           show_default=False)],
        preset: Annotated[str, typer.Option("--preset", help="Part model sizes: default or tiny.",
                                            rich_help_panel="Model")] = "default",
        steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps (mouth and eye alternate).",
                                           rich_help_panel="Training")] = 3000,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per step.",
                                                rich_help_panel="Training")] = 12,
        lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.",
                                          rich_help_panel="Training")] = 2e-4,
        lr_critic: Annotated[float, typer.Option("--lr-critic", min=0.0, help="Adam learning rate of the critic.",
                                                 rich_help_panel="Training")] = 2e-4,
        max_photos: Annotated[int, typer.Option("--max-photos", min=0, help="Photos kept from photo datasets "
                                                "(open mouths first).", rich_help_panel="Training")] = 3000,
        seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed.", rich_help_panel="Training")] = 0,
        adversarial_weight: Annotated[float, typer.Option("--adversarial-weight", min=0.0, help="Weight of the "
                                                          "critic's term (--critic; sharpness against L1's "
                                                          "blur).", rich_help_panel="Training")] = PARTS_ADVERSARIAL_WEIGHT,
        tone_weight: Annotated[float, typer.Option("--tone-weight", min=0.0, help="Weight of the mouth's tone "
                                                   "term: the colours inside the opening against the real "
                                                   "mouth's, wherever they are (as much dark as it shows).",
                                                   rich_help_panel="Training")] = PARTS_TONE_WEIGHT,
        edge_weight: Annotated[float, typer.Option("--edge-weight", min=0.0, help="Weight of the edge term: "
                                                   "the edges in the redrawn hole against the real ones, each "
                                                   "allowed a pixel off (sharp lip edges and teeth, not a blur).",
                                                   rich_help_panel="Training")] = PARTS_EDGE_WEIGHT,
        photo_share: Annotated[float, typer.Option("--photo-share", min=0.0, max=1.0, help="Share of mouth samples "
                                                   "drawn from photo people (the rest from videos).",
                                                   rich_help_panel="Training")] = PARTS_PHOTO_SHARE,
        start_from: Annotated[Optional[Path], typer.Option("--start-from", help="Go on training the part "
                                                           "models of this checkpoint folder.",
                                                           rich_help_panel="Training")] = None,
        only: Annotated[Optional[str], typer.Option("--only", help="Train only this part model (mouth or eye); "
                                                    "the other is kept from --start-from.",
                                                    rich_help_panel="Training")] = None,
        mouth_residual: Annotated[bool, typer.Option("--mouth-residual", help="The mouth model corrects the "
                                                     "synthetic interior instead of drawing the opening from "
                                                     "a blank.", rich_help_panel="Model")] = False,
        critic: Annotated[str, typer.Option("--critic", help="patch: a patch discriminator on the crop's "
                                            "pixels; features: heads on the frozen face ResNet's stages "
                                            "(learns in far fewer steps).", rich_help_panel="Training")] = "patch",
        num_workers: Annotated[int, typer.Option("--num-workers", min=0, help="Data loader processes.",
                                                 rich_help_panel="Hardware")] = 1,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace part models already in the "
                                                "checkpoint.")] = False,
        verbose: VerboseOpt = False, quiet: QuietOpt = False,
    ) -> None:
        setup_logging(verbose, quiet)
        with errors_to_exit_codes(verbose):
            import cv2

            from ..errors import UsageError, WeightsError
            from ..parts.model import PARTS_PRESETS, PARTS_WEIGHTS_NAME, read_parts_section
            from ..parts.train import PartsTrainConfig, train_parts

            cv2.setNumThreads(1)
            if preset not in PARTS_PRESETS:
                raise UsageError(f"unknown parts preset {preset!r}; choose from: {', '.join(PARTS_PRESETS)}")
            if not (into / "config.json").is_file():
                raise WeightsError("is not a checkpoint folder (no config.json)", into)
            if not overwrite and ((into / PARTS_WEIGHTS_NAME).exists() or read_parts_section(into) is not None):
                raise UsageError(f"{into}: already has part models; pass --overwrite to replace them")
            if only not in (None, "mouth", "eye"):
                raise UsageError(f"--only must be mouth or eye, got {only!r}")
            if only is not None and start_from is None:
                raise UsageError("--only needs --start-from (the checkpoint whose other part model is kept)")
            config = PartsTrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_discriminator=lr_critic, seed=seed,
                                      max_photos=max_photos,
                                      adversarial_weight=adversarial_weight, photo_share=photo_share,
                                      tone_weight=tone_weight, edge_weight=edge_weight,
                                      critic=critic, parts=(only,) if only else ("mouth", "eye"))
            initial = earlier = None
            if start_from is not None:
                from ..parts import load_parts

                initial = load_parts(start_from)
                if initial is None:
                    raise WeightsError("has no part models to start from", start_from)
                earlier = read_parts_section(start_from)[1]
            with RichProgress(enabled=not quiet).stage("train parts", steps) as advance:
                sizes = dataclasses.replace(PARTS_PRESETS[preset], mouth_residual=mouth_residual)
                record = train_parts(datasets, into, sizes, config, progress=advance,
                                     workers=num_workers, start_from=initial, earlier=earlier)
            losses = record.get("final_losses", {})
            console.print(f"trained the part models for {record.get('steps')} steps (mouth L1 "
                          f"{losses.get('mouth_l1', float('nan')):.3f}, eye L1 {losses.get('eye_l1', float('nan')):.3f}); "
                          f"wrote [bold]{into / PARTS_WEIGHTS_NAME}[/]", highlight=False)
