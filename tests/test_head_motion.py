"""Whole-head motion, the reference frames and full closure, each stage alone; the full-frame protocol on a tiny clip."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
from skimage import data

from animate_cli.errors import UsageError
from animate_cli.landmarks import create_backend, detect_photo_landmarks, eye_opening, mouth_opening
from animate_cli.landmarks.crop import face_size
from animate_cli.landmarks.reference import (References, expression_costs, matching_frame, parse_reference,
                                             pick_references, resolve_reference)
from animate_cli.landmarks.retarget import about_typical_pose, gap_mapping, retarget_relative
from animate_cli.render.head_motion import (HeadLayers, HeadMotion, fill_from_patches, fill_from_surroundings,
                                            head_similarity, head_weight_map, segment_person)


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def points(astronaut):
    return detect_photo_landmarks(create_backend("dlib"), astronaut)


def _set_mouth(points: np.ndarray, gap: float) -> np.ndarray:
    """The landmarks with the inner lips ``gap`` pixels apart (lower lip and chin moved)."""
    out = points.copy()
    current = np.mean([out[lo, 1] - out[up, 1] for up, lo in ((61, 67), (62, 66), (63, 65))])
    shift = gap - current
    out[[56, 57, 58], 1] += shift
    out[[7, 8, 9], 1] += 0.6 * shift
    # Each inner-lip pair exactly ``gap`` apart (a mean gap of 0 can still leave one pair open).
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        out[lo, 1] = out[up, 1] + gap
    return out


def _set_eyes(points: np.ndarray, gap: float) -> np.ndarray:
    out = points.copy()
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        middle = (out[up, 1] + out[lo, 1]) / 2
        out[up, 1], out[lo, 1] = middle - gap / 2, middle + gap / 2
    return out


# --- the reference frames ----------------------------------------------------------------------

def test_an_open_mouth_first_frame_is_not_the_expression_reference(points):
    """A clip that starts mid-word: a closed-mouth photo takes a closed frame as its reference."""
    closed = _set_mouth(points, 0.0)
    track = np.stack([_set_mouth(points, 18.0), _set_mouth(points, 12.0), closed + 0.3, _set_mouth(points, 9.0)])
    refs = pick_references(track, None, (512, 512), closed, (512, 512))
    assert refs.expression == 2
    costs = expression_costs(track, None, closed)
    assert costs[0] > costs[2] and np.isfinite(costs).all()


def test_blinks_and_undetected_frames_are_never_the_reference(points):
    closed = _set_mouth(points, 0.0)
    blink = _set_eyes(closed, 0.5)
    track = np.stack([blink, closed + 0.2, closed + 0.4, blink])
    valid = np.array([True, False, True, True])
    refs = pick_references(track, valid, (512, 512), closed, (512, 512))
    assert refs.expression == 2
    assert np.isinf(expression_costs(track, valid, closed)[1])


def test_the_pose_reference_is_the_frame_posed_like_the_photo(points):
    """Self-reenactment: the photo is frame 2, so frame 2 is the pose reference."""
    shifted = [points + (dx, 0.0) for dx in (-60.0, -30.0, 0.0, 30.0)]
    refs = pick_references(np.stack(shifted), None, (512, 512), points, (512, 512))
    assert refs.pose == 2


def test_a_photo_that_is_a_driver_frame_is_its_pose_reference_despite_detector_jitter(points):
    """The photo is frame 0 (saved and re-detected: its landmarks a pixel or so off, its yaw proxy changed),
    while the driver spends the rest of the clip a few pixels away: the typical-position pull must not win
    over the frame the photo was taken from (a constant offset for the whole clip otherwise)."""
    rng = np.random.default_rng(0)
    track = np.stack([points] + [points + (4.0, 3.0) + rng.normal(0, 0.3, points.shape) for _ in range(9)])
    photo = points + rng.normal(0, 0.6, points.shape)
    photo[:8] += (1.5, 0.0)   # one side of the jaw: a yaw proxy off by detector noise
    assert pick_references(track, None, (256, 256), photo, (256, 256)).pose == 0
    # Another person's face in the same place (a wider jaw, features closer together) is not that frame.
    other = points.copy()
    centre = points.mean(0)
    other[:17] = centre + 1.15 * (points[:17] - centre)
    other[17:] = centre + 0.85 * (points[17:] - centre)
    assert matching_frame(track, None, (256, 256), other, (256, 256)) is None


def test_another_persons_photo_sits_where_it_is_for_the_drivers_usual_pose(points):
    """The driver spends the clip in one place and nods low and tilted once; that frame is posed most like the
    photo, so it is the pose reference. Measured from it, every other frame would lift the photo's head and
    turn it for the whole clip; about the driver's usual pose the head stays where the photo has it, and moves
    as the driver moves from there."""
    rng = np.random.default_rng(1)
    centre = points.mean(axis=0)
    angle = np.radians(6.0)
    tilt = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    usual = [points + (3.0 * np.sin(i), 0.0) + rng.normal(0, 0.2, points.shape) for i in range(12)]
    low = (points - centre) @ tilt.T + centre + (0.0, 25.0)
    track = np.stack([usual[0], low, *usual[1:]])
    # Someone else (a wider jaw, features closer together), posed like the low frame.
    other = points.copy()
    other[:17] = centre + 1.15 * (points[:17] - centre)
    other[17:] = centre + 0.85 * (points[17:] - centre)
    photo = (other - centre) @ tilt.T + centre + (0.0, 25.0)
    refs = pick_references(track, None, (512, 512), photo, (512, 512))
    assert refs.pose == 1 and refs.usual_pose
    from_reference = retarget_relative(photo, track, refs.pose)
    placed = about_typical_pose(photo, from_reference)
    offset = np.median(from_reference.mean(axis=1), axis=0) - photo.mean(axis=0)
    assert offset[1] < -20.0                                       # lifted by the nod for the whole clip
    assert np.abs(np.median(placed.mean(axis=1), axis=0) - photo.mean(axis=0)).max() < 0.5
    # The driver's own motion is kept: frame to frame, the targets move as far as before (turned with the head).
    np.testing.assert_allclose(np.linalg.norm(np.diff(placed.mean(axis=1), axis=0), axis=1),
                               np.linalg.norm(np.diff(from_reference.mean(axis=1), axis=0), axis=1), atol=0.3)
    # A photo that is a frame of the driver keeps that frame as its reference, not the usual pose.
    assert not pick_references(track, None, (512, 512), usual[3], (512, 512)).usual_pose


def test_reference_choices_parse_and_resolve(points):
    track = np.stack([points, points + 1, points + 2])
    assert parse_reference("AUTO") == "auto" and parse_reference("first") == "first" and parse_reference("7") == 7
    assert resolve_reference("first", track) == References(0, 0)
    assert resolve_reference("2", track) == References(2, 2)
    for bad in ("middle", "-1", "1.5"):
        with pytest.raises(UsageError):
            parse_reference(bad)
    with pytest.raises(UsageError, match="past the driver's last frame"):
        resolve_reference(3, track)


# --- full closure: the photo's own expression is respected -------------------------------------

def test_gap_mapping_closes_fully_and_opens_as_the_driver_does():
    # Closed reference: the photo's gap moves by the driver's change.
    np.testing.assert_allclose(gap_mapping(np.array([0.0, 4.0]), 0.0, 0.0), [0.0, 4.0])
    # Open reference (photo open by 6, driver by 3): closes to 0 at 0, grows by the driver's change above.
    np.testing.assert_allclose(gap_mapping(np.array([0.0, 1.5, 3.0, 5.0]), 3.0, 6.0), [0.0, 3.0, 6.0, 8.0])


def test_an_open_mouth_photo_closes_when_the_driver_closes(points):
    photo = _set_mouth(points, 14.0)                      # smiling with teeth apart
    driver = np.stack([_set_mouth(points, 6.0), _set_mouth(points, 0.0), _set_mouth(points, 12.0)])
    out = retarget_relative(photo, driver, 0, full_closure=True)
    assert mouth_opening(out[0]) == pytest.approx(mouth_opening(photo), abs=1e-3)
    assert mouth_opening(out[1]) < 0.01                   # lips meet
    assert mouth_opening(out[2]) > mouth_opening(photo)  # and open wider as the driver does
    # Without full closure the photo's extra opening stays.
    assert mouth_opening(retarget_relative(photo, driver, 0)[1]) > 0.05


def test_a_closed_mouth_photo_opens_as_wide_as_the_driver(points):
    photo = _set_mouth(points, 0.0)
    driver = np.stack([_set_mouth(points, 0.0), _set_mouth(points, 20.0)])
    out = retarget_relative(photo, driver, 0, full_closure=True)
    assert mouth_opening(out[1]) == pytest.approx(mouth_opening(driver[1]), rel=0.05)


def test_wide_open_eyes_blink_shut(points):
    photo = _set_eyes(points, 12.0)                       # wider than the driver's
    driver = np.stack([_set_eyes(points, 6.0), _set_eyes(points, 0.0)])
    out = retarget_relative(photo, driver, 0, full_closure=True)
    assert eye_opening(out[0]) == pytest.approx(eye_opening(photo), rel=1e-3)
    assert eye_opening(out[1]) < 0.05                     # closed (an open eye is about 0.3)
    assert eye_opening(retarget_relative(photo, driver, 0)[1]) > 0.1   # deltas alone leave them half open


# --- the motion field, the matte and the plate --------------------------------------------------

def _scene(points: np.ndarray, shape=(512, 512)) -> tuple[np.ndarray, np.ndarray]:
    """A textured person on a flat blue background, and its exact matte."""
    rng = np.random.default_rng(0)
    image = np.empty((*shape, 3), np.uint8)
    image[:] = (40, 90, 200)
    matte = np.zeros(shape, np.float32)
    centre = points.mean(axis=0)
    size = float(np.ptp(points, axis=0).max())
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    head = ((xs - centre[0]) / (0.75 * size)) ** 2 + ((ys - centre[1] + 0.2 * size) / (0.95 * size)) ** 2 < 1
    body = (ys > points[8, 1] + 0.4 * size) & (np.abs(xs - centre[0]) < 1.6 * size)
    person = head | body
    matte[person] = 1.0
    texture = rng.integers(60, 255, (*shape, 3), dtype=np.uint8)
    image[person] = texture[person]
    return image, matte


def test_a_driver_translation_moves_the_head_by_the_same_amount_and_leaves_the_background_still(points):
    image, matte = _scene(points)
    layers = HeadLayers.from_photo(image, points, matte=matte)
    shift = np.array([14.0, -9.0])
    target = points + shift
    matrix = head_similarity(points, target)
    np.testing.assert_allclose(matrix, [[1, 0, shift[0]], [0, 1, shift[1]]], atol=1e-6)
    frame = HeadMotion(layers).render(matrix)
    # Head pixels (forehead, cheeks) land exactly shift pixels away.
    for x, y in (points[27] + (0, -30), points[2] + (15, 0), points[14] - (15, 0)):
        x, y = int(round(x)), int(round(y))
        assert np.abs(frame[y - 9, x + 14].astype(int) - image[y, x]).max() <= 2
    # A far background pixel, and the shoulders, do not move.
    assert (frame[5, 5] == image[5, 5]).all()
    low = (int(points[8, 0]), image.shape[0] - 5)
    assert (frame[low[1], low[0]] == image[low[1], low[0]]).all()
    # Where the head was and no longer is, the uncovered background is the background, not the old head.
    x_left = int(round(points[0, 0] - 0.3 * np.ptp(points[:, 0])))
    uncovered = frame[int(points[30, 1]), x_left - 4:x_left + 4].astype(int)
    if matte[int(points[30, 1]), x_left] > 0.5 and layers.weight[int(points[30, 1]), x_left] > 0.99:
        assert np.abs(uncovered - (40, 90, 200)).max() < 40


def test_a_turn_moves_the_outline_less_than_the_face(points):
    from animate_cli.render.head_motion import outline_similarity

    shifted = points + (10.0, 0.0)
    matrix = head_similarity(points, shifted)
    # A pure translation is no turn: the outline follows it fully.
    np.testing.assert_allclose(outline_similarity(matrix, points, shifted), matrix, atol=1e-9)
    # A turn: the nose and the eyes shift sideways, the jaw's ends hardly.
    turned = points.copy()
    turned[27:48] += (8.0, 0.0)
    matrix = head_similarity(points, turned)
    outline = outline_similarity(matrix, points, turned)
    assert 0 < outline[0, 2] < matrix[0, 2]
    np.testing.assert_allclose(outline[:, :2], matrix[:, :2])


def _edge_layers(size: int = 160, fade: float = 10.0) -> HeadLayers:
    """A photo whose head weight rises from 0 at the top edge to 1 over ``fade`` pixels (a still edge)."""
    ys = np.arange(size, dtype=np.float32)[:, None] / fade
    weight = np.repeat(np.clip(ys, 0, 1) ** 2 * (3 - 2 * np.clip(ys, 0, 1)), size, axis=1).astype(np.float32)
    image = np.zeros((size, size, 3), np.uint8)
    return HeadLayers(image=image, matte=np.ones((size, size), np.float32), weight=weight, plate=image,
                      support=(0, 0, size, size))


@pytest.mark.parametrize("shift", [40.0, -40.0])
def test_a_head_moving_far_beside_a_still_edge_is_mapped_back_exactly(shift):
    # A head moving 40 px away from (or into) a still edge that fades in over 10 px: the fixed-point steps alone
    # diverge there and drew hair from the wrong places into the background (a dark blob above a head).
    layers = _edge_layers()
    motion = HeadMotion(layers, grid_step=1)
    matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, shift]])
    roi = (0, 0, 160, 160)
    map_x, map_y = motion.backward_map(matrix, roi)
    weight = cv2.remap(layers.weight, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved_y = map_y + weight * shift
    rows = np.arange(160, dtype=np.float32)[:, None]
    # Every output pixel shows the photo pixel the head's field moves onto it.
    assert np.abs(moved_y - rows).max() < 0.3
    np.testing.assert_allclose(map_x, np.arange(160, dtype=np.float32)[None].repeat(160, 0), atol=1e-3)
    if shift < 0:
        # Moving into the edge the head folds over it: where both a still pixel and the head's own reach an output
        # pixel, the head is in front.
        assert map_y[12, 80] == pytest.approx(52.0, abs=0.3)


def test_a_large_photos_head_far_beside_a_still_edge_is_mapped_back():
    # More nodes to solve than cv2.remap takes in one row (32767): this crashed `eval --cross` on a large painting.
    layers = _edge_layers(size=2400, fade=40.0)
    map_x, map_y = HeadMotion(layers, grid_step=1).backward_map(np.array([[1.0, 0, 0], [0, 1.0, 100.0]]),
                                                                 (0, 0, 2400, 160))
    assert map_y.shape == (160, 2400)
    # Moving away from the edge the head stretches what lies between: the pixel 20 rows down (half-way up the
    # fade, moved by 50) shows 70 rows down.
    assert map_y[70, 1234] == pytest.approx(20.0, abs=0.3)


def test_a_head_moving_down_from_a_top_edge_that_cuts_its_crown_shows_the_crown_not_a_peak(points):
    # The photo's frame cuts the top of the head (a chord of about 60 px); the head moves down by more than the part
    # cut off. A still top edge stretched that chord down to the head, a peak of hair; mirrored past the edge, the
    # hair widened again into a bun. The crown's outline goes on above the edge instead, and closes.
    raised = points - (0.0, 30.0)
    image, matte = _scene(raised)
    size = float(np.ptp(raised, axis=0).max())
    centre = raised.mean(axis=0)
    top_y, half_axes = centre[1] - 0.2 * size, (0.75 * size, 0.95 * size)
    layers = HeadLayers.from_photo(image, raised, matte=matte)

    def true_half_width(y: float) -> float:
        inside = 1.0 - ((y - top_y) / half_axes[1]) ** 2
        return half_axes[0] * np.sqrt(max(inside, 0.0))

    assert layers.above is not None and layers.above.shape[1] == 512
    # The matte above the edge is the head's ellipse continued (5 rows above the edge), nothing above its top.
    row = layers.above[-5]
    width = (row > 0.5).sum()
    assert abs(width - 2 * true_half_width(-5.0)) <= 6
    assert layers.above[:-12].max() < 0.05

    shift = 12.0
    frame = HeadMotion(layers).render(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, shift]]))
    blue = np.abs(frame.astype(int) - (40, 90, 200)).max(axis=2) < 12
    columns = slice(int(centre[0]) - 60, int(centre[0]) + 60)
    # Above the moved crown, the background: no hair stretched from the edge.
    assert blue[1, columns].mean() > 0.97
    # Lower, the moved head as wide as the photo's was there, to a few pixels.
    for y in (8.0, 20.0):
        hair = ~blue[int(y + shift), columns]
        assert abs(hair.sum() - 2 * true_half_width(y)) <= 6


def test_the_head_weight_is_one_on_the_head_and_zero_below_the_neck(points):
    weight = head_weight_map((512, 512), points)
    assert weight[int(points[27, 1]), int(points[27, 0])] == pytest.approx(1.0)
    assert weight[int(points[19, 1]) - 40, int(points[19, 0])] == pytest.approx(1.0)   # hair above the brows
    assert weight[511, int(points[8, 0])] == pytest.approx(0.0)
    assert weight.min() >= 0 and weight.max() <= 1


def test_a_large_photos_head_weight_is_the_per_pixel_one(points, monkeypatch):
    # A 2048 px photo's weight is computed on coarse nodes and enlarged (it is smooth over its fades): it must
    # be the map computed at every pixel, which a 512 px photo still gets.
    import animate_cli.render.head_motion as head_motion

    large = (points + 0.5) * 4.0 - 0.5
    coarse = head_weight_map((2048, 2048), large)
    monkeypatch.setattr(head_motion, "WEIGHT_NODE_SHARE", 0.0)
    per_pixel = head_weight_map((2048, 2048), large)
    assert np.abs(coarse - per_pixel).max() < 1e-3
    assert np.abs(coarse - per_pixel).mean() < 1e-5


def test_the_background_plate_has_no_hole_and_no_person(points):
    image, matte = _scene(points)
    layers = HeadLayers.from_photo(image, points, matte=matte)
    hole = (matte > 0) & (layers.weight > 0.5)
    assert hole.sum() > 1000
    # Inside the filled head region (above the nose, all of whose neighbours are background) the plate is
    # the background colour, not the person's texture or black; lower down it may borrow from the body.
    upper = hole.copy()
    upper[int(points[30, 1]):] = False
    assert upper.sum() > 500
    assert np.abs(layers.plate[upper].astype(int) - (40, 90, 200)).max() <= 3
    assert layers.plate[hole].min() > 0
    # Away from the person the plate is the photo itself.
    assert (layers.plate[:20, :20] == image[:20, :20]).all()


def _flag_plate(points: np.ndarray, depth: float, within: tuple[int, int]) -> list[tuple[np.ndarray, ...]]:
    """A person (``_scene``) in front of red and white stripes 16 px tall (a flag), and its background plate. For each
    row beside the eyes and nose whose place in its stripe lies within ``within`` (away from the stripes' borders):
    (the plate's colour ``depth`` face sizes inside the hole's left edge, the row's own stripe colour, the other)."""
    image, matte = _scene(points)
    red, white = np.array([200, 30, 40]), np.array([240, 240, 240])
    is_red = (np.arange(image.shape[0]) // 16) % 2 == 0
    stripes = np.where(is_red[:, None, None], red, white).astype(np.uint8)
    image = np.where(matte[..., None] > 0, image, np.broadcast_to(stripes, image.shape))
    layers = HeadLayers.from_photo(image, points, matte=matte)
    filled = (layers.plate != image).any(axis=-1)
    inside = max(1, int(round(depth * face_size(points))))
    samples = []
    for y in range(int(points[19, 1]), int(points[33, 1])):
        if within[0] <= y % 16 <= within[1]:
            x = np.flatnonzero(filled[y])[0] + inside
            samples.append((layers.plate[y, x].astype(int), *((red, white) if is_red[y] else (white, red))))
    return samples


def test_the_plate_continues_a_striped_background_just_inside_the_hole(points):
    # A person in front of red and white stripes (a flag): where the moving head uncovers the plate, just inside the
    # hole's edge, each stripe goes on in its own colour; the push-pull fill alone averaged them to pink there.
    samples = _flag_plate(points, 0.03, (4, 11))
    assert len(samples) >= 16 and len({tuple(own) for _, own, _ in samples}) == 2   # red rows and white rows
    for colour, own, other in samples:
        assert np.abs(colour - own).max() <= 25, colour
        assert np.abs(colour - own).sum() < np.abs(colour - other).sum()


def test_the_plate_continues_a_striped_background_deeper_in_from_its_own_patches(points):
    # Deeper into the hole, where Telea's continuation has faded (0.1 face sizes in), a moving head still uncovers
    # the flag's stripes, each in its own colour, taken from the stripes beside it (an exemplar fill); push-pull
    # alone averages them to pink there. Stripes across the hole's edge, as a flag's run behind a head.
    samples = _flag_plate(points, 0.10, (5, 10))
    assert len(samples) >= 12 and len({tuple(own) for _, own, _ in samples}) == 2
    right = sum(int(np.abs(colour - own).max() <= 40 and np.abs(colour - own).sum() < np.abs(colour - other).sum())
                for colour, own, other in samples)
    assert right >= 0.8 * len(samples)


def test_patches_fill_only_the_target_and_only_from_what_is_known():
    # A vertical edge (dark left, light right) with a square hole across it: each side of the hole is filled with its
    # own side's colour, the edge goes on straight through it, and pixels outside the target stay as they were.
    image = np.zeros((60, 60, 3), np.uint8)
    image[:, :30] = (40, 60, 80)
    image[:, 30:] = (220, 200, 180)
    known = np.ones((60, 60), bool)
    known[20:40, 20:40] = False
    image[~known] = (255, 0, 255)             # what the hole holds must never show
    target = ~known
    target[35:40] = False                     # the hole's last rows are not to be filled
    out, reached = fill_from_patches(image, known, target)
    assert reached[20:35, 20:40].all() and not reached[35:40, 20:40].any()
    np.testing.assert_array_equal(out[known], image[known].astype(np.float32))
    np.testing.assert_array_equal(out[35:40, 20:40], image[35:40, 20:40].astype(np.float32))
    np.testing.assert_allclose(out[20:35, 20:29], np.broadcast_to([40, 60, 80], (15, 9, 3)), atol=1)
    np.testing.assert_allclose(out[20:35, 31:40], np.broadcast_to([220, 200, 180], (15, 9, 3)), atol=1)


def test_push_pull_fills_holes_from_their_surroundings():
    image = np.zeros((40, 60, 3), np.float32)
    image[:, :30] = 100.0
    image[:, 30:] = 200.0
    known = np.ones((40, 60), bool)
    known[10:30, 20:40] = False
    filled = fill_from_surroundings(image, known)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[known], image[known])
    assert 100.0 <= filled[~known].min() and filled[~known].max() <= 200.0
    assert filled[20, 21, 0] < filled[20, 38, 0]            # each side leans to its own neighbours


def test_segmentation_finds_the_astronaut_and_not_the_sky(astronaut, points):
    matte = segment_person(astronaut, points)
    assert matte.shape == astronaut.shape[:2] and matte.dtype == np.float32
    assert matte[int(points[30, 1]), int(points[30, 0])] > 0.9      # the nose
    assert matte[int(points[19, 1]) - 25, int(points[19, 0])] > 0.9  # hair above the brow
    assert matte[10, 10] < 0.1 and matte[10, 500] < 0.1           # the corners above the head


def test_segmentation_is_the_same_whatever_ran_before_it(astronaut, points):
    """GrabCut draws from OpenCV's random generator: in a batch, the second photo's matte must not
    depend on the first (unseeded, 0.3 % of the astronaut's pixels flipped between two runs)."""
    import cv2

    first = segment_person(astronaut, points)
    samples = np.random.default_rng(0).random((200, 2)).astype(np.float32)
    cv2.kmeans(samples, 4, None, (cv2.TERM_CRITERIA_MAX_ITER, 5, 0), 3, cv2.KMEANS_RANDOM_CENTERS)
    np.testing.assert_array_equal(segment_person(astronaut, points), first)


def test_a_one_colour_photo_falls_back_to_the_prior_shapes(points):
    flat = np.full((512, 512, 3), 128, np.uint8)
    matte = segment_person(flat, points)
    assert matte[int(points[30, 1]), int(points[30, 0])] > 0.9 and matte[5, 5] < 0.1


# --- the whole pipeline, full frame ---------------------------------------------------------------

@pytest.mark.slow
def test_full_frame_self_reenactment_on_a_tiny_clip(short_driver):
    from animate_cli.jobs import build_engine
    from animate_cli.eval.full_frame import FullFrameConfig, Renderers, average_rows, paired_rows, self_reenactment

    warp = build_engine(landmarks="dlib", renderer="warp")
    config = FullFrameConfig(methods=("frozen", "warp", "warp-crop", "real"), max_frames=12, stride=2)
    rows = self_reenactment([short_driver], Renderers(warp.backend, warp), config)
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"frozen", "warp", "warp-crop", "real"}
    frozen, warp_row = by_method["frozen"], by_method["warp"]
    assert warp_row["frames"] == frozen["frames"] == 6
    for key in ("ssim", "box_ssim", "psnr", "akd", "identity_distance", "perceptual"):
        assert np.isfinite(warp_row[key])
    # The clip moves its mouth and head: following it beats standing still, over the face box, in landmarks
    # and in the face-perceptual distance (cut where the real face is).
    assert warp_row["box_ssim"] > frozen["box_ssim"]
    assert warp_row["akd"] < frozen["akd"]
    assert warp_row["perceptual"] < frozen["perceptual"]
    assert frozen["mouth_slope"] == pytest.approx(0.0, abs=0.05)
    # What the renderers were asked for: the smoothed track's mouth, the same for every method, a little
    # calmer than the real one; unsmoothed, exactly the real one.
    assert len({row["driven_slope"] for row in rows}) == 1 and 0.5 < warp_row["driven_slope"] <= 1.02
    unsmoothed = self_reenactment([short_driver], Renderers(warp.backend, warp),
                                  FullFrameConfig(methods=("frozen",), max_frames=12, stride=2, smoothing=0.0))
    assert unsmoothed[0]["driven_slope"] == pytest.approx(1.0)
    # The real frames against themselves: a perfect picture, and the landmark detector's own scatter,
    # which no output beats.
    real = by_method["real"]
    assert real["ssim"] == pytest.approx(1.0) and real["box_ssim"] == pytest.approx(1.0)
    assert 0 <= real["akd"] < warp_row["akd"]
    mean = average_rows(rows, ["ssim"])
    assert [entry["method"] for entry in mean] == ["frozen", "warp", "warp-crop", "real"]
    (paired,) = paired_rows(rows)
    assert (paired["method"], paired["baseline"], paired["box_ssim_frames"]) == ("warp", "warp-crop", 6)
    assert paired["box_ssim"] == pytest.approx(warp_row["box_ssim"] - by_method["warp-crop"]["box_ssim"], abs=1e-9)


def test_full_frame_scores_outputs_made_elsewhere_and_pairs_with_them(short_driver, tmp_path):
    """--outputs: a video another tool (or an earlier version) made is scored on the same frames, and
    --paired-with pairs the other methods with it; a missing output leaves its row out."""
    import shutil

    from animate_cli.commands.eval import parse_outputs
    from animate_cli.io.video import ffmpeg_exe
    from animate_cli.eval.full_frame import FullFrameConfig, Renderers, paired_rows, self_reenactment

    perfect, blurred, empty, short = (tmp_path / name for name in ("perfect", "blurred", "empty", "short"))
    for folder in (perfect, blurred, empty, short):
        folder.mkdir()
    # A "tool" whose output is the real video itself (the right answer, frame for frame), and one that
    # blurs it (an .mkv: any video extension is found).
    shutil.copy(short_driver, perfect / f"{short_driver.stem}.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_driver), "-vf", "boxblur=4", "-an", "-c:v", "ffv1",
                    str(blurred / f"{short_driver.stem}.mkv")], check=True)
    config = FullFrameConfig(methods=("frozen",), max_frames=12, stride=2,
                             outputs=(("perfect", str(perfect)), ("blurred", str(blurred)), ("missing", str(empty))),
                             paired_with="perfect")
    rows = self_reenactment([short_driver], Renderers(create_backend("dlib"), None), config)
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"frozen", "perfect", "blurred"}
    assert by_method["perfect"]["box_ssim"] == pytest.approx(1.0)
    assert by_method["perfect"]["frames"] == by_method["blurred"]["frames"] == by_method["frozen"]["frames"] == 6
    assert by_method["blurred"]["box_ssim"] < 0.99
    (paired,) = paired_rows(rows, "perfect")
    assert (paired["method"], paired["baseline"], paired["box_ssim_frames"]) == ("blurred", "perfect", 6)
    assert paired["box_ssim"] == pytest.approx(by_method["blurred"]["box_ssim"] - 1.0, abs=1e-9)
    # An output shorter than the frames measured is refused, naming the file.
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_driver), "-frames:v", "5", "-an",
                    str(short / f"{short_driver.stem}.mp4")], check=True)
    with pytest.raises(UsageError, match="fewer than"):
        self_reenactment([short_driver], Renderers(create_backend("dlib"), None),
                         FullFrameConfig(methods=("frozen",), max_frames=12, outputs=(("short", str(short)),)))
    # Names must not clash with a method, folders must exist, pairing needs a method that runs.
    for bad in (dict(outputs=(("warp", str(perfect)),)), dict(outputs=(("x", str(tmp_path / "none")),)),
                dict(paired_with="warp-crop")):
        with pytest.raises(UsageError):
            FullFrameConfig(methods=("frozen",), **bad)
    assert parse_outputs(["old=a/b", " lp = c "]) == (("old", "a/b"), ("lp", "c"))
    with pytest.raises(UsageError, match="NAME=FOLDER"):
        parse_outputs(["just-a-folder"])


