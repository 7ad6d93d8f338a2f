"""Bad input, failing outputs, interruptions and a failing Hub, through the command line.

Each case checks the documented exit code, a one-line message that names the file and the
problem (no traceback), and that no output and no temporary file is left behind. The inputs are
made here from the samples and from scikit-image's astronaut photo (a real face).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.io import atomic as atomic_module
from animate_cli.io.images import load_image
from animate_cli.io.video import VideoWriter, ffmpeg_exe, iter_frames, probe_output
from animate_cli.landmarks import LandmarkTrack, create_backend, track_video
from fake_hub import FakeHub, closed_port_url, fake_hub, hf_home, point_hub_at  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The portrait and the driver's first frames; tiny weights, dlib, feed-forward: each run ~1 s.
FAST = ("--landmarks", "dlib", "--finetune-steps", "0", "-q")


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args], check=True, capture_output=True)


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_fails(result, code: int, path: object, *problem: str) -> str:
    """The run failed with ``code`` and one line ``error: <path>: <problem>``, no traceback."""
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output and "internal error" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("error: ") and str(path) in line, output
    for words in problem:
        assert words in line, output
    return line


def assert_empty(folder: Path, *keep: str) -> None:
    """Nothing but ``keep`` in the folder: no output, no hidden temporary file."""
    assert sorted(os.listdir(folder)) == sorted(keep)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, sample_driver: Path) -> dict[str, Path]:
    """Inputs built once: a 6-frame driver clip with audio and its landmarks, bad media files."""
    folder = tmp_path_factory.mktemp("made")
    paths = {name: folder / name for name in ("clip.mp4", "audio.m4a", "grey.mp4", "moov_last.mp4",
                                              "faststart.mp4")}
    ffmpeg("-i", str(sample_driver), "-frames:v", "6", "-t", "0.24", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(paths["clip.mp4"]))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.5", "-c:a", "aac",
           str(paths["audio.m4a"]))
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=128x128:rate=25", "-frames:v", "6", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(paths["grey.mp4"]))
    # A key frame every 5 frames, so a file cut at 60% still decodes about half of its frames.
    ffmpeg("-i", str(sample_driver), "-frames:v", "25", "-an", "-c:v", "libx264", "-g", "5", "-bf", "0",
           "-pix_fmt", "yuv420p", str(paths["moov_last.mp4"]))
    data = paths["moov_last.mp4"].read_bytes()
    paths["truncated.mp4"] = folder / "truncated.mp4"
    paths["truncated.mp4"].write_bytes(data[: len(data) // 2])  # the index (at the end) is gone
    paths["zero_frames.mp4"] = folder / "zero_frames.mp4"
    ffmpeg("-i", str(paths["moov_last.mp4"]), "-c", "copy", "-movflags", "+faststart",
           str(paths["faststart.mp4"]))
    faststart = paths["faststart.mp4"].read_bytes()
    paths["zero_frames.mp4"].write_bytes(faststart[: faststart.index(b"mdat") + 4])  # header, no frames
    paths["random.mp4"] = folder / "random.mp4"
    paths["random.mp4"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths["text.mp4"] = folder / "text.mp4"
    paths["text.mp4"].write_text("not a video\n" * 50)

    backend = create_backend("dlib")
    track = track_video(backend, iter_frames(paths["clip.mp4"]), 25.0)
    assert track.valid.all()
    paths["clip.npz"] = folder / "clip.npz"
    track.save(paths["clip.npz"])
    # A long track (no video, no audio) for the interruption test: rendering it takes many seconds.
    long = LandmarkTrack(np.tile(track.points, (200, 1, 1)), np.ones(6 * 200, bool), 25.0, track.frame_size)
    paths["long.npz"] = folder / "long.npz"
    long.save(paths["long.npz"])
    return paths


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


# ---------------------------------------------------------------------------------------------
# Paths: missing, a folder for a file, a file for a folder


@pytest.mark.parametrize("which", ["batch folder", "landmarks file"])
def test_missing_path(which, tmp_path, out, made, portrait_path, tiny_weights):
    # A missing photo and a missing video driver are in test_cli.py.
    missing = tmp_path / ("people" if which == "batch folder" else "speech.npz")
    if which == "batch folder":
        result = run("batch", missing, "--drive", made["clip.npz"], "--out-dir", out / "videos",
                     "--weights", tiny_weights, *FAST)
        assert_fails(result, 3, missing, "no such folder")
    else:
        result = run(portrait_path, "--drive", missing, "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
        assert_fails(result, 3, missing, "not found")
    assert_empty(out)


def test_folder_given_as_the_driver(tmp_path, out, portrait_path, tiny_weights):
    folder = tmp_path / "clips"
    folder.mkdir()
    result = run(portrait_path, "--drive", folder, "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
    assert_fails(result, 3, folder, "is a folder, expected a video file")
    assert_empty(out)


def test_file_given_as_the_batch_folder(out, made, portrait_path, tiny_weights):
    result = run("batch", portrait_path, "--drive", made["clip.npz"], "--out-dir", out, "--weights", tiny_weights,
                 *FAST)
    assert_fails(result, 3, portrait_path, "is not a folder")
    assert_empty(out)


def test_file_given_as_the_output_folder(tmp_path, made, portrait_path, tiny_weights):
    people = tmp_path / "people"
    people.mkdir()
    shutil.copy(portrait_path, people / "ann.jpg")
    out_dir = tmp_path / "videos.txt"
    out_dir.write_text("my notes")
    result = run("batch", people, "--drive", made["clip.npz"], "--out-dir", out_dir, "--weights", tiny_weights,
                 *FAST)
    assert_fails(result, 7, out_dir, "exists and is not a folder")
    assert out_dir.read_text() == "my notes"
    assert_empty(tmp_path, "people", "videos.txt")


# ---------------------------------------------------------------------------------------------
# Bad photos and bad videos


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("empty.jpg", b"", "empty file"),
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image"),
    ("notes.jpg", b"dear diary\n" * 20, "not a readable image"),
    ("cut.jpg", None, "image file is truncated"),
])
def test_empty_and_corrupt_photos(name, content, problem, tmp_path, out, made, portrait_path, tiny_weights):
    photo = tmp_path / name
    photo.write_bytes(portrait_path.read_bytes()[:6000] if content is None else content)
    result = run(photo, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
    assert_fails(result, 3, photo, problem)
    assert_empty(out)


@pytest.mark.parametrize(("name", "problem"), [
    ("truncated.mp4", "not a readable video"),
    ("random.mp4", "not a readable video"),
    ("text.mp4", "not a readable video"),
    ("audio.m4a", "has no video stream"),
    ("zero_frames.mp4", "has no frames"),
])
def test_bad_driving_videos(name, problem, out, made, portrait_path, tiny_weights):
    result = run(portrait_path, "--drive", made[name], "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
    assert_fails(result, 3, made[name], problem)
    assert_empty(out)


def test_driver_cut_short_renders_the_frames_that_decode(tmp_path, out, made, portrait_path, tiny_weights):
    """A download cut off after its index: the frames that decode are used, with a warning."""
    data = made["faststart.mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 5])
    # Not -q: warnings are for the default terminal (-q prints errors only).
    result = run(portrait_path, "--drive", cut, "-o", out / "result.mp4", "--weights", tiny_weights, *FAST[:-1],
                 "--crop-only", "--size", 64)
    assert result.exit_code == 0, result.output
    assert "truncated?" in result.output and "Traceback" not in result.output
    frames = probe_output(out / "result.mp4")["frame_count"]
    assert 5 <= frames < 25
    assert_empty(out, "result.mp4")


# ---------------------------------------------------------------------------------------------
# Faces: none, several, too small; a driver with faceless frames


def test_photo_without_a_face(tmp_path, out, made, tiny_weights):
    import skimage.data

    cat = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    result = run(cat, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
    assert_fails(result, 4, cat, "no face found")
    assert_empty(out)


def test_driver_without_a_face(out, made, portrait_path, tiny_weights):
    result = run(portrait_path, "--drive", made["grey.mp4"], "-o", out / "result.mp4", "--weights", tiny_weights,
                 *FAST)
    assert_fails(result, 4, made["grey.mp4"], "no face in any frame")
    assert_empty(out)


def two_faces(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut twice: small on the left, large on the right (so largest is not first)."""
    head = astronaut[20:280, 100:360]
    small = cv2.resize(head, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 460, 3), 120, np.uint8)
    canvas[60:60 + small.shape[0], 10:10 + small.shape[1]] = small
    canvas[20:280, 190:450] = head
    return canvas


