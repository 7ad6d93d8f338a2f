"""Driving landmarks -> landmarks for the photo's face, and expression metrics.

Relative motion (the default) moves the photo's own landmarks by the driver's changes, so the
driver's face shape (a wider jaw, thinner lips) never reaches the result; absolute motion uses
the driver's landmarks themselves, only moved and scaled onto the photo's face.
"""

from __future__ import annotations

import numpy as np

from .base import NUM_LANDMARKS

# Points that move with the head but hardly with expressions: the upper jaw outline (the chin
# drops when the mouth opens), the eye corners and the nose.
STABLE_POINTS = np.array([0, 1, 2, 3, 13, 14, 15, 16, 36, 39, 42, 45, 27, 28, 29, 30, 31, 32, 33, 34, 35])


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def _real(values: np.ndarray) -> np.ndarray:
    return np.stack([values.real, values.imag], axis=-1)


def fit_similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, scale, translation) from ``source`` to ``target``.

    Points are complex numbers (..., N); the transform is ``z -> a * z + b`` with complex ``a``
    (scale and rotation) and ``b``, returned with the batch shape (...).
    """
    source_mean = source.mean(axis=-1, keepdims=True)
    target_mean = target.mean(axis=-1, keepdims=True)
    centred = source - source_mean
    a = (np.conj(centred) * (target - target_mean)).sum(axis=-1) / (np.abs(centred) ** 2).sum(axis=-1)
    b = target_mean[..., 0] - a * source_mean[..., 0]
    return a, b


def _check_points(points: np.ndarray, name: str, batched: bool) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    shape = (NUM_LANDMARKS, 2)
    if (points.shape[1:] if batched else points.shape) != shape or points.ndim != (3 if batched else 2):
        expected = "(T, 68, 2)" if batched else "(68, 2)"
        raise ValueError(f"{name} must have shape {expected}, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return points


def retarget_relative(source_points: np.ndarray, driver_points: np.ndarray,
                      reference_index: int | None = None, full_closure: bool = False,
                      expression_reference: int | None = None) -> np.ndarray:
    """(T, 68, 2) landmarks for the source face that move the way the driver's face moves.

    Each driving frame is compared with the reference frame (the first by default): its head
    motion (the similarity transform of the stable points) and its expression (what remains
    once the head motion is undone) are carried over separately. The expression deltas are
    rotated and scaled by the similarity from the driver's reference face to the source face,
    added to the source points, and the head motion is applied around the source face, its
    translation scaled to the source's size. The reference frame gives the source points.

    ``expression_reference``: the driver frame whose expression the photo's is taken to be (by
    default the reference frame, which then serves head pose only): a neutral frame, so that a
    driver starting mid-word still opens and closes the mouth from the photo's state.

    ``full_closure``: every lid and lip gap follows ``gap_mapping``: at the expression reference
    it is the photo's own, and it closes fully when the driver's closes (an open-mouth photo's lips
    meet, wide-open eyes blink shut) instead of moving by the driver's pixel change alone.
    """
    source = _check_points(source_points, "source points", batched=False)
    driver = _check_points(driver_points, "driver points", batched=True)
    count = driver.shape[0]
    if count == 0:
        return np.zeros((0, NUM_LANDMARKS, 2), np.float32)
    reference_index = 0 if reference_index is None else int(reference_index)
    expression_reference = reference_index if expression_reference is None else int(expression_reference)
    for index in (reference_index, expression_reference):
        if not -count <= index < count:
            raise ValueError(f"reference index {index} is out of range for {count} frames")
    z_source, z_driver = _complex(source), _complex(driver)
    z_reference = z_driver[reference_index]
    stable = STABLE_POINTS
    # Head motion of every frame relative to the reference: frame = a * reference + b.
    a, b = fit_similarity(np.broadcast_to(z_reference[stable], (count, len(stable))), z_driver[:, stable])
    # Driver reference -> source face: source = m * reference + n.
    m, n = fit_similarity(z_reference[stable], z_source[stable])
    normalised = (z_driver - b[:, None]) / a[:, None]
    expression = normalised - normalised[expression_reference]
    moved = z_source + m * expression
    if full_closure:
        moved = map_openings(moved, z_source, m * normalised, expression_reference)
    # m A m^-1 (moved): the head motion conjugated into the source face's frame.
    result = a[:, None] * (moved - n) + m * b[:, None] + n
    out = _real(result).astype(np.float32)
    uncross_lids_and_lips(out)
    # Frames identical to the reference map exactly to the source (no rounding residue).
    if not full_closure and expression_reference == reference_index:
        same = np.all(driver == driver[reference_index], axis=(1, 2))
        out[same] = source.astype(np.float32)
    return out


def about_typical_pose(source_points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, 68, 2) ``targets`` moved by one similarity so that the head's typical pose over the clip (the median
    scale, roll and place of the stable points' similarity from ``source_points``) is the photo's own.

    Relative motion measured from one reference frame carries that frame's offset from the driver's usual pose
    into every frame: a reference that nods or sits low keeps the photo's head off its place for the whole
    clip. Where the photo is no frame of the driver, its pose is taken to be the driver's usual one instead."""
    source = _check_points(source_points, "source points", batched=False)
    moved = _check_points(targets, "targets", batched=True)
    if not len(moved):
        return moved.astype(np.float32)
    z_source, z = _complex(source), _complex(moved)
    stable = STABLE_POINTS
    a, b = fit_similarity(np.broadcast_to(z_source[stable], (len(z), len(stable))), z[:, stable])
    centre = z_source[stable].mean()
    place = a * centre + b
    typical = np.exp(np.median(np.log(np.abs(a))) + 1j * np.median(np.angle(a)))
    typical_place = np.median(place.real) + 1j * np.median(place.imag)
    return _real((z - typical_place) / typical + centre).astype(np.float32)