def test_paired_rows_compare_the_same_frames_with_their_standard_error():
    from animate_cli.eval.full_frame import paired_rows

    def row(method, frames, box, akd):
        return {"video": "v.mp4", "method": method, "per_frame": {"frame": frames, "box_ssim": box, "akd": akd}}

    rows = [row("frozen", [1, 4, 7], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5]),
            row("warp", [1, 4, 7], [0.8, 0.7, 0.9], [0.010, None, 0.030]),
            row("warp-crop", [1, 4, 7, 10], [0.7, 0.7, 0.7, 0.0], [0.020, 0.015, 0.020, 0.9])]
    (entry,) = paired_rows(rows)
    assert (entry["method"], entry["baseline"]) == ("warp", "warp-crop")
    # Frame 10 only the baseline measured; frame 4 has no face in the output: both left out of AKD.
    assert entry["box_ssim_frames"] == 3 and entry["box_ssim"] == pytest.approx(0.1)
    assert entry["box_ssim_se"] == pytest.approx(np.std([0.1, 0.0, 0.2], ddof=1) / np.sqrt(3))
    assert entry["akd_frames"] == 2 and entry["akd"] == pytest.approx(0.0)
    assert entry["akd_se"] == pytest.approx(0.01)
    # Without a baseline run there is nothing to pair.
    assert paired_rows(rows[:2]) == []


