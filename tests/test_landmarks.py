"""Landmarks: dlib backend on a real face, tracking, gap filling, smoothing, retargeting, drawing,
track files and the backend registry (FAN is checked without its weights)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from animate_cli.errors import InputError, NoFaceError, UsageError
from animate_cli.landmarks import (LANDMARK_GROUPS, FaceDetection, FaceTracker, LandmarkBackend,
                                   LandmarkTrack, available_backends, create_backend,
                                   detect_photo_landmarks, draw_landmark_image, draw_landmark_images,
                                   eye_opening, fill_gaps, mouth_opening, retarget_absolute,
                                   retarget_relative, smooth_series, smooth_track, track_video)
from animate_cli.landmarks import fan_backend


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def dlib_backend():
    return create_backend("dlib")


@pytest.fixture(scope="module")
def astronaut_points(dlib_backend, astronaut) -> np.ndarray:
    return detect_photo_landmarks(dlib_backend, astronaut)


# --- dlib on a real photo ---------------------------------------------------------------------

def test_dlib_finds_the_astronauts_face_and_68_points_inside_it(dlib_backend, astronaut, astronaut_points):
    faces = dlib_backend.detect_faces(astronaut)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    # The face is at about (175..265, 76..166) in the 512 px photo.
    assert 160 < x0 < 190 and 250 < x1 < 280 and 65 < y0 < 95 and 155 < y1 < 185
    points = astronaut_points
    assert points.shape == (68, 2) and points.dtype == np.float32
    margin = 0.15 * (x1 - x0)
    assert (points[:, 0] > x0 - margin).all() and (points[:, 0] < x1 + margin).all()
    assert (points[:, 1] > y0 - margin).all() and (points[:, 1] < y1 + margin).all()
    # iBUG order: the right eye (36-41) is left of the left eye in the image, the nose tip
    # (30) between them, the mouth (48-67) below the nose.
    assert points[36:42, 0].mean() < points[30, 0] < points[42:48, 0].mean()
    assert points[48:68, 1].mean() > points[30, 1] > points[36:48, 1].mean()


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_raises_with_the_path(dlib_backend, kind):
    rng = np.random.default_rng(0)
    image = (np.zeros((256, 256, 3), np.uint8) if kind == "blank"
             else rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError) as caught:
        detect_photo_landmarks(dlib_backend, image, path=f"photos/{kind}.png")
    assert str(caught.value) == f"photos/{kind}.png: no face found"
    assert caught.value.exit_code == 4


def test_face_index_and_size_errors(dlib_backend, astronaut):
    with pytest.raises(NoFaceError, match=r"^me.jpg: face 1 not found; the photo has 1 face$"):
        detect_photo_landmarks(dlib_backend, astronaut, face_index=1, path="me.jpg")
    with pytest.raises(NoFaceError, match=r"face is too small \(9\dpx; at least 200px is needed\)"):
        detect_photo_landmarks(dlib_backend, astronaut, min_face_px=200)


# --- tracking ---------------------------------------------------------------------------------

def test_track_video_follows_a_shifting_face_and_fills_blank_frames(dlib_backend, astronaut):
    step = np.array([2, 1])  # px per frame (x, y)
    blank = {4, 9, 10}
    frames = [np.zeros_like(astronaut) if t in blank
              else np.roll(astronaut, (t * step[1], t * step[0]), axis=(0, 1)) for t in range(20)]
    advanced = []
    track = track_video(dlib_backend, iter(frames), fps=25.0, progress=advanced.append)
    assert len(track) == 20 and sum(advanced) == 20
    assert track.frame_size == (512, 512) and track.fps == 25.0
    assert [t for t in range(20) if not track.valid[t]] == sorted(blank)
    # Tracked points follow the shift: each frame is the first one moved by t * step.
    for t in range(20):
        if t not in blank:
            offset = (track.points[t] - track.points[0]).mean(axis=0)
            assert np.abs(offset - t * step).max() < 1.5, (t, offset)
            assert np.abs(track.points[t] - track.points[0] - t * step).max() < 5
    # Filled frames lie on the line between their valid neighbours.
    np.testing.assert_allclose(track.points[4], (track.points[3] + track.points[5]) / 2, atol=1e-4)
    gap = track.points[11] - track.points[8]
    np.testing.assert_allclose(track.points[9], track.points[8] + gap / 3, atol=1e-4)
    np.testing.assert_allclose(track.points[10], track.points[8] + 2 * gap / 3, atol=1e-4)


def test_track_video_without_any_face(dlib_backend):
    frames = [np.zeros((128, 128, 3), np.uint8)] * 3
    with pytest.raises(NoFaceError, match=r"^drive.mp4: no face in any frame$"):
        track_video(dlib_backend, frames, fps=30.0, path="drive.mp4")


def test_fill_gaps_interpolates_and_holds_the_ends():
    points = np.zeros((6, 68, 2), np.float32)
    points[1], points[4] = 10.0, 40.0
    points[[0, 2, 3, 5]] = np.nan  # whatever a writer left in missing frames
    valid = np.array([False, True, False, False, True, False])
    filled = fill_gaps(LandmarkTrack(points, valid, 30.0, (64, 64)))
    np.testing.assert_allclose(filled.points[:, 0, 0], [10, 10, 20, 30, 40, 40], atol=1e-5)
    np.testing.assert_array_equal(filled.valid, valid)
    with pytest.raises(NoFaceError, match="no face in any frame"):
        fill_gaps(LandmarkTrack(np.zeros((3, 68, 2)), np.zeros(3, bool), 30.0, (64, 64)))


TEMPLATE = np.stack([np.linspace(0, 1, 68), (np.arange(68) % 7) / 6], axis=1)


class ScriptedBackend(LandmarkBackend):
    """Frames carry their index in pixel (0, 0); each index has a scripted list of face boxes."""

    name = "scripted"

    def __init__(self, script: list[list[tuple[float, float, float, float]]]):
        self.script = script
        self.full_detections = 0

    def _faces(self, image):
        return [FaceDetection(box, 1.0) for box in self.script[int(image[0, 0, 0])]]

    def detect_faces(self, image, min_face_px=None):
        self.full_detections += 1
        return sorted(self._faces(image), key=lambda f: -f.area)

    def detect_faces_near(self, image, box):
        return [f for f in self._faces(image)
                if f.box[0] < box[2] and box[0] < f.box[2] and f.box[1] < box[3] and box[1] < f.box[3]]

    def box_from_landmarks(self, points):
        lo, hi = points.min(axis=0), points.max(axis=0)
        return (*lo, *hi)

    def landmarks(self, image, box):
        # Like a real predictor, the points land on the face that the box covers.
        from animate_cli.landmarks import box_iou
        face = max(self._faces(image), key=lambda f: box_iou(f.box, box))
        x0, y0, x1, y1 = face.box
        return (TEMPLATE * [x1 - x0, y1 - y0] + [x0, y0]).astype(np.float32)


def test_tracker_follows_the_same_person_among_several_faces():
    a = (20.0, 20.0, 60.0, 60.0)        # the tracked person, smaller
    b = (120.0, 10.0, 190.0, 80.0)      # a larger face that appears later
    script = [[a], [a, b], [(22.0, 20.0, 62.0, 60.0), b], [b], [(24.0, 21.0, 64.0, 61.0), b],
              [b, (26.0, 21.0, 66.0, 61.0)]]
    frames = [np.full((100, 200, 3), t, np.uint8) for t in range(len(script))]
    backend = ScriptedBackend(script)
    tracker = FaceTracker(backend, redetect_every=30)
    results = [tracker.update(frame) for frame in frames]
    # Frame 3: the person is gone -> missing (not switched to the other face).
    assert results[3] is None
    for t in (0, 1, 2, 4, 5):
        x0 = results[t][:, 0].min()
        assert x0 < 100, f"frame {t} switched to the other face"
    # Full-frame search only at the start, after the loss (frame 3) and to find it again (4).
    assert backend.full_detections == 3



class ShrinkingBackend(ScriptedBackend):
    """A predictor whose points fill only 90 % of the box it is given: fitted in a box made from the
    previous frame's points, the face shrinks a little more every frame (plausible each time)."""

    def landmarks(self, image, box):
        x0, y0, x1, y1 = box
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, 0.9 * (x1 - x0), 0.9 * (y1 - y0)
        return (TEMPLATE * [w, h] + [cx - w / 2, cy - h / 2]).astype(np.float32)