def test_several_faces_largest_by_default_and_face_index(tmp_path, out, made, astronaut, tiny_weights):
    photo = tmp_path / "pair.png"
    Image.fromarray(two_faces(astronaut)).save(photo)
    centres = {}
    for index in (0, 1):
        person = tmp_path / f"person{index}"
        result = run(photo, "--drive", made["clip.npz"], "-o", out / f"face{index}.mp4", "--weights", tiny_weights,
                     *FAST, "--face-index", index, "--save-person", person, "--crop-only", "--size", 64)
        assert result.exit_code == 0, result.output
        points = np.array(json.loads((person / "person.json").read_text())["shots"][0]["points"])
        centres[index] = points.mean(axis=0)
    assert centres[0][0] > 190 + 40  # the large face, on the right
    assert centres[1][0] < 10 + 156  # the small one, on the left
    result = run(photo, "--drive", made["clip.npz"], "-o", out / "face5.mp4", "--weights", tiny_weights, *FAST,
                 "--face-index", 5)
    assert_fails(result, 4, photo, "face 5 not found", "has 2 faces")
    assert_empty(out, "face0.mp4", "face1.mp4")


def test_tiny_face(tmp_path, out, made, astronaut, tiny_weights):
    small = cv2.resize(astronaut, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)  # face ~22 px
    canvas = np.full((250, 250, 3), 128, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    photo = tmp_path / "far-away.png"
    Image.fromarray(canvas).save(photo)
    result = run(photo, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights", tiny_weights, *FAST)
    assert_fails(result, 4, photo, "too small")
    assert_empty(out)


def audio_duration(path: Path) -> float:
    """Seconds of the first audio stream, from decoding it."""
    completed = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0",
                                "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
                               capture_output=True, check=True)
    times = [line.split("=", 1)[1] for line in completed.stdout.decode().splitlines()
             if line.startswith("out_time_us=")]
    return int(times[-1]) / 1e6


def test_driver_with_faceless_frames_keeps_every_frame_and_the_audio(tmp_path, out, sample_driver, portrait_path,
                                                                     tiny_weights):
    """Frames 5-9 of the driver are grey: they are filled, not dropped, and the sound stays in sync."""
    driver = tmp_path / "gappy.mp4"
    frames = iter_frames(sample_driver)
    with VideoWriter(driver, 25, (256, 256), audio_from=sample_driver, preset="ultrafast") as writer:
        for index, frame in zip(range(15), frames):
            writer.write(np.full_like(frame, 128) if 5 <= index <= 9 else frame)
    frames.close()
    result = run(portrait_path, "--drive", driver, "-o", out / "result.mp4", "--weights", tiny_weights, *FAST[:-1],
                 "--size", 96)
    assert result.exit_code == 0, result.output
    assert "no face in 5 of 15 frames" in result.output
    info = probe_output(out / "result.mp4")
    assert info["frame_count"] == 15 and info["has_audio"]
    assert audio_duration(out / "result.mp4") == pytest.approx(15 / 25, abs=0.05)
    assert_empty(out, "result.mp4")


# ---------------------------------------------------------------------------------------------
# Photos that must work: transparency, greyscale, 16 bits, EXIF rotation, very large


def photo_variant(kind: str, portrait: np.ndarray, path: Path) -> None:
    if kind == "rgba":
        rgba = np.dstack([portrait, np.full(portrait.shape[:2], 255, np.uint8)])
        rgba[:, :40, 3] = 0  # a transparent strip on the left
        rgba[:30, :, 3] = 128
        Image.fromarray(rgba, "RGBA").save(path)
    elif kind == "grey":
        Image.fromarray(cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY), "L").save(path, quality=95)
    elif kind == "rgb16":
        cv2.imwrite(str(path), portrait[..., ::-1].astype(np.uint16) * 257)
    elif kind == "grey16":
        grey = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        cv2.imwrite(str(path), grey)
    else:  # EXIF orientation 6 (display rotated 90 degrees clockwise) or 8 (counter-clockwise)
        orientation = int(kind[-1])
        stored = np.rot90(portrait, 1 if orientation == 6 else -1)
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)


