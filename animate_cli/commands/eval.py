"""The ``eval`` command: the paper's Table 1 protocol on held-out data, printed and written as JSON.

The library is imported inside the command body, so ``animate-face --help`` stays fast.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import RichProgress, errors_to_exit_codes, setup_logging
from .options import Device, Landmarks, Mouth


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32), sorted and without duplicates."""
    from ..errors import UsageError

    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} is empty")
    return tuple(values)


def parse_outputs(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``NAME=FOLDER`` values of ``--outputs`` as (name, folder) pairs."""
    from ..errors import UsageError

    pairs = []
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise UsageError(f"--outputs {value!r}: expected NAME=FOLDER")
        pairs.append((name.strip(), folder.strip()))
    return tuple(pairs)


def _format(value: Any, digits: int, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.{digits}f}"


def results_tables(report: dict[str, Any], title: str) -> list[Any]:
    """The rows as Rich tables: self-reenactment, cross-identity (when it ran), and the neural
    variants' paired differences from the warp (when both ran)."""
    from rich.table import Table

    columns = {"self": (("SSIM ↑", "ssim", 3), ("PSNR ↑", "psnr", 2), ("CSIM ↑", "csim", 3),
                        ("ID dist ↓", "identity_distance", 3), ("percept ↓", "perceptual", 3),
                        ("LMK err ↓", "landmark_error", 3)),
               "cross": (("CSIM ↑", "csim", 3), ("ID dist ↓", "identity_distance", 3),
                         ("mouth r ↑", "mouth_corr", 2))}
    captions = {"self": f"target rendered at its own pose vs the real frame; face = dlib finds the face in "
                        f"the output; n = targets. {report['fid']}",
                "cross": "a subject driven by another's video: CSIM to the subject's first shot; mouth r = "
                         "correlation of mouth opening, driver vs output; n = driving sequences"}
    names = {"self": "self-reenactment", "cross": "cross-identity"}
    tables = []
    for protocol, metrics in columns.items():
        rows = [row for row in report["rows"] if row[protocol]["count"]]
        if not rows:
            continue
        table = Table(title=f"{title}: {names[protocol]}", caption=captions[protocol])
        for name in ("method", "T", "steps"):
            table.add_column(name)
        for header, _, _ in metrics:
            table.add_column(header, justify="right")
        table.add_column("face", justify="right")
        table.add_column("n", justify="right")
        previous_shots = None
        for row in rows:
            values = row[protocol]
            if previous_shots is not None and row["shots"] != previous_shots:
                table.add_section()
            previous_shots = row["shots"]
            table.add_row(row["method"], str(row["shots"]), "–" if row["steps"] is None else str(row["steps"]),
                          *(_format(values[key], digits) for _, key, digits in metrics),
                          _format(values["face_found"], 0, percent=True), str(values["count"]))
        tables.append(table)
    if report.get("paired"):
        table = Table(title=f"{title}: neural minus warp, same targets",
                      caption="paired difference: mean ± its standard error; better = share of targets where "
                              "the neural output beats the warp (SSIM higher, identity and perceptual distance "
                              "lower)")
        for name in ("T", "steps", "metric", "neural - warp", "better", "n"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        for entry in report["paired"]:
            error = "" if entry["se"] is None else f" ± {entry['se']:.4f}"
            table.add_row(str(entry["shots"]), str(entry["steps"]), entry["metric"], f"{entry['mean']:+.4f}{error}",
                          _format(entry["better"], 0, percent=True), str(entry["count"]))
        tables.append(table)
    return tables


def register_eval_command(app: typer.Typer) -> None:
    """Add ``eval`` and ``eval-parts`` to the CLI app."""

    @app.command("eval-parts", help="Measure the learned mouth and eyes against the synthetic interior on real "
                                   "talking videos (first frame as the photo, the video as the driver): SSIM, L1 "
                                   "and perceptual distance of the mouth and eye crops, and the mouth's "
                                   "frame-to-frame steadiness.")
    def eval_parts_command(
        videos: Annotated[list[Path], typer.Argument(help="Talking videos (held out from the part models' "
                                                          "training).", show_default=False)],
        weights: Annotated[Optional[str], typer.Option(
            "--weights", "-w", help="Checkpoint with part models (Hub id or folder; default: the bundled).")] = None,
        max_frames: Annotated[int, typer.Option("--max-frames", min=2, help="Frames used from each video's "
                                                "start.")] = 150,
        json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the report here (.json).")] = None,
        sheet_path: Annotated[Optional[Path], typer.Option("--sheet", help="Write a contact sheet here (.png or "
                                                           ".jpg): each video's 4 widest-open mouth crops, "
                                                           "real | synthetic | teeth | learned.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --json or --sheet "
                                                "file.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        setup_logging(False, quiet)
        with errors_to_exit_codes(False):
            _run_eval_parts(videos, weights, max_frames, json_path, overwrite, RichProgress(enabled=not quiet),
                            sheet_path)

    @app.command("eval", help="Measure quality on held-out data like the paper's Table 1: self-reenactment "
                              "(SSIM, PSNR, CSIM, identity and face-perceptual distance, landmark error) and "
                              "cross-identity (CSIM, mouth correlation), for the neural renderer (feed-forward and "
                              "fine-tuned), the warp renderer and the first shot copied unchanged.")
    def eval_command(
        data: Annotated[list[Path], typer.Argument(help="Video files, folders of videos, folders of person photo "
                                                        "folders (Name/*.jpg) or an LFW .tar.", show_default=False)],
        weights: Annotated[Optional[str], typer.Option(
            "--weights", "-w", help="Hub repo owner/name[@revision] or a local folder. Default: "
            "$ANIMATE_FACE_WEIGHTS, else the bundled weights.", rich_help_panel="Model")] = None,
        shots: Annotated[str, typer.Option("--shots", help="Shot counts T, comma-separated (a subject with "
                                           "fewer frames skips the larger ones).")] = "1,8,32",
        finetune_steps: Annotated[Optional[int], typer.Option(
            "--finetune-steps", min=0, show_default=False,
            help="Fine-tuning steps N: crops: the neural renderer is measured at 0 and at N steps (default 40); "
                 "--full-frame: its neural methods fine-tune N steps (default: the main command's, by the "
                 "number of photos).")] = None,
        methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated. Crops: neural, warp, "
                                                       "copy (default all). --full-frame: frozen, warp, warp-crop, "
                                                       "warp-flat, neural, neural-crop, neural-flat, real (the "
                                                       "real frames: the metrics' floor) (default all); "
                                                       "-flat: the head turned by a 2D similarity.")] = None,
        json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the report (rows, per-target "
                                                           "records, settings, machine) to this file.")] = None,
        max_subjects: Annotated[Optional[int], typer.Option("--max-subjects", min=1, help="Evaluate at most this "
                                                            "many subjects (a seeded choice).")] = None,
        max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Target frames per subject "
                                                          "(default 8); --full-frame: frames from each video's "
                                                          "start (default 120).")] = None,
        full_frame: Annotated[bool, typer.Option("--full-frame", help="Full-frame protocols through the whole "
                                                 "pipeline: each video's first frame driven by the video itself "
                                                 "(whole frame and face box vs the real frames), and, with "
                                                 "--photo, the photos driven by the videos cut to start mouth-open.",
                                                 rich_help_panel="Full frame")] = False,
        photo: Annotated[Optional[list[Path]], typer.Option("--photo", help="--full-frame: a photo for the "
                                                             "mouth-open cross-identity protocol (repeatable).",
                                                             rich_help_panel="Full frame")] = None,
        cross: Annotated[bool, typer.Option("--cross", help="Cross-identity: each --photo driven by each video "
                                            "(its first --max-frames frames): identity kept, yaw/pitch/roll, "
                                            "mouth and eyes followed (slope and r against the driver), detail "
                                            "against the photo. Methods as --full-frame (default warp).",
                                            rich_help_panel="Full frame")] = False,
        sheets: Annotated[Optional[Path], typer.Option("--sheets", help="--cross: write a contact sheet per "
                                                       "photo, driver and method into this folder (the frames "
                                                       "of largest turn first).", rich_help_panel="Full frame")] = None,
        still: Annotated[Optional[list[Path]], typer.Option("--still", help="--full-frame: also drive this photo "
                                                             "by a still video of itself (20 frames, encoded as "
                                                             "the output is; repeatable): face-box PSNR and detail "
                                                             "against the photo, beside the photo encoded once.",
                                                             rich_help_panel="Full frame")] = None,
        stride: Annotated[int, typer.Option("--stride", min=1, help="--full-frame: measure every N-th frame.",
                                            rich_help_panel="Full frame")] = 2,
        outputs: Annotated[Optional[list[str]], typer.Option(
            "--outputs", help="--full-frame: NAME=FOLDER (repeatable): also score videos made elsewhere (another "
            "tool, an earlier version) from each video's first frame driven by the video, found as "
            "FOLDER/<video name>.<ext>; a row named NAME.", rich_help_panel="Full frame")] = None,
        paired_with: Annotated[Optional[str], typer.Option(
            "--paired-with", help="--full-frame: pair every method per frame with this method or --outputs "
            "NAME (default: each method's -crop variant, else warp-crop).", rich_help_panel="Full frame")] = None,
        learned_parts: Annotated[bool, typer.Option("--learned-parts/--no-learned-parts", help="--full-frame: "
                                                    "redraw changing eyes with the weights' eye model (as the "
                                                    "main command does) or keep the warp's.",
                                                    rich_help_panel="Full frame")] = True,
        mouth: Annotated[Mouth, typer.Option("--mouth", help="--full-frame: the inside of an opening mouth, as "
                                             "the main command's --mouth.",
                                             rich_help_panel="Full frame")] = Mouth.teeth,
        min_photos: Annotated[Optional[int], typer.Option("--min-photos", min=2, help="Photo people need this "
                                                          "many photos (default: the largest T + 1).")] = None,
        people: Annotated[Optional[Path], typer.Option("--people", help="Only these people: a text file of names "
                                                       "(one a line), a training run.json or a checkpoint's "
                                                       "config.json (their held-out people).")] = None,
        no_cross: Annotated[bool, typer.Option("--no-cross", help="Skip the cross-identity protocol.")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Seed for choosing subjects and fine-tuning.")] = 0,
        landmarks: Annotated[Landmarks, typer.Option("--landmarks", help="Landmark backend for the data and "
                                                         "for the landmark metrics.")] = Landmarks.dlib,
        device: Annotated[Device, typer.Option("--device", help="auto = CUDA when present.")] = Device.auto,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the JSON file if it exists.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on internal "
                                              "errors.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")] = False,
    ) -> None:
        setup_logging(verbose, quiet)
        with errors_to_exit_codes(verbose):
            if cross:
                _run_cross(data, photo or [], weights, methods, finetune_steps, max_frames or 90, stride, json_path,
                           landmarks.value, device.value, overwrite, RichProgress(enabled=not quiet), learned_parts,
                           mouth.value, sheets)
                return
            if full_frame:
                _run_full_frame(data, photo or [], weights, methods, finetune_steps, max_frames or 120, stride,
                                json_path, landmarks.value, device.value, overwrite, RichProgress(enabled=not quiet),
                                learned_parts, mouth.value, parse_outputs(outputs or []), paired_with, still or [])
                return
            _run_eval(data, weights, shots, CROP_EVAL_STEPS if finetune_steps is None else finetune_steps,
                      methods or "neural,warp,copy", json_path, max_subjects,
                      max_frames or 8,
                      min_photos, people, no_cross, seed, landmarks.value, device.value, overwrite,
                      RichProgress(enabled=not quiet))


