"""Painting learned mouths and eyes into rendered face crops.

A ``PartsPainter`` is made once per person, from the photo's face crop (at the renderer's size)
and its landmarks; ``paint`` then redraws, in a batch of rendered crops, the mouth where the target
opens wider than the photo and each eye where the lids come near to meeting (a blink) or open an eye the
photo shows shut (a squint is the photo's own eye under lids slid over it, an eye opening wider the photo's
eye stretched, ``render.warp``). The strengths fade in over a small range (the synthetic fill's
``MOUTH_FILL_START`` / ``FULL``), so a slowly opening mouth does not pop and an unchanged part is left
exactly as rendered.

The mouth is drawn one of two ways: ``mouth``, the model's whole opening, or ``teeth`` (the
default of the main command), the model's opening over the synthetic interior, fading out towards
the lower inner lip (``teeth_weight``). The model draws the upper teeth well, in the person's own
tones, but the lower half of a wide opening as a blurred lip-pink band that a viewer and dlib take
for lip, so its mouths read less open than real ones; the synthetic interior keeps its lower teeth and the
lower lip's sharp edge (docs/evaluation.md, "Part crops"). The model draws at its crop's size: where the output
shows that drawing enlarged (a large face), its teeth would be a soft smear, and the synthetic interior alone
shows (``TEETH_SHOWN``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..landmarks.crop import face_size
from ..tensors import images_to_tensor
from ..render.warp import LOWER_INNER_LIP, UPPER_INNER_LIP, _smoothstep, mouth_fill_strength, mouth_opening
from .geometry import MOUTH_SIDE, PARTS, cut_part, eye_openness, part_masks, part_matrix, to_part
from .model import LearnedParts, part_inputs

# An eye is redrawn when its openness (lid gap over eye width) differs from the photo's by this
# much: fading in from START, full at FULL.
EYE_CHANGE_START = 0.05
EYE_CHANGE_FULL = 0.12
# Lids closing slide over the photo's own eye in the warp (``render.warp``), sharp at any size; the eye model,
# drawn at its crop's size, showed as a soft blob wherever the output shows the eye larger. It redraws a closing
# eye only as the lids meet (a blink's closed lid, which the photo does not show): fading in as the gap falls
# from this share of the photo's to the second, full below it.
EYE_CLOSING = (0.7, 0.4)
# An eye opening wider than the photo's is the photo's eye stretched (``render.warp``) wherever the photo shows the
# eye: at full size that kept the photo's iris, lashes and skin sharp, where the model's drawing was a soft, half-shut
# blob on a large face, and on 64 px crops of real talking videos the two scored alike. The model opens only an eye
# the photo shows (nearly) shut: in full below the first lid gap (over the eye's width), fading out by the second.
EYE_OPENING_PHOTO = (0.10, 0.15)
# What a painter can draw: the part models' parts, and ``teeth``, the mouth model over the synthetic
# interior (instead of ``mouth``, its whole opening).
TEETH = "teeth"
DRAWABLE = (TEETH, *PARTS)
# ``teeth``: the model's share fades from 1 to 0 between these distances from the lower inner lip, as
# fractions of the opening's height (below that lip it is 0: the lower lip keeps its edge).
TEETH_FADE = (0.05, 0.25)
# ``teeth``: the model draws the mouth at its crop's size (``PartsConfig.mouth_size``). Where the output shows that
# drawing enlarged, its teeth are a soft, glowing smear beside the photo's own detail and the synthetic interior's
# crisp teeth (docs/findings.md, "2026-12-08"): the model's share is whole while one of its pixels covers at most
# the first many output pixels (across), and gone by the second, where the synthetic interior alone shows.
TEETH_SHOWN = (1.3, 1.6)


def part_measure(part: str, points: np.ndarray) -> float:
    """What a part's strength compares: the mouth's opening, or an eye's openness."""
    return mouth_opening(points) if part == "mouth" else eye_openness(points, part)


def _strength(part: str, source_measure: float, target_measure: float) -> float:
    if part == "mouth":
        return mouth_fill_strength(source_measure, target_measure)
    change = float(_smoothstep(abs(target_measure - source_measure), EYE_CHANGE_START, EYE_CHANGE_FULL))
    if target_measure < source_measure:
        closed = 1.0 - target_measure / max(source_measure, 1e-6)
        change *= float(_smoothstep(closed, 1.0 - EYE_CLOSING[0], 1.0 - EYE_CLOSING[1]))
    else:
        change *= 1.0 - float(_smoothstep(source_measure, *EYE_OPENING_PHOTO))
    return change