def test_tracker_does_not_drift_off_a_face_the_detector_still_sees():
    face = (40.0, 40.0, 140.0, 140.0)
    frames = [np.full((200, 200, 3), t, np.uint8) for t in range(12)]
    tracker = FaceTracker(ShrinkingBackend([[face]] * len(frames)), redetect_every=30)
    sizes = [float(np.ptp(tracker.update(frame), axis=0).max()) for frame in frames]
    # Fitted in the previous points' box, frame 11 would be 0.9 ** 12 = 28 % of the face; checked
    # against the detector's box, the drift stays within the tolerance (one 10 % step).
    assert min(sizes) >= 0.9 * 0.9 * 100 - 1e-3, sizes

# --- track files --------------------------------------------------------------------------------

def test_track_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    valid = [True, False, True, True, False]
    track = LandmarkTrack(rng.uniform(0, 300, (5, 68, 2)), valid, 29.97, (640, 360))
    path = tmp_path / "drive.npz"
    track.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["format_version", "fps", "frame_size", "points", "valid"]
        assert int(data["format_version"]) == 1
    loaded = LandmarkTrack.load(path)
    np.testing.assert_array_equal(loaded.points, track.points)
    np.testing.assert_array_equal(loaded.valid, track.valid)
    assert loaded.fps == pytest.approx(29.97) and loaded.frame_size == (640, 360) and len(loaded) == 5