# The crop protocols compare feed-forward with this many fine-tuning steps unless told otherwise.
CROP_EVAL_STEPS = 40


def _check_report_path(path: Path | None, overwrite: bool, kind: str = "report",
                       suffixes: tuple[str, ...] = (".json",)) -> None:
    """A bad --json or --sheet fails now, not after the slow work."""
    from ..errors import UsageError
    from ..io.atomic import check_output_path

    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{path}: the {kind} must be a {' or '.join(suffixes[:2])} file")
    check_output_path(path.expanduser(), overwrite)


def _write_report(path: Path, document: dict[str, Any], overwrite: bool) -> None:
    """The report as strict JSON (non-finite numbers as null), with the command line first."""
    import json

    from ..eval.report import json_safe
    from ..io.atomic import atomic_output

    document = {"command": "animate-face " + " ".join(sys.argv[1:]), **document}
    with atomic_output(path.expanduser(), overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(json_safe(document), indent=1, allow_nan=False))


def _run_eval(data: list[Path], weights: str | None, shots: str, finetune_steps: int, methods: str,
              json_path: Path | None, max_subjects: int | None, max_frames: int, min_photos: int | None,
              people: Path | None, no_cross: bool, seed: int, landmarks: str, device: str, overwrite: bool,
              progress: Any) -> None:
    import logging

    from rich.console import Console

    from ..eval.crop import run_crop_protocol

    log = logging.getLogger("animate_cli.eval")
    chosen_methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    shot_counts = parse_int_list(shots, "--shots")
    _check_report_path(json_path, overwrite)
    document = run_crop_protocol(data, weights, shot_counts, finetune_steps, chosen_methods,
                                 max_subjects=max_subjects, max_frames=max_frames, min_photos=min_photos,
                                 people=people, cross_identity=not no_cross, seed=seed, landmarks=landmarks,
                                 device=device, progress=progress)
    title = (f"{len(document['subjects'])} subjects, {document['settings']['crop_size']} px, "
             f"{document['seconds']:.0f} s")
    console = Console()
    for table in results_tables(document, title):
        console.print(table)
    if json_path is not None:
        _write_report(json_path, document, overwrite)
        log.info("wrote %s", json_path)