def test_full_frame_tables_show_undefined_values_as_a_dash():
    """A frozen frame's mouth never moves, so its correlation is undefined: shown as –, not "nan"."""
    from animate_cli.commands.eval import _format, _format_paired

    assert _format(float("nan"), 2) == "–" and _format(None, 2) == "–" and _format(0.5, 2) == "0.50"
    assert _format_paired(None, None, 4) == "–" and _format_paired(0.001, 0.0005, 4) == "+0.0010 ± 0.0005"


# --- through the command line ----------------------------------------------------------------------

def test_cli_reference_and_head_motion_options(tmp_path, portrait_path, short_driver):
    from typer.testing import CliRunner

    from animate_cli.cli import app
    from animate_cli.io.video import iter_frames

    runner = CliRunner()
    bad = runner.invoke(app, [str(portrait_path), "--drive", str(short_driver), "-o", str(tmp_path / "bad.mp4"),
                              "--renderer", "warp", "--reference", "middle", "-q"])
    assert bad.exit_code == 2 and "--reference" in bad.output
    assert not (tmp_path / "bad.mp4").exists()
    outputs = {}
    for name, extra in (("head", ["--reference", "auto"]), ("crop", ["--no-head-motion", "--reference", "first"])):
        out = tmp_path / f"{name}.mp4"
        result = runner.invoke(app, [str(portrait_path), "--drive", str(short_driver), "-o", str(out),
                                     "--renderer", "warp", "--landmarks", "dlib", "-q", *extra])
        assert result.exit_code == 0, result.output
        outputs[name] = np.stack(list(iter_frames(out))).astype(np.float32)
    assert outputs["head"].shape == outputs["crop"].shape == (20, 352, 288, 3)
    # Both move the face; they are different motions.
    assert np.abs(outputs["head"] - outputs["crop"]).mean() > 0.1


@pytest.mark.slow
def test_eval_full_frame_command_writes_tables_and_json(tmp_path, short_driver, portrait_path):
    import json

    from typer.testing import CliRunner

    from animate_cli.cli import app

    report = tmp_path / "full.json"
    result = CliRunner().invoke(app, ["eval", str(short_driver), "--full-frame", "--methods", "frozen,warp",
                                      "--max-frames", "10", "--stride", "3", "--photo", str(portrait_path),
                                      "--json", str(report), "-q"])
    assert result.exit_code == 0, result.output
    assert "full-frame self-reenactment" in result.output
    document = json.loads(report.read_text())
    assert {row["method"] for row in document["self_reenactment"]} == {"frozen", "warp"}
    assert [entry["method"] for entry in document["self_reenactment_mean"]] == ["frozen", "warp"]
    # The sample clip opens its mouth after its start: it is cut there and drives the photo.
    (row,) = document["mouth_open_cross"]
    assert row["method"] == "warp" and row["start"] >= 1 and row["frames"] >= 1
    bad = CliRunner().invoke(app, ["eval", str(short_driver), "--full-frame", "--methods", "frozen,nope", "-q"])
    assert bad.exit_code == 2 and "nope" in bad.output
