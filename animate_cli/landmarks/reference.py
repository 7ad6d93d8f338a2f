"""The driver frames that relative motion is measured from.

Talking clips rarely start neutral. Taking frame 0 blindly as the reference turns a driver that
starts mid-word into a photo whose mouth can only close: every later frame's opening is measured
against an already open mouth. ``pick_references`` scores every detected frame instead, as FOMM's
best-frame search does, and takes two: for the head's pose, the frame whose pose and framing are
closest to the photo's (the photo's head is taken to be posed like it); for the expression, the
frame whose expression is closest to the photo's (a closed-mouth photo gets a closed-mouth frame,
so it opens as wide as the driver opens; eyes open, not mid-blink). With ``full_closure`` in
retargeting, an open-mouth photo still closes when the driver closes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .base import NUM_LANDMARKS
from .retarget import eye_opening, mouth_opening

REFERENCE_CHOICES = ("auto", "first")

# Each term of the cost is divided by its scale, so a cost of 1 is "clearly different": an
# inner-lip gap 0.06 eye distances off the photo's, an eye aspect ratio 0.1 off (open is about
# 0.3, closed 0.05), a yaw or roll 0.08 off, the head 0.15 face sizes (or frame shares) from where
# it should be, a pose-free shape 0.03 eye distances from the photo's.
MOUTH_SCALE = 0.06
EYE_SCALE = 0.1
POSE_SCALE = 0.08
POSITION_SCALE = 0.15
SHAPE_SCALE = 0.03
# Weights of the terms; the mouth and the eyes decide first, pose and position break ties.
MOUTH_WEIGHT = 2.0
EYE_WEIGHT = 1.5
POSE_WEIGHT = 0.5
POSITION_WEIGHT = 0.5
SHAPE_WEIGHT = 1.0
# A driver frame whose 68 landmarks lie within this many face sizes (mean distance, as shares of
# each image's longer side) of the photo's is the photo's own pose and place: the pose reference,
# whatever the other terms say. The photo is then (nearly) a frame of the driver, and any other
# reference offsets the head for the whole clip. The first frames of the 23 talking videos saved as
# PNG photos land 0 to 0.003 face sizes from the track's frame 0; other people's photos no closer
# than 0.10 to any frame of the five top-level drivers.
SAME_POSE_MATCH = 0.02


def parse_reference(text: str | int) -> str | int:
    """``auto``, ``first`` or a frame number (as given to ``--reference``)."""
    if isinstance(text, int):
        value = text
    else:
        cleaned = str(text).strip().lower()
        if cleaned in REFERENCE_CHOICES:
            return cleaned
        try:
            value = int(cleaned)
        except ValueError:
            raise UsageError(f"--reference takes auto, first or a frame number, got {text!r}") from None
    if value < 0:
        raise UsageError(f"--reference frame number must be >= 0, got {value}")
    return value


def pose_features(points: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame yaw and roll proxies, face centre and size for (T, 68, 2) points."""
    points = np.asarray(points, np.float64)
    left_eye, right_eye = points[:, 36:42].mean(axis=1), points[:, 42:48].mean(axis=1)
    axis = right_eye - left_eye
    roll = np.arctan2(axis[:, 1], axis[:, 0])
    axis /= np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
    # Yaw: where the nose tip sits between the jaw's ends, along the eye axis (0 = centred).
    jaw_left, jaw_right, nose = points[:, 0], points[:, 16], points[:, 30]
    width = np.maximum(((jaw_right - jaw_left) * axis).sum(-1), 1e-6)
    yaw = ((nose - (jaw_left + jaw_right) / 2) * axis).sum(-1) / width
    centre = points.mean(axis=1)
    size = np.maximum((points.max(axis=1) - points.min(axis=1)).max(axis=-1), 1e-6)
    return {"yaw": yaw, "roll": roll, "centre": centre, "size": size}


@dataclass(frozen=True)
class References:
    """The driver frames relative motion is measured from: ``pose`` is the frame whose head pose
    the photo's is taken to be, ``expression`` the frame whose expression it is (a neutral one).
    ``usual_pose``: the photo is no frame of the driver and ``pose`` was picked as the closest: the head is
    then placed about the driver's usual pose instead (``retarget.about_typical_pose``)."""

    pose: int
    expression: int
    usual_pose: bool = False


def _check(points: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"points must have shape (T, 68, 2), got {points.shape}")
    valid = np.ones(len(points), bool) if valid is None else np.asarray(valid, bool)
    return points, valid


def _typical_position(pose: dict[str, np.ndarray]) -> np.ndarray:
    size = float(np.median(pose["size"]))
    offset = np.linalg.norm(pose["centre"] - np.median(pose["centre"], axis=0), axis=-1) / size
    return (offset + np.abs(np.log(pose["size"] / size))) / POSITION_SCALE


def shape_distances(points: np.ndarray, photo_points: np.ndarray) -> np.ndarray:
    """Mean landmark distance of each frame to the photo once a similarity is fitted to all 68
    points, over the photo's eye-corner distance: expression (and identity) with the pose removed."""
    z = np.asarray(points, np.float64)
    z = z[..., 0] + 1j * z[..., 1]
    photo = np.asarray(photo_points, np.float64)
    zp = photo[:, 0] + 1j * photo[:, 1]
    centred = z - z.mean(axis=1, keepdims=True)
    target = zp - zp.mean()
    a = (np.conj(centred) * target).sum(axis=1) / np.maximum((np.abs(centred) ** 2).sum(axis=1), 1e-12)
    residual = np.abs(a[:, None] * centred - target).mean(axis=1)
    return residual / max(float(np.linalg.norm(photo[36] - photo[45])), 1e-6)


