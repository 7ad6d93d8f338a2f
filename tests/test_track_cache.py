"""The driver's landmark track cached on disk: a second load of the same video does not track, gives the
same driver, and the preview still shows the driving frames; another video, backend or tracker setting
gets its own entry; a broken or unwritable cache only costs the tracking."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.io.video import probe_video
from animate_cli.landmarks import create_backend
from animate_cli.landmarks.dlib_backend import DlibBackend
from animate_cli.render import pipeline, track_cache
from animate_cli.render.pipeline import load_driver
from conftest import cut_clip


@pytest.fixture(scope="module")
def backend():
    return create_backend("dlib")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty cache folder for this test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(folder))
    return folder


@pytest.fixture()
def tracked(monkeypatch):
    """How many times the driver was tracked."""
    calls = []
    real = pipeline.track_video

    def track(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "track_video", track)
    return calls


def no_tracking(*args, **kwargs):
    raise AssertionError("the driver was tracked again")


def cached_files(cache):
    return sorted((cache / "tracks").glob("track-*.npz"))


def assert_same_driver(a, b):
    np.testing.assert_array_equal(a.track.points, b.track.points)
    np.testing.assert_array_equal(a.track.valid, b.track.valid)
    assert (a.track.fps, a.track.frame_size) == (b.track.fps, b.track.frame_size)


def test_a_second_load_reads_the_track_and_smooths_it_the_same(cache, backend, short_driver, monkeypatch):
    raw, smoothed = load_driver(short_driver, backend, 0.0), load_driver(short_driver, backend, 1.5)
    (path,) = cached_files(cache)  # and no temporary file left
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    monkeypatch.setattr(pipeline, "track_video", no_tracking)
    assert_same_driver(load_driver(short_driver, backend, 0.0), raw)
    again = load_driver(short_driver, backend, 1.5)
    assert_same_driver(again, smoothed)
    assert not np.array_equal(again.track.points, raw.track.points)  # the smoothing is applied at load time
    assert len(again.track) == probe_video(short_driver).frame_count == 20
    # Stored without pickles, with its key.
    with np.load(path, allow_pickle=False) as data:
        assert str(data["key"]) in path.name and data["points"].dtype == np.float32


def test_another_video_is_tracked_again(cache, backend, short_driver, sample_driver, tmp_path, tracked):
    video = tmp_path / "drive.mp4"
    video.write_bytes(short_driver.read_bytes())
    first = load_driver(video, backend, 1.0)
    cut_clip(sample_driver, tmp_path / "other.mp4", 12).replace(video)  # other bytes, the same path
    second = load_driver(video, backend, 1.0)
    assert len(tracked) == 2 and (len(first.track), len(second.track)) == (20, 12)
    assert len(cached_files(cache)) == 2


def test_another_backend_or_tracker_setting_has_its_own_entry(cache, backend, short_driver, tracked, monkeypatch):
    load_driver(short_driver, backend, 1.0)
    load_driver(short_driver, DlibBackend(threshold=0.1), 1.0)
    monkeypatch.setattr(pipeline, "REDETECT_EVERY", 10)
    load_driver(short_driver, backend, 1.0)
    assert len(tracked) == 3 and len(cached_files(cache)) == 3
    load_driver(short_driver, backend, 1.0)
    assert len(tracked) == 3

    class Other(DlibBackend):
        """A backend without an identity (a subclass may compute other landmarks): never cached."""

    load_driver(short_driver, Other(), 1.0)
    load_driver(short_driver, Other(), 1.0)
    assert len(tracked) == 5 and len(cached_files(cache)) == 3
    assert track_cache.track_key(short_driver, Other(), 30) is None


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other key", "other frame count",
                                    "pickled"])
def test_a_broken_cache_file_is_ignored_and_replaced(cache, backend, short_driver, tracked, damage, caplog):
    first = load_driver(short_driver, backend, 1.0)
    (path,) = cached_files(cache)
    data = path.read_bytes()
    with np.load(path, allow_pickle=False) as stored:
        arrays = dict(stored)
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other key":
        np.savez(path, **{**arrays, "key": np.str_("0" * 64)})
    elif damage == "other frame count":
        np.savez(path, **{**arrays, "points": arrays["points"][:-1], "valid": arrays["valid"][:-1]})
    else:
        np.savez(path, **{**arrays, "points": np.array([object()] * 20, dtype=object)})
    with caplog.at_level(logging.INFO, logger="animate_cli.render.track_cache"):
        again = load_driver(short_driver, backend, 1.0)
    assert len(tracked) == 2
    assert "cached landmarks" in caplog.text
    assert_same_driver(again, first)
    assert path.read_bytes() == data  # rewritten whole
    load_driver(short_driver, backend, 1.0)
    assert len(tracked) == 2


def test_an_unwritable_cache_still_loads(backend, short_driver, tmp_path, monkeypatch, tracked, caplog):
    # A regular file where a folder should be: unwritable even as root.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.INFO, logger="animate_cli.render.track_cache"):
        first = load_driver(short_driver, backend, 1.0)
        second = load_driver(short_driver, backend, 1.0)
    assert len(tracked) == 2 and "cannot cache the driver's landmarks" in caplog.text
    assert_same_driver(first, second)


def test_the_preview_shows_the_driving_frames_on_a_cache_hit(cache, portrait_path, short_driver, tmp_path,
                                                            monkeypatch):
    def preview(name):
        sheet = tmp_path / f"{name}.png"
        result = CliRunner().invoke(app, [str(a) for a in (
            portrait_path, "--drive", short_driver, "-o", tmp_path / f"{name}.mp4", "--renderer", "warp",
            "--landmarks", "dlib", "--preview", sheet, "-q")])
        assert result.exit_code == 0, result.output
        with Image.open(sheet) as image:
            return np.asarray(image.convert("RGB"), np.float32)

    uncached = preview("uncached")
    monkeypatch.setattr(pipeline, "track_video", no_tracking)
    cached = preview("cached")
    assert cached.shape == uncached.shape
    # The driver tiles (top row, after the photo's) come from a seek instead of the tracking pass: the
    # same frames, scaled by ffmpeg instead of OpenCV; a landmark drawing on black differs by
    # about 115 levels, this by about 1.
    top = slice(0, cached.shape[0] // 2)
    drivers = slice(-(4 * 240 + 3 * 4), None)  # four square 240 px tiles, 4 px apart, after the photo's
    assert uncached[top, drivers].std() > 10
    assert np.abs(cached[top, drivers] - uncached[top, drivers]).mean() < 5
    np.testing.assert_array_equal(cached[cached.shape[0] // 2:], uncached[uncached.shape[0] // 2:])