def _run_eval_parts(videos: list[Path], weights: str | None, max_frames: int, json_path: Path | None,
                    overwrite: bool, progress: Any, sheet_path: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..errors import UsageError
    from ..eval.parts import METHODS, PAIRED, contact_sheet, run_parts_protocol
    from ..io.atomic import atomic_output

    _check_report_path(json_path, overwrite)
    _check_report_path(sheet_path, overwrite, "contact sheet", (".png", ".jpg", ".jpeg"))
    sheet = [] if sheet_path is not None else None
    report = run_parts_protocol(videos, weights, max_frames, progress=progress, sheet=sheet)
    console = Console()
    for key, title in (("mouth", "mouth crop (frames opening wider than the photo)"),
                       ("eyes", "eye crops (frames whose lids differ from the photo's)")):
        part = report["summary"][key]
        table = Table(title=f"{title}: {part['count']} crops, {len(videos)} videos")
        mouth_columns = ("steadiness (1 = real)", "dark share") if key == "mouth" else ()
        for column in ("method", "SSIM ↑", "L1 ↓", "percept ↓") + mouth_columns:
            table.add_column(column)
        for method in METHODS:
            row = [method] + [f"{part[method][m]:.4f}" if part[method][m] is not None else "-"
                              for m in ("ssim", "l1", "perceptual")]
            if key == "mouth":
                row += [f"{value:.2f}" if (value := part[column][method]) is not None else "-"
                        for column in ("steadiness", "dark_share")]
            table.add_row(*row)
        if key == "mouth":
            real = part["dark_share"]["real"]
            table.add_row("real", *[""] * (len(table.columns) - 2), f"{real:.2f}" if real is not None else "-")
        for method in PAIRED:
            diffs = [part[f"{m}_{method}_minus_synthetic"] for m in ("ssim", "l1", "perceptual")]
            table.add_row(f"{method} - synthetic", *[f"{d[0]:+.4f} ± {d[1]:.4f}" if d else "-" for d in diffs],
                          *([""] * len(mouth_columns)))
        console.print(table)
    if json_path is not None:
        _write_report(json_path, report, overwrite)
    if sheet_path is not None:
        if not sheet:
            console.print("no mouth opened wider than the photo's: no contact sheet written")
            return
        import cv2

        ok, encoded = cv2.imencode(sheet_path.suffix.lower(), cv2.cvtColor(contact_sheet(sheet), cv2.COLOR_RGB2BGR))
        if not ok:
            raise UsageError(f"{sheet_path}: cannot encode the contact sheet")
        with atomic_output(sheet_path.expanduser(), overwrite=overwrite) as tmp:
            tmp.write_bytes(encoded.tobytes())
        console.print(f"wrote the contact sheet {sheet_path} ({len(sheet)} frames)", highlight=False)


FULL_FRAME_COLUMNS = (("SSIM ↑", "ssim", 3), ("PSNR ↑", "psnr", 2), ("box SSIM ↑", "box_ssim", 3),
                      ("box PSNR ↑", "box_psnr", 2), ("box L1 ↓", "box_l1", 4), ("AKD ↓", "akd", 3),
                      ("mouth slope", "mouth_slope", 2), ("driven slope", "driven_slope", 2),
                      ("mouth r ↑", "mouth_corr", 2), ("ID dist ↓", "identity_distance", 3), ("percept ↓", "perceptual", 3),
                      ("detail ↑", "detail", 2), ("face", "face_found", 0))
CROSS_COLUMNS = (("driver max", "driver_max", 2), ("output max", "output_max", 2), ("mouth slope", "mouth_slope", 2),
                 ("mouth r ↑", "mouth_corr", 2))


def _format_paired(mean: float | None, se: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:+.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def full_frame_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables: self-reenactment per video and method, the mean per method, and the mouth-open
    cross-identity rows."""
    from rich.table import Table

    tables = []
    rows = report["self_reenactment"]
    if rows:
        table = Table(title="full-frame self-reenactment (first frame driven by its own video)",
                      caption="whole frame and face box (from the real frame's landmarks) against the real frames; "
                              "AKD over the eye-corner distance; mouth slope/r: output opening vs real; driven slope: "
                              "the smoothed driver track's opening vs real (what the renderers are asked for)")
        for name in ("video", "method"):
            table.add_column(name)
        for header, _, _ in FULL_FRAME_COLUMNS:
            table.add_column(header, justify="right")
        previous = None
        for row in rows + [dict(entry, video="mean") for entry in report["self_reenactment_mean"]]:
            if previous is not None and row["video"] != previous:
                table.add_section()
            previous = row["video"]
            table.add_row(row["video"], row["method"], *(_format(row.get(key), digits, percent=key == "face_found")
                                                         for _, key, digits in FULL_FRAME_COLUMNS))
        tables.append(table)
    paired = report.get("self_reenactment_paired") or []
    if paired:
        table = Table(title="paired per frame with a baseline method, per video",
                      caption="per-frame difference, method minus baseline, on the frames both measured: "
                              "mean ± its standard error (box SSIM: higher is better; AKD: lower is better)")
        for name in ("video", "method", "baseline", "box SSIM diff", "AKD diff"):
            table.add_column(name, justify="right" if name.endswith("diff") else "left")
        for entry in paired:
            table.add_row(entry["video"], entry["method"], entry["baseline"],
                          *(_format_paired(entry[key], entry[f"{key}_se"], 4) for key in ("box_ssim", "akd")))
        tables.append(table)
    still = report.get("still_driver") or []
    if still:
        table = Table(title="still driver (the photo driven by a video of itself)",
                      caption="face box against the photo; ceiling: the photo encoded once at the same crf "
                              "(the driver's own frames)")
        for name in ("photo", "size", "method", "box PSNR ↑", "ceiling PSNR", "detail ↑", "ceiling detail"):
            table.add_column(name, justify="left" if name in ("photo", "method") else "right")
        for row in still:
            table.add_row(row["photo"], "x".join(map(str, row["size"])), row["method"],
                          _format(row["box_psnr"], 2), _format(row["ceiling_box_psnr"], 2),
                          _format(row["detail"], 2), _format(row["ceiling_detail"], 2))
        tables.append(table)
    cross = report["mouth_open_cross"]
    if cross:
        table = Table(title="cross-identity, drivers cut to start mouth-open",
                      caption="mouth opening (inner-lip gap over eye-corner distance) of the output vs the driver")
        for name in ("photo", "driver", "start", "method"):
            table.add_column(name)
        for header, _, _ in CROSS_COLUMNS:
            table.add_column(header, justify="right")
        for row in cross:
            table.add_row(row["photo"], row["driver"], str(row["start"]), row["method"],
                          *(_format(row.get(key), digits) for _, key, digits in CROSS_COLUMNS))
        for entry in report["mouth_open_cross_mean"]:
            table.add_row("mean", "", "", entry["method"], "", "",
                          *(_format(entry.get(key), 2) for key in ("mouth_slope", "mouth_corr")))
        tables.append(table)
    return tables


def _renderers(weights: str | None, landmarks: str, device: str, methods: Sequence[str], learned_parts: bool,
               mouth: str) -> Any:
    """The warp engine, and the neural one when a method needs it, sharing one landmark backend."""
    from ..eval.full_frame import Renderers
    from ..jobs import build_engine

    warp = build_engine(weights, landmarks=landmarks, device=device, renderer="warp", learned_parts=learned_parts,
                        mouth=mouth)
    neural = None
    if any(m.startswith("neural") for m in methods):
        neural = build_engine(weights, landmarks, device, landmark_backend=warp.backend, learned_parts=learned_parts,
                              mouth=mouth)
    return Renderers(warp.backend, warp, neural)


CROSS_COLUMNS_ALL = (("ID dist ↓", "identity_distance", 3), ("yaw slope", "yaw_slope", 2), ("yaw r", "yaw_r", 2),
                     ("yaw spread", "yaw_spread", 1), ("pitch slope", "pitch_slope", 2), ("pitch r", "pitch_r", 2),
                     ("roll slope", "roll_slope", 2), ("roll r", "roll_r", 2), ("roll spread", "roll_spread", 1),
                     ("mouth slope", "mouth_slope", 2), ("mouth r", "mouth_r", 2), ("eye slope", "eye_slope", 2),
                     ("eye r", "eye_r", 2), ("detail", "detail", 2))


def _run_cross(videos: list[Path], photos: list[Path], weights: str | None, methods: str | None,
               finetune_steps: int | None, max_frames: int, stride: int, json_path: Path | None, landmarks: str,
               device: str, overwrite: bool, progress: Any, learned_parts: bool, mouth: str,
               sheets: Path | None) -> None:
    import time

    from rich.console import Console
    from rich.table import Table

    from ..errors import UsageError
    from ..eval.cross import CrossConfig, cross_identity, cross_summary
    from ..io.atomic import ensure_folder

    if not photos:
        raise UsageError("--cross needs photos to drive: --photo PHOTO (repeatable)")
    chosen = tuple(m.strip() for m in (methods or "warp").split(",") if m.strip())
    config = CrossConfig(methods=chosen, max_frames=max_frames, stride=stride, finetune_steps=finetune_steps)
    _check_report_path(json_path, overwrite)
    if sheets is not None:
        ensure_folder(sheets, "the sheets folder")
    renderers = _renderers(weights, landmarks, device, chosen, learned_parts, mouth)
    started = time.perf_counter()
    rows = cross_identity(photos, videos, renderers, config, progress=progress, sheet_dir=sheets)
    report = {"cross": rows, "cross_mean": cross_summary(rows)}
    seconds = time.perf_counter() - started
    table = Table(title="cross-identity: photos driven by other people's videos",
                  caption="slopes and r: the output's angle or opening regressed on the driver's (1 = as far); "
                          "spread: the driver's std in degrees (no slope under 3); detail: the output face's "
                          "fine detail over the photo's")
    for name in ("photo", "driver", "method"):
        table.add_column(name)
    for header, _, _ in CROSS_COLUMNS_ALL:
        table.add_column(header, justify="right")
    for row in rows + [dict(entry, photo="mean", driver="") for entry in report["cross_mean"]]:
        table.add_row(row["photo"], row["driver"], row["method"],
                      *(_format(row.get(key), digits) for _, key, digits in CROSS_COLUMNS_ALL))
    console = Console()
    console.print(table)
    console.print(f"{len(photos)} photos, {len(videos)} drivers, {seconds:.0f} s", highlight=False)
    if json_path is not None:
        settings = {"drivers": [str(v) for v in videos], "photos": [str(p) for p in photos], "methods": list(chosen),
                    "max_frames": max_frames, "stride": stride, "finetune_steps": finetune_steps, "weights": weights}
        _write_report(json_path, _dated(seconds, settings, report), overwrite)


def _dated(seconds: float, settings: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """A protocol's report with its date, time taken, machine and settings first."""
    import datetime

    from ..eval.report import machine_record

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds, "machine": machine_record(), "settings": settings, **report}


def _run_full_frame(videos: list[Path], photos: list[Path], weights: str | None, methods: str | None,
                    finetune_steps: int | None, max_frames: int, stride: int, json_path: Path | None, landmarks: str,
                    device: str, overwrite: bool, progress: Any, learned_parts: bool = True,
                    mouth: str = "teeth", outputs: tuple[tuple[str, str], ...] = (),
                    paired_with: str | None = None, still: list[Path] | None = None) -> None:
    import time

    from rich.console import Console

    from ..eval.full_frame import (FULL_FRAME_METHODS, FullFrameConfig, average_rows, mouth_open_cross_identity,
                                   paired_rows, self_reenactment, still_driver)

    chosen = tuple(m.strip() for m in (methods or ",".join(FULL_FRAME_METHODS)).split(",") if m.strip())
    config = FullFrameConfig(methods=chosen, max_frames=max_frames, stride=stride, finetune_steps=finetune_steps,
                             outputs=outputs, paired_with=paired_with)
    _check_report_path(json_path, overwrite)
    renderers = _renderers(weights, landmarks, device, chosen, learned_parts, mouth)
    started = time.perf_counter()
    rows = self_reenactment(videos, renderers, config, progress=progress)
    keys = [key for _, key, _ in FULL_FRAME_COLUMNS]
    cross = mouth_open_cross_identity(photos, videos, renderers, config, progress=progress) if photos else []
    report = {"self_reenactment": rows, "self_reenactment_mean": average_rows(rows, keys),
              "self_reenactment_paired": paired_rows(rows, paired_with),
              "mouth_open_cross": cross, "mouth_open_cross_mean": average_rows(cross, ["mouth_slope", "mouth_corr"])}
    if still:
        report["still_driver"] = still_driver(still, renderers, chosen, progress=progress)
    seconds = time.perf_counter() - started
    console = Console()
    for table in full_frame_tables(report):
        console.print(table)
    console.print(f"{len(videos)} videos, {len(photos)} photos, {seconds:.0f} s", highlight=False)
    if json_path is not None:
        settings = {"videos": [str(v) for v in videos], "photos": [str(p) for p in photos], "methods": list(chosen),
                    "outputs": dict(outputs), "paired_with": paired_with, "max_frames": max_frames, "stride": stride,
                    "finetune_steps": finetune_steps, "weights": weights}
        _write_report(json_path, _dated(seconds, settings, report), overwrite)