def test_bad_track_files_raise_input_error(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(InputError) as caught:
        LandmarkTrack.load(corrupt)
    assert str(caught.value).startswith(f"{corrupt}: unreadable landmark track")
    assert "\n" not in str(caught.value)

    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, points=np.zeros((4, 5, 2)), valid=np.ones(4, bool), fps=30.0, frame_size=[64, 64])
    with pytest.raises(InputError, match=r"shape.npz: invalid landmark track: points must have shape"):
        LandmarkTrack.load(wrong_shape)

    missing_key = tmp_path / "keys.npz"
    np.savez(missing_key, points=np.zeros((4, 68, 2)))
    with pytest.raises(InputError, match=r"missing fps, frame_size, valid"):
        LandmarkTrack.load(missing_key)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, points=np.array([object()] * 3), valid=np.ones(3, bool), fps=30.0, frame_size=[1, 1])
    with pytest.raises(InputError, match="unreadable landmark track"):
        LandmarkTrack.load(pickled)

    with pytest.raises(InputError, match="landmark file not found"):
        LandmarkTrack.load(tmp_path / "absent.npz")


def test_track_validates_shapes():
    with pytest.raises(ValueError, match=r"\(T, 68, 2\)"):
        LandmarkTrack(np.zeros((3, 67, 2)), np.ones(3, bool), 30.0, (10, 10))
    with pytest.raises(ValueError, match="valid must have shape"):
        LandmarkTrack(np.zeros((3, 68, 2)), np.ones(2, bool), 30.0, (10, 10))


# --- smoothing --------------------------------------------------------------------------------

def _jitter(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=-1).mean())


def test_smoothing_removes_jitter_of_a_still_face(astronaut_points):
    rng = np.random.default_rng(0)
    # 0.5 px on this 93 px face: about dlib's frame-to-frame jitter.
    noisy = astronaut_points[None] + rng.normal(0, 0.5, (90, 68, 2))
    track = LandmarkTrack(noisy, np.ones(90, bool), 30.0, (512, 512))
    smoothed = smooth_track(track, 1.0)
    assert _jitter(noisy) / _jitter(smoothed.points) > 3.0
    assert np.sqrt(((smoothed.points - astronaut_points) ** 2).mean()) < 0.3
    # Stronger smoothing smooths more; 0 changes nothing.
    assert _jitter(smooth_track(track, 3.0).points) < _jitter(smoothed.points)
    np.testing.assert_array_equal(smooth_track(track, 0.0).points, track.points)
    assert smoothed.valid.all() and smoothed.fps == 30.0


def test_smoothing_keeps_steady_motion_without_lag(astronaut_points):
    count = 60
    moving = astronaut_points[None] + np.linspace(0, 90, count)[:, None, None] * np.array([1.0, 0.5])
    smoothed = smooth_track(LandmarkTrack(moving, np.ones(count, bool), 30.0, (512, 512)), 1.0).points
    np.testing.assert_allclose(smoothed[[0, -1]], moving[[0, -1]], atol=0.01)
    np.testing.assert_allclose(smoothed, moving, atol=0.01)