def expression_costs(points: np.ndarray, valid: np.ndarray | None = None,
                     photo_points: np.ndarray | None = None) -> np.ndarray:
    """How far each frame of (T, 68, 2) ``points`` is from the expression the photo shows (lower is
    better): the same mouth opening and eye opening, the closest shape once the pose is removed
    (FOMM's criterion) and a yaw like the photo's. Without a photo: the most neutral frame (mouth
    closed, eyes open as usual, frontal). ``inf`` for frames without a detected face."""
    points, valid = _check(points, valid)
    costs = np.full(len(points), np.inf)
    if not valid.any():
        return costs
    seen = points[valid]
    mouth = mouth_opening(seen)
    eyes = eye_opening(seen)
    yaw = pose_features(seen)["yaw"]
    if photo_points is None:
        photo_mouth, photo_eyes, photo_yaw = 0.0, float(np.median(eyes)), 0.0
    else:
        photo = np.asarray(photo_points, np.float64)
        photo_mouth, photo_eyes = float(mouth_opening(photo)), float(eye_opening(photo))
        photo_yaw = float(pose_features(photo[None])["yaw"][0])
    cost = MOUTH_WEIGHT * np.abs(mouth - photo_mouth) / MOUTH_SCALE
    cost += EYE_WEIGHT * np.abs(eyes - photo_eyes) / EYE_SCALE
    if photo_points is not None:
        cost += SHAPE_WEIGHT * shape_distances(seen, photo_points) / SHAPE_SCALE
    cost += POSE_WEIGHT * np.abs(yaw - photo_yaw) / POSE_SCALE
    costs[valid] = cost
    return costs


def pose_costs(points: np.ndarray, valid: np.ndarray | None, frame_size: tuple[int, int],
               photo_points: np.ndarray, photo_size: tuple[int, int]) -> np.ndarray:
    """How far each driver frame's head pose is from the photo's (lower is better), as FOMM's
    best-frame search: roll and yaw, and the face's place and size within its frame; plus a
    smaller pull towards the driver's typical head position."""
    points, valid = _check(points, valid)
    costs = np.full(len(points), np.inf)
    if not valid.any():
        return costs
    pose = pose_features(points[valid])
    photo = pose_features(np.asarray(photo_points, np.float64)[None])
    frame = np.asarray(frame_size, np.float64)
    photo_frame = np.asarray(photo_size, np.float64)
    place = np.linalg.norm(pose["centre"] / frame - photo["centre"][0] / photo_frame, axis=-1)
    scale = np.abs(np.log((pose["size"] / frame.max()) / (photo["size"][0] / photo_frame.max())))
    cost = (np.abs(pose["roll"] - photo["roll"][0]) + np.abs(pose["yaw"] - photo["yaw"][0])) / POSE_SCALE
    cost += (place + scale) / POSITION_SCALE
    cost += POSITION_WEIGHT * _typical_position(pose)
    costs[valid] = cost
    return costs


def pick_references(points: np.ndarray, valid: np.ndarray | None = None, frame_size: tuple[int, int] | None = None,
                    photo_points: np.ndarray | None = None, photo_size: tuple[int, int] | None = None) -> References:
    """The pose reference (closest to the photo's pose; the expression reference when the photo
    is not known) and the most neutral expression frame; frame 0 where no face was detected."""
    expression = expression_costs(points, valid, photo_points)
    if len(expression) == 0 or not np.isfinite(expression).any():
        return References(0, 0)
    neutral = int(np.argmin(expression))
    if photo_points is None or frame_size is None or photo_size is None:
        return References(neutral, neutral)
    same = matching_frame(points, valid, frame_size, photo_points, photo_size)
    if same is not None:
        return References(same, neutral)
    return References(int(np.argmin(pose_costs(points, valid, frame_size, photo_points, photo_size))), neutral,
                      usual_pose=True)


def matching_frame(points: np.ndarray, valid: np.ndarray | None, frame_size: tuple[int, int],
                   photo_points: np.ndarray, photo_size: tuple[int, int]) -> int | None:
    """The driver frame whose landmarks match the photo's within ``SAME_POSE_MATCH`` face sizes
    (the closest one; coordinates as shares of each image's longer side), or None."""
    points, valid = _check(points, valid)
    if not valid.any():
        return None
    side, photo_side = float(max(frame_size)), float(max(photo_size))
    photo = np.asarray(photo_points, np.float64)
    face = float(pose_features(photo[None])["size"][0]) / photo_side
    distance = np.linalg.norm(points / side - photo / photo_side, axis=-1).mean(-1)
    distance = np.where(valid, distance / max(face, 1e-6), np.inf)
    best = int(np.argmin(distance))
    return best if distance[best] < SAME_POSE_MATCH else None


def resolve_reference(choice: str | int, points: np.ndarray, valid: np.ndarray | None = None,
                      frame_size: tuple[int, int] | None = None, photo_points: np.ndarray | None = None,
                      photo_size: tuple[int, int] | None = None) -> References:
    """``--reference`` -> the reference frames: ``auto`` picks them, ``first`` is frame 0, a
    number is that frame (for pose and expression both)."""
    choice = parse_reference(choice)
    count = len(points)
    if choice == "auto":
        return pick_references(points, valid, frame_size, photo_points, photo_size)
    if choice == "first":
        return References(0, 0)
    if choice >= count:
        raise UsageError(f"--reference {choice} is past the driver's last frame ({count - 1})")
    return References(int(choice), int(choice))
