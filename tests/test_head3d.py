"""The 3D head: a turn of the driver's head turns the photo's head, as a head and not as a flat mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.errors import UsageError
from animate_cli.io.images import save_image
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack
from animate_cli.render.head3d import (MEAN_FACE_68, TURN_NOISE_DEGREES, Head3D, RigidMotion, fit_mean_face,
                                      mean_face_seen, outline_shift, weak_perspective)
from animate_cli.render.pipeline import Driver, render_frames


def _yaw(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


@pytest.fixture(scope="module")
def astronaut():
    engine = build_engine(None, landmarks="dlib", device="cpu", renderer="warp")
    image = data.astronaut()
    points = engine.backend.landmarks(image, engine.backend.detect_faces(image)[0].box)
    return engine, image, np.asarray(points, np.float64)


def test_the_mean_face_is_a_face():
    # Symmetric, eye corners one unit apart, the nose tip nearest the camera, the jaw's ends furthest.
    mirrored = MEAN_FACE_68[[16 - i for i in range(17)]] * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, MEAN_FACE_68[:17], atol=1e-4)
    assert abs(np.linalg.norm(MEAN_FACE_68[45, :2] - MEAN_FACE_68[36, :2]) - 1.0) < 0.01
    assert MEAN_FACE_68[:, 2].argmax() == 30
    assert MEAN_FACE_68[[0, 16], 2].max() < MEAN_FACE_68[27:36, 2].min()


def test_weak_perspective_recovers_a_known_pose():
    rotation = _yaw(20.0) @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    points = 80.0 * (MEAN_FACE_68 @ rotation.T)[:, :2] + (200.0, 150.0)
    scale, found, offset = weak_perspective(MEAN_FACE_68, points)
    assert scale == pytest.approx(80.0, rel=1e-6)
    np.testing.assert_allclose(found, rotation, atol=1e-6)
    np.testing.assert_allclose(offset, (200.0, 150.0), atol=1e-6)


def test_the_outline_is_where_a_turned_face_shows_it():
    # Seen from the front the outline is the mean face's; turned, the far side's outline stays near the cheek
    # (a fixed point there would swing behind the face) and the pose is read back from the outline as seen.
    np.testing.assert_allclose(mean_face_seen(np.eye(3)), MEAN_FACE_68, atol=1e-12)
    rotation = _yaw(40.0)
    fixed = (MEAN_FACE_68 @ rotation.T)[:17, 0]
    seen = (mean_face_seen(rotation) @ rotation.T)[:17, 0]
    assert seen[0] < fixed[0] - 0.1                   # the far side (x < 0 turns away at +40 degrees)
    assert np.all(seen[9:] >= fixed[9:] - 1e-9)       # the near side's outline widens
    np.testing.assert_allclose(mean_face_seen(rotation)[17:], MEAN_FACE_68[17:])
    points = 90.0 * (mean_face_seen(rotation) @ rotation.T)[:, :2] + (250.0, 200.0)
    scale, found, offset = fit_mean_face(points)
    assert scale == pytest.approx(90.0, rel=1e-3)
    np.testing.assert_allclose(found, rotation, atol=2e-3)
    # Fitted as fixed points, the same face reads less turned.
    _, fixed_fit, _ = weak_perspective(MEAN_FACE_68[:36], points[:36])
    assert np.degrees(np.arcsin(fixed_fit[0, 2])) < 38.0


def _turned(head: Head3D, degrees: float, scale: float = 1.05, shift=(4.0, -3.0)) -> np.ndarray:
    """The photo's landmarks as its head turned by ``degrees`` of yaw shows them: its points moved rigidly, the
    outline sliding to where the turned face shows it."""
    rigid = RigidMotion(_yaw(degrees), scale, np.asarray(shift, np.float64), head.centre)
    face_scale, face = head.face
    return rigid.project(head.points3d) + outline_shift(face, rigid.rotation @ face, face_scale * scale)


def test_a_still_target_is_no_motion_and_a_turn_is_found(astronaut):
    _, image, points = astronaut
    head = Head3D.from_photo(image.shape[:2], points)
    rigid, expression = head.motion(points)
    np.testing.assert_allclose(rigid.rotation, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(expression, points, atol=1e-6)
    for degrees in (-20.0, 8.0, 25.0):
        turned = _turned(head, degrees)
        rigid, expression = head.motion(turned)
        yaw = np.degrees(np.arctan2(rigid.rotation[0, 2], rigid.rotation[2, 2]))
        # Found, and quieted as a turn of its size is (``quiet_turn``): all but a degree or two.
        a, noise = np.radians(degrees), np.radians(TURN_NOISE_DEGREES)
        assert yaw == pytest.approx(np.degrees(a ** 3 / (a * a + noise * noise)), abs=0.01)
        # What the quieted turn leaves is expression: the face still lands on the targets.
        moved = np.column_stack(head.forward(rigid, expression[:, 0], expression[:, 1]))
        np.testing.assert_allclose(moved, turned, atol=0.25)


def test_a_turn_moves_the_nose_further_than_the_outline(astronaut):
    _, image, points = astronaut
    head = Head3D.from_photo(image.shape[:2], points)
    rigid = RigidMotion(_yaw(15.0), 1.0, np.zeros(2), head.centre)
    x, y = head.forward(rigid, points[:, 0], points[:, 1])
    nose = x[30] - points[30, 0]
    jaw = (x[[0, 16]] - points[[0, 16], 0]).mean()
    assert nose > 1.5 * abs(jaw)
    assert nose > 0.15 * np.ptp(points[:, 0])          # a visible turn: sin(15 deg) of the nose's depth and more
    # Beyond the head, a point at the head's middle depth: the outline moves less than the face.
    side_x, side_y = head.forward(rigid, np.array([points[0, 0] - 40.0]), np.array([points[0, 1]]))
    assert abs(side_x[0] - (points[0, 0] - 40.0)) < 0.5 * nose


def test_the_rendered_head_turns_with_its_face(astronaut, tmp_path):
    engine, image, points = astronaut
    path = tmp_path / "astronaut.png"
    save_image(path, image)
    person = engine.make_person([path], FinetuneConfig(steps=0))
    head = Head3D.from_photo(image.shape[:2], person.photo.points)
    turned = RigidMotion(_yaw(12.0), 1.0, np.zeros(2), head.centre).project(head.points3d)
    targets = np.stack([person.photo.points, turned]).astype(np.float32)
    track = LandmarkTrack(targets, np.ones(2, bool), 25.0, image.shape[1::-1])
    frames = {}
    for model in ("3d", "flat"):
        stream = render_frames(engine.frame_renderer(person), person, Driver(path=None, track=track, video=None),
                               RenderConfig(audio=False, reference="first", head_model=model))
        frames[model] = list(stream.frames)
    # A still frame is the photo with either head.
    for model in ("3d", "flat"):
        assert np.abs(frames[model][0].astype(int) - image.astype(int)).max() <= 1
    # The turned frame's face lands where the target says (dlib finds the nose where it was sent).
    found = engine.backend.landmarks(frames["3d"][1], engine.backend.detect_faces(frames["3d"][1])[0].box)
    assert np.linalg.norm(found[30] - turned[30]) < 0.04 * np.ptp(points[:, 0]) * 3


def test_an_unknown_head_model_is_refused():
    with pytest.raises(UsageError, match="unknown head model"):
        RenderConfig(head_model="sphere")


def _seen(rotation: np.ndarray, scale: float = 100.0, offset=(300.0, 260.0)) -> np.ndarray:
    """The mean face turned by ``rotation`` as a camera sees it (its outline where that view shows it), in
    pixels."""
    return scale * (mean_face_seen(rotation) @ rotation.T)[:, :2] + np.asarray(offset)


def test_small_turns_are_quieted_and_large_ones_kept():
    # A degree of yaw is mostly the landmarks' scatter; 15 degrees is a turn; a roll is never quieted.
    from animate_cli.render.head3d import quiet_turn

    def angle(rotation):
        return np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))

    assert angle(quiet_turn(_yaw(1.0))) < 0.15
    assert 14.0 < angle(quiet_turn(_yaw(15.0))) <= 15.0
    roll = np.array([[np.cos(0.1), -np.sin(0.1), 0.0], [np.sin(0.1), np.cos(0.1), 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(quiet_turn(roll), roll, atol=1e-9)


def test_landmark_scatter_does_not_turn_the_head():
    photo = _seen(np.eye(3))
    head = Head3D.from_photo((600, 600), photo)
    jitter = np.random.default_rng(0).normal(0.0, 0.4, (8, 68, 2))
    for target in photo + jitter:
        rigid, expression = head.motion(target)
        vector = np.degrees(np.abs(cv2.Rodrigues(rigid.rotation)[0].ravel()))
        assert vector[:2].max() < 0.3
        # The face still lands on the targets: the expression holds what the quieted turn left.
        moved = np.column_stack(head.forward(rigid, expression[:, 0], expression[:, 1]))
        assert np.abs(moved - target).max() < 0.05


def _pitch(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


@pytest.mark.parametrize("axis", ["yaw", "pitch"])
def test_a_side_view_photo_turns_as_far_as_its_driver(axis):
    # A 3/4-view photo (35 degrees) driven by a frontal driver's turns or nods: carried over in 2D, the targets
    # read 0.93 of the driver's yaw and 1.12 of its nod; carried over in 3D, all of each.
    from animate_cli.eval.cross import head_pose
    from animate_cli.landmarks import retarget_relative
    from animate_cli.render.head3d import carry_in_3d

    angles = np.linspace(-12.0, 12.0, 9)
    photo = _seen(_yaw(35.0))
    turn = _yaw if axis == "yaw" else _pitch
    driver = np.stack([_seen(turn(a), 80.0, (200.0, 220.0)) for a in [0.0, *angles]])
    flat = retarget_relative(photo, driver, 0)
    turned = carry_in_3d(photo, flat, driver, 0)
    column = 0 if axis == "yaw" else 1

    def slope(targets):
        read = head_pose(targets[1:])[:, column] - head_pose(photo)[column]
        return abs(np.polyfit(angles, read, 1)[0])

    assert abs(slope(flat) - 1.0) > 0.06
    assert 0.95 < slope(turned) < 1.05
    np.testing.assert_allclose(turned[0], flat[0], atol=1e-3)    # the reference frame is the photo


def test_a_driver_seen_as_the_photo_is_keeps_its_2d_motion():
    # The photo and the driver's reference face the same way (self-reenactment): nothing is replaced.
    from animate_cli.landmarks import retarget_relative
    from animate_cli.render.head3d import carry_in_3d

    photo = _seen(_yaw(3.0))
    driver = np.stack([_seen(_yaw(a), 80.0, (200.0, 220.0)) for a in (0.0, 8.0, -8.0)])
    flat = retarget_relative(photo, driver, 0)
    np.testing.assert_array_equal(carry_in_3d(photo, flat, driver, 0), flat)


def test_a_frontal_drivers_turn_and_smile_reach_a_side_view_as_a_side_view_shows_them():
    # The driver turns and nods (a tilted head, the painting's case) and widens its mouth. Carried over in 2D, its
    # turn stays in the expression deltas: the 3/4 face's landmarks leave the shape any turn of the face gives
    # (the near cheek bulged past the outline). Carried over in 3D, the targets are the photo's face turned, its
    # mouth corners moved as far apart as a 3/4 view shows: by the driver's widening times cos(35 degrees).
    from animate_cli.landmarks import retarget_relative
    from animate_cli.render.head3d import carry_in_3d, rotation_from

    photo = _seen(rotation_from(np.radians(35.0), 0.0, np.radians(10.0)))
    smile = np.zeros((68, 3))
    smile[48, 0], smile[54, 0] = -0.06, 0.06
    turns = [rotation_from(np.radians(y), np.radians(p), 0.0) for y, p in [(0, 0), (10, 0), (0, 8), (-8, -6)]]
    driver = np.stack([80.0 * ((mean_face_seen(turn) + change) @ turn.T)[:, :2] + (200.0, 220.0)
                       for change in (0.0, smile) for turn in turns])
    flat = retarget_relative(photo, driver, 0)
    carried = carry_in_3d(photo, flat, driver, 0)

    def off_the_face(targets):
        # The largest distance of a landmark from where the best turned, scaled and moved photo face puts it.
        out = []
        for target in targets:
            scale, rotation, offset = fit_mean_face(target, np.arange(68))
            out.append(np.abs(scale * (mean_face_seen(rotation) @ rotation.T)[:, :2] + offset - target).max())
        return np.array(out)

    assert off_the_face(flat[:4]).max() > 3.0                # pixels, on a face 100 px between the eye corners
    assert off_the_face(carried[:4]).max() < 0.05
    widening = (carried[4:, 54] - carried[4:, 48]) - (carried[:4, 54] - carried[:4, 48])
    expected = 100.0 * 0.12 * np.cos(np.radians(35.0))
    # The turned frames' widening is seen turned too; the level frame's is along the photo's tilted mouth.
    assert np.linalg.norm(widening[0]) == pytest.approx(expected, rel=0.02)
    assert np.all(np.linalg.norm(widening, axis=1) < 1.15 * expected)


def test_a_side_view_turned_towards_profile_keeps_its_far_mouth_corner_inside_its_outline():
    # A 38-degree view (the painting's) driven by a frontal talker who turns 18 degrees either way. The outline is
    # where the face's side meets the background: turned further, the far cheek's outline stays by the cheek and
    # hides the far mouth corner's side of the face as it narrows. Carried as fixed points of the face, the
    # outline swung in over the mouth corner (the lips drawn on the outline).
    from animate_cli.landmarks import retarget_relative
    from animate_cli.render.head3d import carry_in_3d

    def far_gap(points):
        # How far inside the far (right) outline the far mouth corner lies, at its height, in eye-corner distances.
        corner, outline = points[54], points[8:17]
        for upper, lower in zip(outline[:-1], outline[1:]):
            if (upper[1] - corner[1]) * (lower[1] - corner[1]) <= 0:
                t = (corner[1] - upper[1]) / (lower[1] - upper[1])
                return (upper[0] + t * (lower[0] - upper[0]) - corner[0]) / np.linalg.norm(points[45] - points[36])
        raise AssertionError("the mouth corner is beside no outline segment")

    angles = [0.0, -18.0, -9.0, 9.0, 18.0]
    photo = _seen(_yaw(38.0))
    driver = np.stack([_seen(_yaw(a), 80.0, (200.0, 220.0)) for a in angles])
    carried = carry_in_3d(photo, retarget_relative(photo, driver, 0), driver, 0)
    for angle, targets in zip(angles, carried):
        assert far_gap(targets) == pytest.approx(far_gap(_seen(_yaw(38.0 + angle))), abs=0.03)
    assert far_gap(carried[4]) > 0.15


def test_least_squares_and_2x2_solves_for_many_frames_match_numpys_one_at_a_time():
    from animate_cli.render.head3d import _least_squares, _solve_2x2

    rng = np.random.default_rng(5)
    shared = rng.normal(size=(21, 4))
    own = rng.normal(size=(6, 21, 3))
    values = rng.normal(size=(6, 21, 2))
    for frame, solution in enumerate(_least_squares(shared, values)):
        np.testing.assert_allclose(solution, np.linalg.lstsq(shared, values[frame], rcond=None)[0], atol=1e-12)
    for frame, solution in enumerate(_least_squares(own, values)):
        np.testing.assert_allclose(solution, np.linalg.lstsq(own[frame], values[frame], rcond=None)[0], atol=1e-12)
    # A design of rank 2 (its third column the sum of the others): the smallest solution, as lstsq gives.
    flat = own[0].copy()
    flat[:, 2] = flat[:, 0] + flat[:, 1]
    np.testing.assert_allclose(_least_squares(flat, values[:1])[0], np.linalg.lstsq(flat, values[0], rcond=None)[0],
                               atol=1e-12)
    matrices = rng.normal(size=(1000, 2, 2))
    matrices[0] = [[0.0, 1.0], [2.0, 3.0]]         # the pivot in the second row
    matrices[1] = [[1.0, 2.0], [2.0, 4.0]]         # singular
    rhs = rng.normal(size=(1000, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        determinant, solved = _solve_2x2(matrices, rhs)
    np.testing.assert_allclose(determinant, np.linalg.det(matrices), rtol=1e-12, atol=1e-12)
    steady = np.abs(determinant) > 1e-9
    assert not steady[1] and steady.sum() == 999
    np.testing.assert_allclose(solved[steady], np.linalg.solve(matrices[steady], rhs[steady][..., None])[..., 0],
                               rtol=1e-12)


def test_the_mean_face_fits_many_frames_at_once_as_one_at_a_time():
    rng = np.random.default_rng(6)
    frames = np.stack([_seen(_yaw(a), 80.0 + a, (200.0 + a, 220.0)) for a in (-30.0, -5.0, 0.0, 12.0, 40.0)])
    frames += rng.normal(0.0, 0.5, frames.shape)
    scales, rotations, offsets = fit_mean_face(frames)
    for frame, points in enumerate(frames):
        scale, rotation, offset = fit_mean_face(points)
        assert scales[frame] == pytest.approx(scale, rel=1e-12)
        np.testing.assert_allclose(rotations[frame], rotation, atol=1e-12)
        np.testing.assert_allclose(offsets[frame], offset, atol=1e-9)


def test_the_motions_of_many_frames_at_once_are_each_frames_own():
    # ``Head3D.motions`` fits every frame in one pass (stacked least squares, one depth lookup for all points,
    # every point's Newton step at once): each frame gets what it gets alone, whatever the others hold, turned
    # either way as far as the outline's steep depth (a 3/4 view turned 35 degrees further) or not at all.
    head = Head3D.from_photo((600, 600), _seen(_yaw(25.0)))
    rng = np.random.default_rng(7)
    targets = np.stack([_turned(head, degrees, 1.0 + 0.02 * k, (k, -2.0 * k))
                        for k, degrees in enumerate((-30.0, -12.0, 0.0, 2.0, 18.0, 35.0))])
    targets[1:] += rng.normal(0.0, 0.5, targets[1:].shape)
    targets[2, 48:] += 0.4 * (targets[2, 48:] - targets[2, 48:].mean(axis=0))     # the mouth 40 % wider
    rigid, expressions = head.motions(targets)
    assert rigid.rotation.shape == (6, 3, 3) and expressions.shape == (6, 68, 2)
    for frame, (together, target) in enumerate(zip(rigid.frames(), targets)):
        alone, expression = head.motion(target)
        np.testing.assert_allclose(together.rotation, alone.rotation, rtol=0, atol=1e-12)
        assert together.scale == pytest.approx(alone.scale, rel=1e-12)
        np.testing.assert_allclose(together.shift, alone.shift, rtol=0, atol=1e-9)
        np.testing.assert_allclose(expressions[frame], expression, rtol=0, atol=1e-9)
        np.testing.assert_allclose(together.project(head.points3d), rigid.project(head.points3d)[frame], atol=1e-9)
    # In another order, with other neighbours, the same answers.
    order = np.array([5, 2, 0, 4, 1, 3])
    shuffled, shuffled_expressions = head.motions(targets[order])
    np.testing.assert_allclose(shuffled.rotation, rigid.rotation[order], rtol=0, atol=1e-12)
    np.testing.assert_allclose(shuffled_expressions, expressions[order], rtol=0, atol=1e-9)
    empty, none = head.motions(np.zeros((0, 68, 2)))
    assert empty.frames() == () and none.shape == (0, 68, 2)