def test_smoothing_keeps_speech_sized_motion():
    # A 4 Hz mouth-like oscillation of 10% of the scale survives with most of its range.
    t = np.arange(120) / 30.0
    values = (0.1 * 200 * np.sin(2 * np.pi * 4 * t))[:, None]
    smoothed = smooth_series(values, 1.0, fps=30.0, scale=200.0)
    assert smoothed.shape == values.shape and smoothed.dtype == values.dtype
    assert np.ptp(smoothed[15:-15]) > 0.85 * np.ptp(values[15:-15])
    with pytest.raises(ValueError, match="strength must be >= 0"):
        smooth_series(values, -1.0)


# --- retargeting --------------------------------------------------------------------------------

def _open_mouth(points: np.ndarray, amount: float) -> np.ndarray:
    opened = points.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += amount
    opened[[6, 7, 8, 9, 10], 1] += amount * 0.6
    return opened


def _similarity(points: np.ndarray, angle: float, scale: float, shift, center=None) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    center = points.mean(axis=0) if center is None else center
    return ((points - center) @ (scale * np.array([[c, s], [-s, c]])) + center + shift).astype(np.float32)


def test_reference_frame_gives_the_source_exactly(astronaut_points):
    source = astronaut_points * 1.4 + 30
    driver = np.stack([_similarity(astronaut_points, 0.1 * t, 1 + 0.05 * t, (3 * t, 0)) for t in range(4)])
    out = retarget_relative(source, driver)
    assert out.shape == (4, 68, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], source.astype(np.float32))
    np.testing.assert_array_equal(retarget_relative(source, driver, reference_index=2)[2],
                                  source.astype(np.float32))


def test_driver_translation_moves_the_source_by_the_scaled_amount(astronaut_points):
    source = astronaut_points * 2.0 + np.array([50.0, 20.0])
    driver = np.stack([astronaut_points, astronaut_points + np.array([6.0, -4.0])])
    out = retarget_relative(source, driver)
    np.testing.assert_allclose(out[1] - source, np.broadcast_to([12.0, -8.0], (68, 2)), atol=1e-3)


def test_driver_rotation_and_scale_are_applied_around_the_source_face(astronaut_points):
    source = astronaut_points * 1.5 + 40
    driver = np.stack([astronaut_points, _similarity(astronaut_points, 0.2, 1.1, (0, 0))])
    out = retarget_relative(source, driver)
    np.testing.assert_allclose(out[1], _similarity(source, 0.2, 1.1, (0, 0)), atol=1e-2)


def test_driver_face_shape_does_not_leak(astronaut_points):
    source = astronaut_points * 1.3 + 25
    narrow = astronaut_points.copy()
    # Another driver: the same size and pose, but a wider mouth and rounder eyes.
    wide = astronaut_points.copy()
    mouth_center = wide[48:68].mean(axis=0)
    wide[48:68, 0] = mouth_center[0] + (wide[48:68, 0] - mouth_center[0]) * 1.3
    wide[[37, 38, 43, 44], 1] -= 2.0
    center = astronaut_points.mean(axis=0)
    motion = lambda p: _similarity(_open_mouth(p, 12.0), 0.05, 1.05, (8, 3), center)  # noqa: E731
    out_narrow = retarget_relative(source, np.stack([narrow, motion(narrow)]))
    out_wide = retarget_relative(source, np.stack([wide, motion(wide)]))
    np.testing.assert_allclose(out_wide, out_narrow, atol=1e-3)
    # Absolute mode, in contrast, carries the driver's shape.
    absolute_gap = retarget_absolute(source, np.stack([wide])) - retarget_absolute(source, np.stack([narrow]))
    assert np.abs(absolute_gap).max() > 5


def test_mouth_opening_transfers(astronaut_points):
    source = astronaut_points * 1.7 - 10
    driver = np.stack([astronaut_points, _open_mouth(astronaut_points, 10.0)])
    out = retarget_relative(source, driver)
    driver_change = mouth_opening(driver[1]) - mouth_opening(driver[0])
    assert driver_change > 0.1
    assert mouth_opening(out[1]) - mouth_opening(source) == pytest.approx(driver_change, rel=0.02)
    assert mouth_opening(out).shape == (2,)
    # Eyes untouched by a mouth movement.
    assert eye_opening(out[1]) == pytest.approx(eye_opening(source), abs=1e-3)


def test_eye_opening_measures_the_lids(astronaut_points):
    closed = astronaut_points.copy()
    for first in (36, 42):
        closed[[first + 1, first + 2]] = closed[[first + 5, first + 4]]
    assert eye_opening(closed) == pytest.approx(0.0, abs=1e-6)
    assert 0.1 < eye_opening(astronaut_points) < 0.5