VARIANTS = {"rgba": ".png", "grey": ".jpg", "rgb16": ".png", "grey16": ".png", "exif6": ".jpg", "exif8": ".jpg"}


def test_unusual_photos_work_upright(tmp_path, out, made, portrait_path, tiny_weights):
    """Transparent, greyscale, 16-bit and EXIF-rotated photos, as one batch (the model loads once)."""
    portrait = load_image(portrait_path)  # 288x352
    people = tmp_path / "people"
    people.mkdir()
    for kind, suffix in VARIANTS.items():
        photo = people / f"{kind}{suffix}"
        photo_variant(kind, portrait, photo)
        if kind.startswith("exif"):
            # The stored pixels are sideways, where no face is found; read, they are the upright portrait.
            assert Image.open(photo).size == (352, 288)
            assert not create_backend("dlib").detect_faces(np.asarray(Image.open(photo).convert("RGB")))
            assert np.abs(load_image(photo).astype(np.int16) - portrait).mean() < 2
    assert Image.open(people / "grey16.png").mode == "I;16"
    result = run("batch", people, "--drive", made["clip.npz"], "--out-dir", out, "--weights", tiny_weights, *FAST,
                 "--size", 176)
    assert result.exit_code == 0, result.output
    assert_empty(out, *(f"{kind}.mp4" for kind in VARIANTS))
    for kind in VARIANTS:
        info = probe_output(out / f"{kind}.mp4")
        assert (info["width"], info["height"], info["frame_count"]) == (144, 176, 6), kind  # upright


