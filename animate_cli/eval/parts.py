"""How well the learned mouth and eyes match real ones, on real talking videos (``eval-parts``).

For each video its first frame is the photo and the video drives it (self-reenactment, so the real
frames are the right answer). Each frame's real landmarks, in the photo's crop, are the target; the
photo's crop is warped to them (``FaceWarper``) and its mouth and eyes drawn three ways: the synthetic
interior (no eye model), the learned teeth over it (``--mouth teeth``, the default; the learned eyes)
and the learned part models alone (``--mouth learned``). Each is compared with the real frame, cut the
same way, on the frames where a part is redrawn at all (``part_strength`` > 0: the mouth opens wider
than the photo's; an eye's lids differ from the photo's):

- SSIM, L1 (grey levels 0-255) and the face ResNet's perceptual distance of the part crop,
- steadiness: the mean frame-to-frame change of the mouth crop over consecutive redrawn frames, over
  the real video's change (1 = as steady as the real mouth; more = flicker or swimming teeth),
- the mouth's dark share: how much of the target's opening is darker than half the lips' brightness
  (``interior_dark_share``), for the real frame and each method. An interior much lighter than the
  real one reads as a closed mouth (to a viewer, and to dlib's landmarks), whatever its SSIM.

``contact_sheet`` lays out, to look at, each video's widest-open mouth crops: real | synthetic | teeth |
learned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..io.video import iter_frames, probe_video
from ..landmarks import LandmarkBackend, track_video
from ..landmarks.crop import crop_from_landmarks
from ..render.warp import FaceWarper
from ..parts.geometry import EYES, MOUTH_RIM, PARTS, cut_part, part_masks, part_matrix
from ..parts.model import LearnedParts
from ..parts.paint import TEETH, PartsPainter, part_strength
from ..progress import ProgressReporter, SilentProgress
from ..tensors import images_to_tensor
from .metrics import ssim

log = logging.getLogger(__name__)

CROP_SIZE = 256
METHODS = ("synthetic", "teeth", "learned")
# The methods paired per crop with the synthetic interior.
PAIRED = ("teeth", "learned")
# The opening is "dark" where darker than this share of the lips' median brightness.
DARK_SHARE_OF_LIPS = 0.5
# The lips around an opening: within this fraction of the crop's side of it, outside its rim.
LIP_RING = 0.08
# Mouth crops per video on a contact sheet (the widest openings), and their scale there.
SHEET_FRAMES = 4
SHEET_SCALE = 2


@dataclass(frozen=True)
class SheetRow:
    """One frame's mouth crops for the contact sheet (RGB, by method name and "real")."""

    video: str
    frame: int
    crops: dict[str, np.ndarray]


