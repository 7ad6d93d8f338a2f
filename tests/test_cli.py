"""End to end through the command line, on short clips with tiny weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.io.video import iter_frames, probe_output, probe_video
from animate_cli.landmarks import LandmarkTrack

from conftest import make_batch_people

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_main_job_writes_h264_with_drivers_frames_fps_and_audio(tmp_path, portrait_path, short_driver,
                                                                 tiny_weights):
    out = tmp_path / "out.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 2, "--landmarks", "dlib", "-q")
    assert result.exit_code == 0, result.output
    info, driver = probe_output(out), probe_video(short_driver)
    assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert info["frame_count"] == driver.frame_count == 20
    assert info["fps"] == pytest.approx(driver.fps)
    assert info["has_audio"]
    # Pasted back at the photo's resolution (288x352).
    assert (info["width"], info["height"]) == (288, 352)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_result_moves_with_the_driver(tmp_path, portrait_path, sample_driver, tiny_weights):
    """The mouth region changes over the clip while the background stays the photo."""
    out = tmp_path / "out.mp4"
    result = run(portrait_path, "--drive", sample_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 0, "--landmarks", "dlib", "--size", 144, "-q")
    assert result.exit_code == 0, result.output
    frames = np.stack(list(iter_frames(out))).astype(np.float32)
    assert len(frames) == probe_video(sample_driver).frame_count
    spread = frames.std(axis=0).mean(axis=2)
    h, w = spread.shape
    face = spread[int(0.45 * h):int(0.65 * h), int(0.35 * w):int(0.65 * w)].mean()
    corner = spread[:int(0.1 * h), :int(0.1 * w)].mean()
    assert face > 4 * corner + 1.0


def test_crop_only_no_audio_fps_and_size(tmp_path, portrait_path, short_driver, tiny_weights):
    out = tmp_path / "crop.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 0, "--landmarks", "dlib", "--crop-only", "--no-audio", "--fps", 10,
                 "--size", 64, "-q")
    assert result.exit_code == 0, result.output
    info = probe_output(out)
    assert (info["width"], info["height"]) == (64, 64)
    assert not info["has_audio"]
    assert info["fps"] == pytest.approx(10)
    assert info["frame_count"] == 8  # 0.8 s at 10 fps


def test_warp_renderer_needs_no_weights_and_side_by_side(tmp_path, portrait_path, short_driver, monkeypatch):
    monkeypatch.setenv("ANIMATE_FACE_WEIGHTS", str(tmp_path / "no-such-weights"))
    out = tmp_path / "warp.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--renderer", "warp",
                 "--landmarks", "dlib", "--side-by-side", "--size", 176, "-q")
    assert result.exit_code == 0, result.output
    info = probe_output(out)
    # driver (256x256 scaled to height 176) | result (144x176)
    assert (info["width"], info["height"]) == (176 + 144, 176)
    assert info["frame_count"] == 20


def test_landmarks_saved_once_then_reused(tmp_path, portrait_path, short_driver, tiny_weights):
    npz = tmp_path / "drive.npz"
    result = run("landmarks", short_driver, "-o", npz, "--landmarks", "dlib", "-q")
    assert result.exit_code == 0, result.output
    track = LandmarkTrack.load(npz)
    assert track.points.shape == (20, 68, 2) and track.valid.all()
    assert track.fps == pytest.approx(25)
    out = tmp_path / "from-npz.mp4"
    result = run(portrait_path, "--drive", npz, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 0, "--landmarks", "dlib", "-q")
    assert result.exit_code == 0, result.output
    info = probe_output(out)
    assert info["frame_count"] == 20 and not info["has_audio"]


def test_save_person_then_reuse_it(tmp_path, portrait_path, short_driver, tiny_weights):
    person = tmp_path / "person"
    first = tmp_path / "first.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", first, "--weights", tiny_weights,
                 "--finetune-steps", 3, "--landmarks", "dlib", "--save-person", person, "--crop-only", "-q")
    assert result.exit_code == 0, result.output
    assert {"person.json", "person.safetensors", "photo.png"} <= {p.name for p in person.iterdir()}
    second = tmp_path / "second.mp4"
    result = run("--person", person, "--drive", short_driver, "-o", second, "--weights", tiny_weights,
                 "--landmarks", "dlib", "--crop-only", "-q")
    assert result.exit_code == 0, result.output
    a = np.stack(list(iter_frames(first))).astype(np.float32)
    b = np.stack(list(iter_frames(second))).astype(np.float32)
    assert np.abs(a - b).mean() < 1.0  # the same fine-tuned person renders the same video


def test_several_photos_and_a_folder(tmp_path, portrait_path, short_driver, tiny_weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        shutil.copy(portrait_path, folder / f"p{index}.jpg")
    out = tmp_path / "out.mp4"
    result = run(folder, "--drive", short_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 1, "--landmarks", "dlib", "-q")
    assert result.exit_code == 0, result.output
    assert probe_output(out)["frame_count"] == 20


@pytest.mark.parametrize("count", [8, 32])
def test_eight_and_thirty_two_photos(tmp_path, portrait_path, short_driver, tiny_weights, count):
    out = tmp_path / "out.mp4"
    result = run(*([portrait_path] * count), "--drive", short_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 1, "--landmarks", "dlib", "--crop-only", "-q")
    assert result.exit_code == 0, result.output
    assert probe_output(out)["frame_count"] == 20


def test_more_than_32_photos_is_a_usage_error(tmp_path, portrait_path, short_driver, tiny_weights):
    photos = [portrait_path] * 33
    out = tmp_path / "out.mp4"
    result = run(*photos, "--drive", short_driver, "-o", out, "--weights", tiny_weights)
    assert result.exit_code == 2
    assert "33 photos given" in result.output and "1 to 32" in result.output
    assert not out.exists()


def test_existing_output_is_not_overwritten(tmp_path, portrait_path, short_driver, tiny_weights):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--weights", tiny_weights, "-q")
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert out.read_bytes() == b"precious"


def test_missing_photo_and_missing_driver(tmp_path, portrait_path, short_driver, tiny_weights):
    out = tmp_path / "out.mp4"
    result = run(tmp_path / "nope.jpg", "--drive", short_driver, "-o", out, "--weights", tiny_weights)
    assert result.exit_code == 3 and "nope.jpg" in result.output
    result = run(portrait_path, "--drive", tmp_path / "nope.mp4", "-o", out, "--weights", tiny_weights,
                 "--landmarks", "dlib")
    assert result.exit_code == 3 and "nope.mp4" in result.output
    assert not out.exists()


def test_photo_without_a_face(tmp_path, short_driver, tiny_weights):
    import cv2
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 180, np.uint8))
    out = tmp_path / "out.mp4"
    result = run(blank, "--drive", short_driver, "-o", out, "--weights", tiny_weights, "--landmarks", "dlib")
    assert result.exit_code == 4
    assert "wall.png" in result.output and "no face" in result.output
    assert not out.exists()


def test_weights_folder_missing(tmp_path, portrait_path, short_driver):
    out = tmp_path / "out.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--weights", tmp_path / "nothing-here",
                 "--landmarks", "dlib")
    assert result.exit_code == 5
    assert "nothing-here" in result.output
    assert not out.exists()


def test_batch_five_people_two_bad_then_resume(tmp_path, portrait_path, short_driver, tiny_weights):
    people = make_batch_people(tmp_path / "people", portrait_path)
    out_dir = tmp_path / "out"
    args = ("batch", people, "--drive", short_driver, "--out-dir", out_dir, "--weights", tiny_weights,
            "--finetune-steps", 0, "--landmarks", "dlib", "--crop-only", "-q")
    result = run(*args)
    assert result.exit_code == 6, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["ann.mp4", "bob.mp4", "cat.mp4"]
    assert "broken" in result.output and "wall" in result.output
    stamps = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    result = run(*args[:-1])  # without -q: the results table (-q prints errors only)
    assert result.exit_code == 6
    assert result.output.count("skipped") == 3
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == stamps


def test_exit_codes_are_listed():
    result = run("exit-codes")
    assert result.exit_code == 0
    for code in ("2", "3", "4", "5", "6", "130"):
        assert code in result.output


@pytest.mark.parametrize("command", [[], ["export"]])
def test_person_comes_from_photos_or_a_saved_person_not_both(tmp_path, portrait_path, short_driver, tiny_weights,
                                                             command):
    out = tmp_path / ("out.onnx" if command else "out.mp4")
    drive = [] if command else ["--drive", short_driver]
    result = run(*command, "--weights", tiny_weights, *drive, "-o", out)
    assert result.exit_code == 2 and "give photos of the person" in result.output
    result = run(*command, portrait_path, "--person", tmp_path, "--weights", tiny_weights, *drive, "-o", out)
    assert result.exit_code == 2 and "not both" in result.output
    assert not out.exists()


def test_init_writes_an_untrained_checkpoint_with_its_blend_region(tmp_path):
    from animate_cli.models import TalkingHeadModel

    result = run("init", tmp_path / "w", "--preset", "tiny", "--blend-region", "mouth_border")
    assert result.exit_code == 0, result.output
    config = TalkingHeadModel.from_pretrained(tmp_path / "w").config
    assert (config.guidance, config.blend_region) == ("warp", "mouth_border")
    card = (tmp_path / "w" / "README.md").read_text()
    assert "--blend-region mouth_border" in card and "always the warp's" in card
    result = run("init", tmp_path / "w", "--preset", "tiny")
    assert result.exit_code == 2 and "already holds a checkpoint" in result.output
    result = run("init", tmp_path / "bad", "--preset", "tiny", "--blend-region", "eyes")
    assert result.exit_code == 2 and "blend_region must be one of" in " ".join(result.output.split())
    assert not (tmp_path / "bad").exists()


def test_a_stage_with_nothing_to_do_draws_no_progress_bar():
    """Fine-tuning 0 steps (one photo, by default) showed `fine-tune 0/? 0:00:00`; now nothing."""
    import io

    from rich.console import Console

    from animate_cli.commands.common import RichProgress

    stream = io.StringIO()
    progress = RichProgress(console=Console(file=stream, force_terminal=True, width=100))
    with progress.stage("fine-tune", 0):
        pass
    assert stream.getvalue() == "" and "fine-tune" in progress.seconds   # still timed (benchmarks/stages.py)
    with progress.stage("render", 2) as advance:
        advance(2)
    assert "render" in stream.getvalue() and "2/2" in stream.getvalue()