MEASURE_RSS = """
import resource, sys
import cv2, dlib, torch
import animate_cli.cli as cli
from animate_cli.landmarks import create_backend
create_backend("dlib")  # imports and models first: only the run's own growth counts
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    cli.app(sys.argv[1:], standalone_mode=False)
finally:
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(f"rss-growth-kb={grown}", file=sys.stderr)
"""


def test_very_large_photo_works_within_memory(tmp_path, out, made, portrait_path, tiny_weights):
    """An 8000x6000 photo: found, composited and written at --size 256 with ~0.7 GB of extra memory
    (1.9 GB and 30 s before photos were searched coarse-first and shrunk once for the output)."""
    portrait = load_image(portrait_path)
    canvas = np.full((6000, 8000, 3), 90, np.uint8)
    canvas[:, 1500:1500 + 4909] = cv2.resize(portrait, (4909, 6000), interpolation=cv2.INTER_LINEAR)
    photo = tmp_path / "huge.jpg"
    Image.fromarray(canvas).save(photo, quality=85)
    del canvas
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, str(photo), "--drive", str(made["clip.npz"]), "-o",
         str(out / "result.mp4"), "--weights", str(tiny_weights), *FAST, "--size", "256"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    grown_mb = int(result.stderr.split("rss-growth-kb=")[1].split()[0]) / 1024
    assert grown_mb < 1500, f"peak memory grew by {grown_mb:.0f} MB"
    info = probe_output(out / "result.mp4")
    assert (info["width"], info["height"], info["frame_count"]) == (256, 192, 6)
    assert_empty(out, "result.mp4")


# ---------------------------------------------------------------------------------------------
# Outputs that cannot be written; Ctrl-C


def unwritable_folder(kind: str, tmp_path: Path) -> Path:
    """A file posing as the output's folder, a folder made read-only, or /sys (read-only even for
    root in most containers); skips when the folder turns out to be writable here."""
    if kind == "file as folder":
        parent = tmp_path / "notes.txt"
        parent.write_text("not a folder")
        return parent
    if kind == "read-only folder":
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o500)
    else:
        parent = Path("/sys")
        if not parent.is_dir():
            pytest.skip("no /sys here")
    probe = parent / f".animate-face-probe-{os.getpid()}"
    try:
        probe.touch()
    except PermissionError:
        return parent
    probe.unlink()
    if kind == "read-only folder":
        parent.chmod(0o700)
    pytest.skip(f"{parent} is writable here (running as root?)")