# (upper, lower) pairs across each opening, with the opening's two corners.
OPENINGS = (((61, 67), (62, 66), (63, 65)), ((37, 41), (38, 40)), ((43, 47), (44, 46)))
OPENING_CORNERS = ((60, 64), (36, 39), (42, 45))
# A driver gap below this (in the photo's pixels) at the reference counts as closed.
CLOSED_GAP = 0.5


def gap_mapping(driver_gap: np.ndarray, reference_gap: float, photo_gap: float) -> np.ndarray:
    """The photo's gap for each driver gap, all in the photo's pixels: the reference gives the
    photo's own gap; below it the gap shrinks in proportion, to 0 when the driver's is 0 (lips meet,
    lids close fully, whatever the photo's own opening); above it the gap grows as the driver's does."""
    driver_gap = np.asarray(driver_gap, np.float64)
    if reference_gap <= CLOSED_GAP:
        return np.maximum(photo_gap + driver_gap - reference_gap, 0.0)
    below = photo_gap * np.clip(driver_gap, 0.0, None) / reference_gap
    return np.where(driver_gap < reference_gap, below, photo_gap + driver_gap - reference_gap)


def map_openings(moved: np.ndarray, z_source: np.ndarray, z_driver: np.ndarray, reference: int) -> np.ndarray:
    """Set every lid and lip gap of ``moved`` (T, 68) from ``gap_mapping`` of the driver's gaps
    (``z_driver``: head motion undone, turned and scaled onto the photo), about each pair's midpoint."""
    moved = moved.copy()
    for pairs, (first, second) in zip(OPENINGS, OPENING_CORNERS):
        axis = z_source[second] - z_source[first]
        axis = axis / max(abs(axis), 1e-6)
        down = 1j * axis                          # +90 degrees: towards the chin in image coordinates
        for upper, lower in pairs:
            driver_gap = ((z_driver[:, lower] - z_driver[:, upper]) * np.conj(down)).real
            photo_gap = max(float(((z_source[lower] - z_source[upper]) * np.conj(down)).real), 0.0)
            gap = gap_mapping(driver_gap, float(driver_gap[reference]), photo_gap)
            middle = (moved[:, upper] + moved[:, lower]) / 2
            along_upper = ((moved[:, upper] - middle) * np.conj(axis)).real * axis
            along_lower = ((moved[:, lower] - middle) * np.conj(axis)).real * axis
            moved[:, upper] = middle + along_upper - 0.5 * gap * down
            moved[:, lower] = middle + along_lower + 0.5 * gap * down
    return moved


# (upper, lower) pairs facing each other across the eyes and the inner lips.
FACING_PAIRS = np.array([pair for pairs in OPENINGS for pair in pairs])