def contact_sheet(rows: Sequence[SheetRow]) -> np.ndarray:
    """RGB image: one row per frame, columns real | synthetic | teeth | learned, each crop scaled by
    ``SHEET_SCALE``, the video and frame written over the real crop."""
    lines = []
    for row in rows:
        cells = [cv2.resize(row.crops[name], None, fx=SHEET_SCALE, fy=SHEET_SCALE, interpolation=cv2.INTER_CUBIC)
                 for name in ("real", *METHODS)]
        label = f"{Path(row.video).stem[:24]} {row.frame}"
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(cells[0], (0, 0), (width + 6, height + 8), (0, 0, 0), -1)
        cv2.putText(cells[0], label, (3, height + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(np.concatenate(cells, axis=1))
    return np.concatenate(lines, axis=0)


def interior_dark_share(crop: np.ndarray, shape: np.ndarray) -> float | None:
    """The share of a mouth crop's opening (``shape`` > 0.5) darker than ``DARK_SHARE_OF_LIPS`` of
    the median brightness of the lips around it; None when the opening covers no pixel."""
    opening = shape > 0.5
    if not opening.any():
        return None
    size = shape.shape[0]
    grey = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    outer = max(2, int(round(LIP_RING * size)))
    inner = max(1, int(round(MOUTH_RIM * size)))

    def grown(radius: int) -> np.ndarray:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return cv2.dilate(opening.astype(np.uint8), kernel) > 0

    ring = grown(outer) & ~grown(inner)
    lips = float(np.median(grey[ring])) if ring.any() else float(np.median(grey))
    return float((grey[opening] < DARK_SHARE_OF_LIPS * lips).mean())


def _perceptual_distance(perceptual: Any, a: np.ndarray, b: np.ndarray) -> float:
    with torch.no_grad():
        return float(perceptual(images_to_tensor(a), images_to_tensor(b)))


def evaluate_video(path: str | Path, parts: LearnedParts, backend: LandmarkBackend, max_frames: int = 150,
                   perceptual: Any = None, sheet: list[SheetRow] | None = None) -> dict[str, Any]:
    """Per-part metrics of one video (see the module docstring); ``sheet``: a list that gets the
    ``SHEET_FRAMES`` widest-open mouth crops, in frame order."""
    info = probe_video(path)
    frames = []
    for index, frame in enumerate(iter_frames(path, info=info)):
        if index >= max_frames:
            break
        frames.append(frame)
    track = track_video(backend, frames, info.fps, path=path)
    crop = crop_from_landmarks(track.points[0], CROP_SIZE)
    photo = crop.crop_image(frames[0])
    photo_points = crop.points_to_crop(track.points[0])
    warper = FaceWarper(photo, photo_points)
    painter = PartsPainter(parts, photo, photo_points)
    teeth_painter = PartsPainter(parts, photo, photo_points, draw=(TEETH, *EYES))
    record: dict[str, Any] = {"video": Path(path).name, "frames": len(frames)}
    cuts: dict[str, dict[str, list]] = {part: {m: [] for m in ("real", *METHODS)} for part in PARTS}
    kept: dict[str, list[int]] = {part: [] for part in PARTS}
    openings: list[np.ndarray] = []     # the target's mouth opening, per kept mouth crop
    for index in range(1, len(frames)):
        if not track.valid[index]:
            continue
        points = crop.points_to_crop(track.points[index])
        strengths = {part: part_strength(part, photo_points, points) for part in PARTS}
        if not any(s > 0 for s in strengths.values()):
            continue
        real = crop.crop_image(frames[index])
        synthetic = warper.warp(points)
        unfilled = synthetic if painter.needs_synthetic_mouth else warper.warp(points, fill_mouth=False)
        learned = painter.paint(unfilled[None], points[None])[0]
        teeth = teeth_painter.paint(synthetic[None], points[None])[0]
        for part in PARTS:
            if strengths[part] <= 0:
                continue
            size = parts.config.size_of(part)
            matrix = part_matrix(points, part, size)
            kept[part].append(index)
            if part == "mouth":
                openings.append(part_masks(points, part, size, matrix)[0])
            for name, image in (("real", real), ("synthetic", synthetic), ("teeth", teeth), ("learned", learned)):
                cuts[part][name].append(cut_part(image, matrix, size))
    for part in PARTS:
        key = "eyes" if part != "mouth" else "mouth"
        entry = record.setdefault(key, {"count": 0, **{m: {"ssim": [], "l1": [], "perceptual": []} for m in METHODS}})
        entry["count"] += len(kept[part])
        for method in METHODS:
            for real, made in zip(cuts[part]["real"], cuts[part][method]):
                entry[method]["ssim"].append(ssim(made, real))
                entry[method]["l1"].append(float(np.abs(made.astype(np.float32) - real.astype(np.float32)).mean()))
                if perceptual is not None:
                    entry[method]["perceptual"].append(_perceptual_distance(perceptual, made, real))
    shares = {name: [interior_dark_share(c, o) for c, o in zip(cuts["mouth"][name], openings)]
              for name in ("real", *METHODS)}
    usable = [i for i in range(len(openings)) if shares["real"][i] is not None]
    record["mouth"]["dark_share"] = {name: [shares[name][i] for i in usable] for name in ("real", *METHODS)}
    if sheet is not None:
        widest = sorted(sorted(range(len(openings)), key=lambda i: float(openings[i].sum()))[-SHEET_FRAMES:])
        sheet += [SheetRow(record["video"], kept["mouth"][i], {name: cuts["mouth"][name][i] for name in cuts["mouth"]})
                  for i in widest]
    # Steadiness of the mouth over consecutive redrawn frames.
    indices = kept["mouth"]
    pairs = [i for i in range(1, len(indices)) if indices[i] == indices[i - 1] + 1]
    change = {}
    for name in ("real", *METHODS):
        crops = cuts["mouth"][name]
        change[name] = (float(np.mean([np.abs(crops[i].astype(np.float32) - crops[i - 1].astype(np.float32)).mean()
                                       for i in pairs])) if pairs else None)
    record["mouth"]["steadiness"] = {m: (change[m] / change["real"] if change["real"] else None) for m in METHODS}
    record["mouth"]["consecutive_pairs"] = len(pairs)
    return record


def evaluate_parts(videos: Sequence[str | Path], parts: LearnedParts, backend: LandmarkBackend,
                   max_frames: int = 150, progress: Callable[[int], None] | None = None,
                   sheet: list[SheetRow] | None = None) -> dict[str, Any]:
    """Every video's record and the summary over all of them (per-frame means, and per-method means of
    the per-video steadiness); ``sheet`` as in ``evaluate_video``."""
    from ..parts.train import installed_perceptual

    perceptual = installed_perceptual()   # None (and no perceptual column) without the face ResNet
    records = []
    for video in videos:
        records.append(evaluate_video(video, parts, backend, max_frames, perceptual, sheet))
        if progress is not None:
            progress(1)
    summary: dict[str, Any] = {}
    for key in ("mouth", "eyes"):
        part = {"count": sum(r[key]["count"] for r in records)}
        for method in METHODS:
            part[method] = {metric: (float(np.mean(values)) if (values := [v for r in records
                                                                              for v in r[key][method][metric]])
                                     else None)
                            for metric in ("ssim", "l1", "perceptual")}
        # Paired: each learned method minus synthetic, per frame (mean and standard error).
        for method in PAIRED:
            for metric in ("ssim", "l1", "perceptual"):
                diffs = [mv - sv for r in records
                         for mv, sv in zip(r[key][method][metric], r[key]["synthetic"][metric])]
                part[f"{metric}_{method}_minus_synthetic"] = (
                    [float(np.mean(diffs)), float(np.std(diffs) / np.sqrt(len(diffs)))] if len(diffs) > 1 else None)
        summary[key] = part
    steadiness = {m: [r["mouth"]["steadiness"][m] for r in records if r["mouth"]["steadiness"][m] is not None]
                  for m in METHODS}
    summary["mouth"]["steadiness"] = {m: (float(np.mean(v)) if v else None) for m, v in steadiness.items()}
    shares = {name: [v for r in records for v in r["mouth"]["dark_share"][name]] for name in ("real", *METHODS)}
    summary["mouth"]["dark_share"] = {name: (float(np.mean(v)) if v else None) for name, v in shares.items()}
    return {"videos": records, "summary": summary}


def run_parts_protocol(videos: Sequence[str | Path], weights: str | None, max_frames: int = 150,
                       progress: ProgressReporter | None = None,
                       sheet: list[SheetRow] | None = None) -> dict[str, Any]:
    """The part-crop protocol as ``animate-face eval-parts`` runs it: the drivers checked, the
    checkpoint's part models loaded, every video evaluated. Returns the report document: the machine,
    the weights folder, then ``evaluate_parts``' videos and summary."""
    from ..errors import WeightsError
    from ..hub import resolve_weights
    from ..io.driver import check_driver
    from ..landmarks import create_backend
    from ..parts import load_parts
    from .report import machine_record

    for video in videos:
        check_driver(video)
    folder = resolve_weights(weights)
    parts = load_parts(folder)
    if parts is None:
        raise WeightsError("has no part models (train them with animate-face train-parts)", folder)
    backend = create_backend("dlib")
    progress = progress or SilentProgress()
    with progress.stage("eval parts", len(videos)) as advance:
        report = evaluate_parts(videos, parts, backend, max_frames, progress=advance, sheet=sheet)
    return {"machine": machine_record(), "weights": str(folder), **report}
