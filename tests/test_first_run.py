"""A first run that respects the user's time: bad inputs fail before slow work, a quiet terminal, a preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from animate_cli.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def slow_work_spy(monkeypatch):
    """Records whether fine-tuning or driver tracking started."""
    import animate_cli.jobs as jobs
    import animate_cli.render.pipeline as pipeline

    called = []
    real_finetune, real_track = jobs.finetune_person, pipeline.track_video

    def finetune(*args, **kwargs):
        called.append("fine-tune")
        return real_finetune(*args, **kwargs)

    def track(*args, **kwargs):
        called.append("driver landmarks")
        return real_track(*args, **kwargs)

    monkeypatch.setattr(jobs, "finetune_person", finetune)
    monkeypatch.setattr(pipeline, "track_video", track)
    return called


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("make_driver", ["text", "truncated", "folder"])
def test_a_bad_driver_fails_before_any_slow_work(tmp_path, portrait_path, tiny_weights, sample_driver, slow_work_spy,
                                                 make_driver):
    driver = tmp_path / "notes.mp4"
    if make_driver == "text":
        driver.write_text("these are my notes, not a video\n")
    elif make_driver == "truncated":
        driver.write_bytes(sample_driver.read_bytes()[:2000])
    else:
        driver.mkdir()
    result = run(portrait_path, "--drive", driver, "-o", tmp_path / "out.mp4", "--weights", tiny_weights,
                 "--finetune-steps", 5, "--landmarks", "dlib")
    assert result.exit_code == 3, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and "notes.mp4" in lines[0] and lines[0].startswith("error:")
    assert slow_work_spy == []
    assert not (tmp_path / "out.mp4").exists()


def test_a_bad_output_path_fails_before_any_slow_work(tmp_path, portrait_path, tiny_weights, short_driver,
                                                      slow_work_spy):
    result = run(portrait_path, "--drive", short_driver, "-o", tmp_path / "missing" / "out.mp4", "--weights",
                 tiny_weights, "--landmarks", "dlib")
    assert result.exit_code == 7, result.output
    assert len(_error_lines(result.output)) == 1 and slow_work_spy == []


def test_a_photo_without_a_face_fails_before_driver_landmarks_and_fine_tuning(tmp_path, tiny_weights, short_driver,
                                                                              slow_work_spy):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 180, np.uint8)).save(blank)
    result = run(blank, "--drive", short_driver, "-o", tmp_path / "out.mp4", "--weights", tiny_weights,
                 "--landmarks", "dlib", "-q")
    assert result.exit_code == 4, result.output
    assert "wall.png" in result.output and len(_error_lines(result.output)) == 1
    assert slow_work_spy == []


def test_default_run_is_quiet_q_is_silent_and_v_says_more(tmp_path, portrait_path, tiny_weights, short_driver):
    common = [portrait_path, "--drive", short_driver, "--weights", tiny_weights, "--finetune-steps", 2,
              "--landmarks", "dlib"]
    default = run(*common, "-o", tmp_path / "a.mp4")
    assert default.exit_code == 0, default.output
    assert "INFO" not in default.output and "WARNING" not in default.output
    assert "dlib landmarks" in default.output and "neural renderer" in default.output
    assert "reference frame" in default.output
    assert "wrote" in default.output and "20 frames" in default.output
    quiet = run(*common, "-o", tmp_path / "b.mp4", "-q")
    assert quiet.exit_code == 0 and quiet.output.strip() == ""
    verbose = run(*common, "-o", tmp_path / "c.mp4", "-v")
    assert verbose.exit_code == 0
    # The third run of this driver reads its landmarks from the cache (either is said).
    assert ("tracked 20 frames" in verbose.output or "landmarks of 20 frames from the cache" in verbose.output)
    assert "content loss" in verbose.output
    assert "reference frames: pose" in verbose.output


def test_preview_writes_a_contact_sheet(tmp_path, portrait_path, short_driver):
    sheet = tmp_path / "sheet.png"
    result = run(portrait_path, "--drive", short_driver, "-o", tmp_path / "out.mp4", "--renderer", "warp",
                 "--landmarks", "dlib", "--preview", sheet, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(sheet) as image:
        image.load()
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    # Two rows of 240 px tiles (+ labels); the photo and four driver/output columns.
    assert height == 2 * (240 + 22) + 4
    assert width > 4 * 240
    assert pixels.std() > 10
    # A non-PNG preview, or one that exists, is refused before any work.
    bad = run(portrait_path, "--drive", short_driver, "-o", tmp_path / "x.mp4", "--renderer", "warp",
              "--preview", tmp_path / "sheet.jpg", "-q")
    assert bad.exit_code == 2 and ".png" in bad.output
    again = run(portrait_path, "--drive", short_driver, "-o", tmp_path / "y.mp4", "--renderer", "warp",
                "--preview", sheet, "-q")
    assert again.exit_code == 7 and not (tmp_path / "y.mp4").exists()


def test_batch_preview_writes_one_sheet_per_person(tmp_path, portrait_path, short_driver):
    people = tmp_path / "people"
    people.mkdir()
    for name in ("ann", "bob"):
        (people / f"{name}.jpg").write_bytes(portrait_path.read_bytes())
    out = tmp_path / "out"
    result = run("batch", people, "--drive", short_driver, "--out-dir", out, "--renderer", "warp",
                 "--landmarks", "dlib", "--preview", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["ann.mp4", "ann.png", "bob.mp4", "bob.png"]


def test_batch_with_a_bad_driver_fails_before_any_slow_work(tmp_path, portrait_path, tiny_weights, slow_work_spy):
    people = tmp_path / "people"
    people.mkdir()
    (people / "ann.jpg").write_bytes(portrait_path.read_bytes())
    driver = tmp_path / "notes.mp4"
    driver.write_text("not a video")
    result = run("batch", people, "--drive", driver, "--out-dir", tmp_path / "out", "--weights", tiny_weights,
                 "--landmarks", "dlib")
    assert result.exit_code == 3 and "notes.mp4" in result.output
    assert slow_work_spy == [] and not (tmp_path / "out").exists()


def test_export_checks_its_photos_before_fine_tuning(tmp_path, tiny_weights, slow_work_spy):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 180, np.uint8)).save(blank)
    result = run("export", blank, "-o", tmp_path / "person.onnx", "--weights", tiny_weights, "--landmarks", "dlib",
                 "--finetune-steps", 5)
    assert result.exit_code == 4 and "wall.png" in result.output and len(_error_lines(result.output)) == 1
    assert slow_work_spy == [] and not (tmp_path / "person.onnx").exists()