@pytest.mark.parametrize(("kind", "problem"), [("file as folder", "is not a folder"),
                                               ("read-only folder", "folder is not writable"),
                                               ("/sys", "folder is not writable")])
def test_output_folder_cannot_be_written(kind, problem, tmp_path, made, portrait_path, tiny_weights):
    parent = unwritable_folder(kind, tmp_path)
    target = parent / "result.mp4"
    before = sorted(os.listdir(parent)) if parent.is_dir() else None
    try:
        result = run(portrait_path, "--drive", made["clip.npz"], "-o", target, "--weights", tiny_weights, *FAST)
        assert_fails(result, 7, parent, problem)
        if before is not None:
            assert sorted(os.listdir(parent)) == before  # no output, no temporary file
        else:
            assert parent.read_text() == "not a folder"
    finally:
        if kind == "read-only folder":
            parent.chmod(0o700)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_while_writing(out, made, portrait_path, tiny_weights):
    """The file the video and its sound are written into is a link to /dev/full (ENOSPC)."""
    target = out / "result.mp4"
    # The CLI runs in this process, so its temporary file carries this process id.
    os.symlink("/dev/full", atomic_module.temp_path_for(target))
    result = run(portrait_path, "--drive", made["clip.mp4"], "-o", target, "--weights", tiny_weights, *FAST,
                 "--size", 64)
    assert_fails(result, 7, target, "disk full while writing")
    assert_empty(out)


def test_ctrl_c_while_rendering_leaves_nothing(out, made, portrait_path, tiny_weights):
    target = out / "result.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "animate_cli.cli", str(portrait_path), "--drive", str(made["long.npz"]), "-o",
         str(target), "--weights", str(tiny_weights), *FAST, "--size", "128"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A test run started in the background by a non-interactive shell inherits SIGINT ignored, and a
        # child that starts with SIGINT ignored never gets Python's KeyboardInterrupt: start it as a
        # terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not any(name.startswith(".result.partial-") for name in os.listdir(out)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "rendering never started"
            time.sleep(0.05)
        time.sleep(0.5)  # a few frames into the video
        assert process.poll() is None, "finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stdout + stderr
    assert_empty(out)
    # The encoder (ffmpeg, in its own session so Ctrl-C reaches only Python) was stopped too.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            assert str(out).encode() not in cmdline.read_bytes(), cmdline


# ---------------------------------------------------------------------------------------------
# Weights: Hub unreachable, missing repo, corrupt files, another format version


def test_hub_unreachable(hf_home, monkeypatch, out, made, portrait_path):
    point_hub_at(monkeypatch, closed_port_url())
    result = run(portrait_path, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights",
                 "someone/talking-heads", *FAST)
    assert_fails(result, 5, "someone/talking-heads", "cannot reach the Hugging Face Hub")
    assert_empty(out)


def test_hub_repo_does_not_exist(fake_hub: FakeHub, out, made, portrait_path, tiny_weights):
    fake_hub.add_folder("someone/talking-heads", tiny_weights)
    result = run(portrait_path, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights",
                 "someone/no-such-model", *FAST)
    assert_fails(result, 5, "someone/no-such-model", "repository not found")
    assert_empty(out)


@pytest.mark.parametrize(("damage", "problem"), [
    ("truncated", "corrupt or truncated weights file"),
    ("garbage", "corrupt or truncated weights file"),
    ("format", "was written by format version 99"),
])
def test_damaged_weights(damage, problem, tmp_path, out, made, portrait_path, tiny_weights):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    tensors = weights / "model.safetensors"
    if damage == "truncated":
        data = tensors.read_bytes()
        tensors.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        tensors.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        config = json.loads((weights / "config.json").read_text())
        config["format_version"] = 99
        (weights / "config.json").write_text(json.dumps(config))
    result = run(portrait_path, "--drive", made["clip.npz"], "-o", out / "result.mp4", "--weights", weights, *FAST)
    named = weights / ("config.json" if damage == "format" else "model.safetensors")
    assert_fails(result, 5, named, problem)
    assert_empty(out)