def part_strength(part: str, source_points: np.ndarray, target_points: np.ndarray) -> float:
    """How much of the learned part replaces the rendered one (0 to 1)."""
    return _strength(part, part_measure(part, source_points), part_measure(part, target_points))


def teeth_share(points: np.ndarray, size: int, shown: float) -> float:
    """How much of the learned teeth is drawn (0 to 1) for a mouth crop of ``size`` px cut around ``points`` (in
    pixels of a crop the output shows ``shown`` times larger): whole while the output enlarges the model's drawing
    by up to ``TEETH_SHOWN[0]``, none from ``TEETH_SHOWN[1]``."""
    enlarged = shown * MOUTH_SIDE * face_size(np.asarray(points, np.float64)) / size
    return 1.0 - float(_smoothstep(enlarged, *TEETH_SHOWN))


def teeth_weight(points: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """float32 (size, size) in [0, 1], in the mouth crop of ``matrix``: 1 in the upper part of the
    opening and above it, fading to 0 towards the lower inner lip (``TEETH_FADE``), 0 on and below it."""
    points = np.asarray(points)
    lower = to_part(matrix, points[list(LOWER_INNER_LIP[::-1])])     # from corner 64 to corner 60
    upper = to_part(matrix, points[list(UPPER_INNER_LIP)])
    height = max(float(np.mean(lower[1:4, 1]) - np.mean(upper[1:4, 1])), 1.0)
    line = np.full((size, size), 255, np.uint8)
    cv2.polylines(line, [np.round(lower * 16).astype(np.int32)], False, 0, 1, cv2.LINE_8, shift=4)
    distance = cv2.distanceTransform(line, cv2.DIST_L2, 3)
    weight = cv2.GaussianBlur(np.asarray(_smoothstep(distance / height, *TEETH_FADE), np.float32), (0, 0),
                              max(0.6, size / 120.0))
    # None on and below the lower inner lip (the region under its polyline, to the crop's bottom; an
    # anti-aliased edge), so the lower lip keeps the synthetic interior's sharp edge.
    below = np.zeros((size, size), np.uint8)
    corners = np.array([[lower[-1, 0], size + 1.0], [lower[0, 0], size + 1.0]])
    cv2.fillPoly(below, [np.round(np.vstack([lower, corners]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return weight * (1.0 - below.astype(np.float32) / 255.0)


def _masks_tensor(masks: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def paste_part(image: np.ndarray, patch: np.ndarray, alpha: np.ndarray, matrix: np.ndarray,
               additive: bool = False, alpha_out: Sequence[np.ndarray] = ()) -> None:
    """Blend a part crop (float32 RGB (S, S, 3), alpha (S, S)) back into ``image`` in place, warping
    only the region where alpha is not zero; ``additive``: ``patch`` is a change, added times alpha
    (a residual model's correction keeps the detail of what it corrects); each (H, W) float32 array in
    ``alpha_out`` takes the largest weight each pixel of ``image`` was painted with."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if not len(rows):
        return
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[cols[0] - 1, rows[0] - 1], [cols[-1] + 1, rows[0] - 1], [cols[0] - 1, rows[-1] + 1],
                        [cols[-1] + 1, rows[-1] + 1]], np.float64)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(mapped.min(axis=0)).astype(int) - 1, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return
    # ROI pixel (x, y) is image pixel (x + x0, y + y0); ``to_crop`` maps it into the crop.
    to_crop = matrix.copy()
    to_crop[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    roi_size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(patch, to_crop, roi_size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(alpha, to_crop, roi_size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    for record in alpha_out:
        np.maximum(record[y0:y1, x0:x1], weight, out=record[y0:y1, x0:x1])
    roi = image[y0:y1, x0:x1].astype(np.float32)
    blended = roi + (warped if additive else warped - roi) * weight[..., None]
    image[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


class PartsPainter:
    """The learned parts of one person, ready to paint into rendered crops of one size."""

    def __init__(self, parts: LearnedParts, source_image: np.ndarray, source_points: np.ndarray,
                 device: torch.device | str = "cpu", draw: tuple[str, ...] = PARTS):
        unknown = set(draw) - set(DRAWABLE)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(DRAWABLE)}")
        if TEETH in draw and "mouth" in draw:
            raise ValueError("draw the mouth as teeth or as mouth, not both")
        self.parts = parts
        # ``teeth``: the mouth model, pasted over the synthetic interior with ``teeth_weight``.
        self.teeth = TEETH in draw
        self.draw = tuple(part for part in PARTS if part in draw or (part == "mouth" and self.teeth))
        self.device = torch.device(device)
        self.source_points = np.asarray(source_points, np.float32)
        self._source_measures = {part: part_measure(part, self.source_points) for part in self.draw}
        self._sources: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for part in self.draw:
            size = parts.config.size_of(part)
            matrix = part_matrix(self.source_points, part, size)
            crop = cut_part(np.asarray(source_image), matrix, size)
            shape, _ = part_masks(self.source_points, part, size, matrix)
            self._sources[part] = (images_to_tensor(crop, self.device), _masks_tensor([shape]).to(self.device))

    @property
    def needs_synthetic_mouth(self) -> bool:
        """Whether the crops to paint must carry the synthetic mouth interior: the mouth is not drawn
        here, its model corrects that interior, or it draws only the teeth over it."""
        return "mouth" not in self.draw or self.teeth or self.parts.config.residual("mouth")

    @torch.inference_mode()
    def paint(self, frames: np.ndarray, target_points: np.ndarray, in_place: bool = False,
              alphas: np.ndarray | None = None, skin: np.ndarray | None = None,
              measure_points: np.ndarray | None = None, shown: float = 1.0) -> np.ndarray:
        """(B, H, W, 3) uint8 rendered crops and their (B, 68, 2) target landmarks -> the crops with
        the changed parts redrawn: a new array, or ``frames`` itself painted over with ``in_place``
        (a renderer's own fresh frames). Frames no part applies to are left unchanged.

        ``alphas`` (B, H, W) float32, when given, take where each crop was painted; ``skin`` the same
        for the parts that redraw skin (the eyes' lids), under which a larger photo's fine detail can
        be kept (``render.fullres``). ``measure_points`` (B, 68, 2), when given, decide how strongly each
        part is redrawn instead of ``target_points`` (the face as the output shows it, when the targets
        are in another frame: the 3D head's expression in the photo's own frame). ``shown``: how many output
        pixels (across) one pixel of the crops covers; with ``teeth``, the learned teeth fade out where the output
        enlarges the model's drawing (``teeth_share``)."""
        out = frames if in_place else np.array(frames, dtype=np.uint8, copy=True)
        if out.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {out.dtype}")
        for part in self.draw:
            size = self.parts.config.size_of(part)
            jobs = []
            for index, points in enumerate(target_points):
                seen = points if measure_points is None else measure_points[index]
                strength = _strength(part, self._source_measures[part], part_measure(part, seen))
                if part == "mouth" and self.teeth and strength > 0.0:
                    strength *= teeth_share(points, size, shown)
                if strength > 0.0:
                    jobs.append((index, strength, part_matrix(points, part, size)))
            if not jobs:
                continue
            crops, shapes, holes = [], [], []
            for index, _, matrix in jobs:
                crops.append(cut_part(out[index], matrix, size))
                shape, hole = part_masks(target_points[index], part, size, matrix)
                shapes.append(shape)
                holes.append(hole)
            hole_t = _masks_tensor(holes).to(self.device)
            source, source_shape = self._sources[part]
            count = len(jobs)
            residual = self.parts.config.residual(part)
            inputs = part_inputs(images_to_tensor(crops, self.device), hole_t,
                                 _masks_tensor(shapes).to(self.device), source.expand(count, -1, -1, -1),
                                 source_shape.expand(count, -1, -1, -1),
                                 keep_hole=residual).contiguous(memory_format=torch.channels_last)
            painted = ((self.parts.net(part)(inputs) + 1.0) * 127.5).clamp(0, 255)
            if residual:  # only the correction is pasted, so the full-size interior keeps its detail
                painted = painted - (inputs[:, :3] + 1.0) * 127.5
            painted = painted.permute(0, 2, 3, 1).float().cpu().numpy()
            for (index, strength, matrix), patch, hole in zip(jobs, painted, holes):
                alpha = hole * strength
                if part == "mouth" and self.teeth:
                    alpha = alpha * teeth_weight(target_points[index], matrix, size)
                records = [] if alphas is None else [alphas[index]]
                if skin is not None and part != "mouth":
                    records.append(skin[index])
                paste_part(out[index], np.ascontiguousarray(patch), alpha, matrix, additive=residual,
                           alpha_out=records)
        return out