def uncross_lids_and_lips(points: np.ndarray) -> None:
    """Where a delta pushed a lower lid or lip above its upper partner, meet in the middle (in place).

    A driver whose reference frame has an open mouth (or open eyes wider than the photo's) gives
    negative deltas when it closes; added to a photo that is already closed they would cross.
    """
    down = points[:, 57] - points[:, 27:31].mean(axis=1)          # nose bridge -> chin direction
    down /= np.maximum(np.linalg.norm(down, axis=-1, keepdims=True), 1e-6)
    upper, lower = points[:, FACING_PAIRS[:, 0]], points[:, FACING_PAIRS[:, 1]]
    gap = ((lower - upper) * down[:, None]).sum(axis=-1)           # (T, pairs), < 0 when crossed
    crossed = gap < 0
    if crossed.any():
        middle = (upper + lower) / 2
        upper[crossed] = middle[crossed]
        lower[crossed] = middle[crossed]
        points[:, FACING_PAIRS[:, 0]] = upper
        points[:, FACING_PAIRS[:, 1]] = lower


# ``hold_still``: a target whose landmarks all lie within the first fraction of the face size of the
# photo's is the photo (the driver did not move: what is left is the detector's scatter, 0.2-0.3 % of
# the face on a video of a still 2048 px photo); the motion comes back in full by the second fraction.
STILL_BAND = (0.004, 0.01)
# ... and never less than this many pixels: on a small face (134 px, the samples' portrait) the encoder moves
# dlib's landmarks by a pixel, 0.75 % of that face.
STILL_PIXELS = 1.5


def hold_still(source_points: np.ndarray, targets: np.ndarray, band: tuple[float, float] = STILL_BAND) -> np.ndarray:
    """(T, 68, 2) targets with the motion of nearly still frames taken out: each frame's displacement from
    ``source_points`` is scaled by a smoothstep of its largest landmark displacement: 0 below ``band[0]`` of
    the face size (at least ``STILL_PIXELS``), 1 from there plus ``band[1] - band[0]`` of the face size, so a
    still driver gives the photo back exactly."""
    source = _check_points(source_points, "source_points", batched=False).astype(np.float64)
    targets = np.asarray(targets, np.float64)
    if not len(targets):
        return targets.astype(np.float32)
    extent = source.max(axis=0) - source.min(axis=0)
    size = max(float(extent.max()), 1.0)
    moved = targets - source
    largest = np.linalg.norm(moved, axis=2).max(axis=1)
    low = max(band[0] * size, STILL_PIXELS)
    t = np.clip((largest - low) / max((band[1] - band[0]) * size, 1e-9), 0.0, 1.0)
    share = t * t * (3.0 - 2.0 * t)
    return (source + moved * share[:, None, None]).astype(np.float32)


def retarget_absolute(source_points: np.ndarray, driver_points: np.ndarray) -> np.ndarray:
    """The driver's own landmarks, moved and scaled so the first frame's face box matches the
    source face's box (the driver's face shape is kept: ``--absolute``)."""
    source = _check_points(source_points, "source points", batched=False)
    driver = _check_points(driver_points, "driver points", batched=True)
    if driver.shape[0] == 0:
        return np.zeros((0, NUM_LANDMARKS, 2), np.float32)
    source_center, source_size = _box_center_size(source)
    driver_center, driver_size = _box_center_size(driver[0])
    return ((driver - driver_center) * (source_size / driver_size) + source_center).astype(np.float32)


def _box_center_size(points: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (lo + hi) / 2, float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-6))


def _distance(points: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(points[..., i, :] - points[..., j, :], axis=-1)


def _interocular(points: np.ndarray) -> np.ndarray:
    # Outer eye corners: stable under expressions and rotation in the image plane.
    return np.maximum(_distance(points, 36, 45), 1e-6)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (mean of the three upper/lower inner-lip pairs) over the distance between
    the outer eye corners, for (..., 68, 2) points -> (...)."""
    points = np.asarray(points, dtype=np.float64)
    gap = (_distance(points, 61, 67) + _distance(points, 62, 66) + _distance(points, 63, 65)) / 3
    return gap / _interocular(points)


def lid_gap(points: np.ndarray, first: int) -> np.ndarray:
    """One eye's aspect ratio: its mean lid gap over its width (~0.3 open, ~0.05 closed), for (..., 68, 2)
    points -> (...); ``first``: the eye's first landmark (36 or 42; corner, upper lid, corner, lower lid)."""
    points = np.asarray(points, dtype=np.float64)
    lids = _distance(points, first + 1, first + 5) + _distance(points, first + 2, first + 4)
    return lids / (2 * np.maximum(_distance(points, first, first + 3), 1e-6))


def eye_opening(points: np.ndarray) -> np.ndarray:
    """Mean eye aspect ratio of both eyes (``lid_gap``), for (..., 68, 2) points -> (...)."""
    return (lid_gap(points, 36) + lid_gap(points, 42)) / 2