def test_retarget_absolute_matches_the_first_face_box(astronaut_points):
    source = astronaut_points * 2 + 100
    driver = np.stack([astronaut_points, astronaut_points + 5])
    out = retarget_absolute(source, driver)
    np.testing.assert_allclose(out[0], source, atol=1e-3)
    np.testing.assert_allclose(out[1] - out[0], 10.0, atol=1e-3)


# --- drawing ----------------------------------------------------------------------------------

def test_landmark_image_has_group_colours_inside_the_face(astronaut_points):
    size = 256
    lo, hi = astronaut_points.min(axis=0), astronaut_points.max(axis=0)
    points = (astronaut_points - lo) / (hi - lo).max() * 160 + 48
    image = draw_landmark_image(points, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    for group in LANDMARK_GROUPS:
        assert group.color in colours, group.name
    assert len({g.color for g in LANDMARK_GROUPS}) == len(LANDMARK_GROUPS) == 9
    # Nothing lit outside the points' hull, grown by the line width.
    hull = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    hull = cv2.dilate(hull, np.ones((7, 7), np.uint8))
    assert image[hull == 0].max() == 0
    assert image[hull == 1].max() == 255


def test_line_thickness_scales_with_size(astronaut_points):
    def lit_width(size: int) -> float:
        lo, hi = astronaut_points.min(axis=0), astronaut_points.max(axis=0)
        points = (astronaut_points - lo) / (hi - lo).max() * size * 0.6 + size * 0.2
        image = draw_landmark_image(points, size)
        return (image.max(axis=2) > 127).sum() / size  # lit pixels per unit of line length

    widths = [lit_width(s) for s in (64, 128, 256)]
    assert widths[0] < widths[1] < widths[2]
    batch = draw_landmark_images(np.stack([astronaut_points * 0.25] * 2), 128)
    assert batch.shape == (2, 128, 128, 3)
    np.testing.assert_array_equal(batch[0], draw_landmark_image(astronaut_points * 0.25, 128))


# --- registry and FAN (no weights here) ---------------------------------------------------------

def test_registry_names_and_unknown_name():
    names = available_backends()
    assert names[0] == "auto" and {"dlib", "fan"} <= set(names)
    expected = r"unknown landmark backend 'mediapipe'; choose one of: auto, dlib, fan$"
    with pytest.raises(UsageError, match=expected):
        create_backend("mediapipe")


def _fill_cache(hub_dir, names):
    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in names:
        (hub_dir / "checkpoints" / name).write_bytes(b"weights")


def test_auto_uses_fan_only_when_its_weights_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub"
    assert fan_backend.torch_hub_dir() == hub
    assert create_backend("auto").name == "dlib"
    # FAN weights without a detector's weights are not enough; an empty file is a failed download.
    _fill_cache(hub, [fan_backend.FAN_2D_WEIGHTS])
    (hub / "checkpoints" / "s3fd-619a316812.pth").write_bytes(b"")
    assert not fan_backend.fan_weights_cached()
    _fill_cache(hub, ["blazeface.pth", "anchors.npy"])
    assert fan_backend.cached_fan_detector() == "blazeface"
    _fill_cache(hub, ["s3fd-619a316812.pth"])
    backend = create_backend("auto")
    assert backend.name == "fan" and backend.face_detector == "sfd"


def test_auto_downloads_fan_only_on_a_gpu_with_the_host_reachable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(fan_backend, "fan_weights_downloadable", lambda timeout=2.0: True)
    assert create_backend("auto", device="cpu").name == "dlib"
    assert create_backend("auto", device="cuda").name == "fan"
    monkeypatch.setattr(fan_backend, "fan_weights_downloadable", lambda timeout=2.0: False)
    assert create_backend("auto", device="cuda").name == "dlib"


def test_cache_file_names_match_face_alignment():
    import os
    from urllib.parse import urlparse

    from face_alignment import api
    from face_alignment.detection.blazeface import blazeface_detector
    from face_alignment.detection.sfd import sfd_detector

    def name(url: str) -> str:
        return os.path.basename(urlparse(url).path)

    assert name(api.models_urls["2DFAN-4"]) == fan_backend.FAN_2D_WEIGHTS
    assert (name(sfd_detector.models_urls["s3fd"]),) == fan_backend.DETECTOR_WEIGHTS["sfd"]
    blazeface_urls = blazeface_detector.models_urls
    assert (name(blazeface_urls["blazeface_weights"]), name(blazeface_urls["blazeface_anchors"])) == \
        fan_backend.DETECTOR_WEIGHTS["blazeface"]


class _StubDetector:
    reference_scale = 195

    def detect_from_image(self, image):
        # Two faces, the smaller first, as face-alignment's [x0, y0, x1, y1, score] rows.
        return [np.array([10, 10, 40, 40, 0.9]), np.array([50, 20, 150, 120, 0.99])]


def _untrained_face_alignment():
    import torch
    from face_alignment import FaceAlignment, LandmarksType
    from face_alignment.models import FAN

    torch.manual_seed(0)
    model = FaceAlignment.__new__(FaceAlignment)  # skips the weight download
    model.device, model.dtype, model.flip_input, model.max_batch_size = "cpu", torch.float32, True, 1
    model.landmarks_type, model.verbose = LandmarksType.TWO_D, False
    model.face_alignment_net = FAN(1).eval()
    model.face_detector = _StubDetector()
    return model


def test_fan_backend_against_face_alignment_api(astronaut, monkeypatch):
    from face_alignment import utils as fa_utils

    # face-alignment's heatmap decoding is numba-compiled on first call (~30 s): run it as Python.
    for name in ("_get_preds_fromhm", "transform_np"):
        monkeypatch.setattr(fa_utils, name, getattr(fa_utils, name).py_func)
    model = _untrained_face_alignment()
    backend = fan_backend.FanBackend(device="cpu", face_detector="sfd", batch_size=2, model=model)
    faces = backend.detect_faces(astronaut)
    assert [f.box for f in faces] == [(50.0, 20.0, 150.0, 120.0), (10.0, 10.0, 40.0, 40.0)]
    boxes = [(170.0, 70.0, 270.0, 170.0), (150.0, 60.0, 290.0, 200.0)]
    # face-alignment's own call (both faces of one image in one pass) is the reference.
    model.max_batch_size = 2
    reference = np.stack(model.get_landmarks_from_image(astronaut,
                                                        detected_faces=[np.array(b) for b in boxes]))
    single = backend.landmarks(astronaut, boxes[1])
    assert single.shape == (68, 2) and single.dtype == np.float32
    np.testing.assert_allclose(single, reference[1], atol=1e-3)
    # The batched pass over several images gives the same points.
    batched = backend.landmarks_batch([astronaut, astronaut.copy()], boxes)
    np.testing.assert_allclose(batched, reference, atol=1e-3)


def test_fan_without_weights_is_a_weights_error(tmp_path, monkeypatch):
    from animate_cli.errors import WeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backend = fan_backend.FanBackend(device="cpu", face_detector="sfd")

    class Offline:
        def __init__(self, landmarks_type, device="cuda", face_detector="sfd", flip_input=True,
                     compile=True, max_batch_size=1):
            raise OSError("network is unreachable")

    import face_alignment
    monkeypatch.setattr(face_alignment, "FaceAlignment", Offline)
    with pytest.raises(WeightsError, match="face-alignment weights unavailable"):
        backend.detect_faces(np.zeros((32, 32, 3), np.uint8))


def test_relative_motion_never_crosses_lips_or_lids():
    """A driver that starts with an open mouth and closes it must not push the photo's lips through each other."""
    from animate_cli.landmarks.retarget import FACING_PAIRS

    rng = np.random.default_rng(0)
    source = np.zeros((68, 2), np.float32)
    source[:, 0] = rng.uniform(40, 60, 68)
    source[:, 1] = np.linspace(20, 80, 68)
    source[27:31, 1] = [30, 35, 40, 45]
    source[57] = (50, 85)
    for upper, lower in FACING_PAIRS:           # closed: partners on top of each other
        source[lower] = source[upper]
    driver = np.stack([source, source]).astype(np.float32)
    for upper, lower in FACING_PAIRS:           # reference frame open, second frame closed
        driver[0, lower, 1] += 6
    result = retarget_relative(source, driver)
    down = result[:, 57] - result[:, 27:31].mean(axis=1)
    gaps = ((result[:, FACING_PAIRS[:, 1]] - result[:, FACING_PAIRS[:, 0]]) * down[:, None]).sum(-1)
    assert (gaps >= -1e-4).all()
    np.testing.assert_allclose(result[0], source, atol=1e-5)
