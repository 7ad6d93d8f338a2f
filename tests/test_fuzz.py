"""Random and damaged bytes as photos, videos and landmark files.

Every outcome is either a result or an AnimateFaceError whose one-line message names the file:
never another exception type, never a hang (each case runs under a deadline). Seeds are fixed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.errors import AnimateFaceError, InputError
from animate_cli.io.images import load_image
from animate_cli.io.video import ffmpeg_exe, iter_frames, probe_video
from animate_cli.landmarks import LandmarkTrack

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(10)
CUTS = (0.001, 0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.999)
DEADLINE_S = 30

IMAGE_MAGIC = [b"", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM",
               b"II*\x00", b"RIFF\x00\x10\x00\x00WEBPVP8 "]


class Hang(BaseException):
    """Raised by the deadline; a BaseException, so that no handler under test can swallow it."""


@contextlib.contextmanager
def deadline(seconds: float = DEADLINE_S) -> Iterator[None]:
    """Fail the test when the block takes longer than ``seconds`` (a hang). A subprocess the block
    is waiting for is killed by subprocess.run when the alarm interrupts it."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def random_bytes(seed: int, prefix: bytes = b"", max_size: int = 6000) -> bytes:
    rng = np.random.default_rng(seed)
    return prefix + rng.integers(0, 256, int(rng.integers(0, max_size)), dtype=np.uint8).tobytes()


def corrupted(data: bytes, seed: int, count: int = 20) -> bytes:
    """``data`` with ``count`` random bytes overwritten, the first 64 bytes (the magic) kept."""
    rng = np.random.default_rng(seed)
    array = np.frombuffer(data, np.uint8).copy()
    array[rng.integers(64, len(array), count)] = rng.integers(0, 256, count, dtype=np.uint8)
    return array.tobytes()


def outcome(path: Path, action: Callable[[], object]) -> object:
    """``action()``'s result, or the AnimateFaceError it raised, checked to name ``path`` in one line.
    Any other exception fails the test as it is."""
    with deadline():
        try:
            return action()
        except AnimateFaceError as error:
            message = str(error)
            assert error.path == str(path) and message.startswith(f"{path}: "), message
            assert "\n" not in message and len(message) < 400, message
            return error


@pytest.fixture(autouse=True)
def no_cli_log_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI tests that ran earlier in this process leave their Rich log handler on the root logger;
    the library's own warnings must not be taken for decoders' noise on stderr here."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if type(h).__module__.startswith("_pytest")])


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, portrait_path: Path, sample_driver: Path) -> dict[str, bytes]:
    """Real files to cut and damage: a JPEG, a PNG, two MP4 layouts and a landmark track."""
    folder = tmp_path_factory.mktemp("real")
    png = folder / "photo.png"
    Image.open(portrait_path).resize((96, 118)).save(png)
    for name, flags in (("moov_last.mp4", []), ("faststart.mp4", ["-movflags", "+faststart"])):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(sample_driver), "-frames:v", "10",
                        "-vf", "scale=64:64", "-c:v", "libx264", "-g", "4", "-pix_fmt", "yuv420p", "-c:a", "aac",
                        "-t", "0.4", *flags, str(folder / name)], check=True)
    track = folder / "track.npz"
    rng = np.random.default_rng(0)
    LandmarkTrack(rng.uniform(0, 64, (10, 68, 2)), np.ones(10, bool), 25.0, (64, 64)).save(track)
    return {"jpg": portrait_path.read_bytes(), "png": png.read_bytes(), "npz": track.read_bytes(),
            **{name: (folder / name).read_bytes() for name in ("moov_last.mp4", "faststart.mp4")}}


# ---------------------------------------------------------------------------------------------
# Photos


def check_photo(path: Path, capfd: pytest.CaptureFixture[str]) -> object:
    """load_image: an RGB image or an InputError, and not a word on stderr or as a warning
    (Pillow's and OpenCV's decoders complain about damaged files unless kept quiet)."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = outcome(path, lambda: load_image(path))
    assert not caught, [str(w.message) for w in caught]
    assert capfd.readouterr().err == ""
    if isinstance(result, np.ndarray):
        assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3
    else:
        assert isinstance(result, InputError)
    return result


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_a_photo(seed, tmp_path, capfd):
    for index, magic in enumerate(IMAGE_MAGIC):
        path = tmp_path / f"random{index}.{'png' if index % 2 else 'jpg'}"
        path.write_bytes(random_bytes(seed * 100 + index, magic))
        check_photo(path, capfd)


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_cut_and_damaged_photos(kind, tmp_path, real, capfd):
    data = real[kind]
    outcomes = []
    for cut in CUTS:
        path = tmp_path / f"cut{cut}.{kind}"
        path.write_bytes(data[: max(1, int(len(data) * cut))])
        outcomes.append(check_photo(path, capfd))
    for seed in range(5):
        path = tmp_path / f"damaged{seed}.{kind}"
        path.write_bytes(corrupted(data, seed))
        check_photo(path, capfd)
    # Cut early, nothing decodes: an error, never a half-grey picture.
    assert all(isinstance(result, InputError) for result in outcomes[:5])


# ---------------------------------------------------------------------------------------------
# Videos


def check_video(path: Path, capfd: pytest.CaptureFixture[str]) -> object:
    """probe_video, then iter_frames (with the probe's info and without): frames or InputError,
    and none of ffmpeg's messages on stderr."""
    capfd.readouterr()

    def read() -> tuple[object, list[np.ndarray]]:
        info = probe_video(path)
        return info, list(iter_frames(path, info=info))

    result = outcome(path, read)
    if isinstance(result, AnimateFaceError):
        assert isinstance(result, InputError)
        assert capfd.readouterr().err == ""
        return result
    info, frames = result
    width, height = info.size
    assert 0 < len(frames) <= info.frame_count
    assert all(frame.shape == (height, width, 3) and frame.dtype == np.uint8 for frame in frames)
    again = outcome(path, lambda: sum(1 for _ in iter_frames(path)))
    assert again == len(frames)
    assert capfd.readouterr().err == ""
    return info


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_a_video(seed, tmp_path, real, capfd):
    plain = tmp_path / "random.mp4"
    plain.write_bytes(random_bytes(seed))
    assert isinstance(check_video(plain, capfd), InputError)
    # A real MP4's first box (ftyp), then noise: deeper into the demuxer.
    header = real["faststart.mp4"][:int.from_bytes(real["faststart.mp4"][:4], "big")]
    deeper = tmp_path / "random-after-ftyp.mp4"
    deeper.write_bytes(random_bytes(seed + 1000, header))
    assert isinstance(check_video(deeper, capfd), InputError)


@pytest.mark.parametrize("kind", ["moov_last.mp4", "faststart.mp4"])
def test_cut_and_damaged_videos(kind, tmp_path, real, capfd):
    data = real[kind]
    results = {}
    for cut in CUTS:
        path = tmp_path / f"cut{cut}.mp4"
        path.write_bytes(data[: max(1, int(len(data) * cut))])
        results[cut] = check_video(path, capfd)
    for seed in range(3):
        path = tmp_path / f"damaged{seed}.mp4"
        path.write_bytes(corrupted(data, seed, count=40))
        check_video(path, capfd)
    assert isinstance(results[0.001], InputError)
    if kind == "moov_last.mp4":  # the index is in the last ~20%: a cut before it loses it
        assert all(isinstance(results[cut], InputError) for cut in CUTS if cut <= 0.8)
    else:  # the index comes first: most cuts keep the frames before the cut
        assert not isinstance(results[0.95], InputError)


# ---------------------------------------------------------------------------------------------
# Landmark tracks (.npz)


def check_track(path: Path) -> object:
    result = outcome(path, lambda: LandmarkTrack.load(path))
    if isinstance(result, LandmarkTrack):
        assert result.points.shape == (len(result), 68, 2) and np.isfinite(result.points).all()
    else:
        assert isinstance(result, InputError)
    return result


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_a_landmark_track(seed, tmp_path):
    for index, magic in enumerate((b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00")):
        path = tmp_path / f"random{index}.npz"
        path.write_bytes(random_bytes(seed * 10 + index, magic))
        assert isinstance(check_track(path), InputError)


def test_cut_and_damaged_landmark_tracks(tmp_path, real):
    data = real["npz"]
    for cut in CUTS:
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[: max(1, int(len(data) * cut))])
        assert isinstance(check_track(path), InputError)
    for seed in range(5):
        path = tmp_path / f"damaged{seed}.npz"
        path.write_bytes(corrupted(data, seed))
        check_track(path)


GOOD = {"points": np.zeros((4, 68, 2), np.float32), "valid": np.ones(4, bool), "fps": np.float64(25.0),
        "frame_size": np.array([64, 48])}


@pytest.mark.parametrize(("change", "problem"), [
    ({"points": None}, "missing points"),
    ({"points": np.zeros((4, 5, 2))}, "(T, 68, 2)"),
    ({"points": np.full((4, 68, 2), np.nan)}, "NaN"),
    ({"points": np.array(["a"] * 4)}, "must be numbers"),
    ({"points": np.array([{"x": 1}] * 4, dtype=object)}, "unreadable landmark track"),
    ({"valid": np.ones(3, bool)}, "valid must have shape"),
    ({"fps": np.float64(0)}, "fps must be positive"),
    ({"fps": np.float64(np.inf)}, "fps must be positive"),
    ({"fps": np.array("fast")}, "unreadable landmark track"),
    ({"frame_size": np.array([64])}, "frame_size"),
    ({"frame_size": np.array([0, 48])}, "frame_size"),
    ({"format_version": np.int64(99)}, "newer"),
])
def test_malformed_landmark_tracks(change, problem, tmp_path):
    arrays = {**GOOD, **change}
    path = tmp_path / "track.npz"
    with open(path, "wb") as file:
        np.savez(file, **{key: value for key, value in arrays.items() if value is not None})
    error = check_track(path)
    assert isinstance(error, InputError) and problem in str(error), error


# ---------------------------------------------------------------------------------------------
# Through the command line


runner = CliRunner()


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_through_the_cli(seed, tmp_path, real, portrait_path, tiny_weights):
    """As the photo and as the driver: exit 3, one line naming the file, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    junk_photo, junk_video = tmp_path / "junk.jpg", tmp_path / "junk.mp4"
    junk_photo.write_bytes(random_bytes(seed, IMAGE_MAGIC[1]))
    junk_video.write_bytes(random_bytes(seed + 50, real["faststart.mp4"][:32]))
    track = tmp_path / "drive.npz"
    track.write_bytes(real["npz"])
    for photo, drive, bad in ((junk_photo, track, junk_photo), (portrait_path, junk_video, junk_video)):
        with deadline():
            result = runner.invoke(app, [str(photo), "--drive", str(drive), "-o", str(out / "result.mp4"),
                                         "--weights", str(tiny_weights), "--landmarks", "dlib",
                                         "--finetune-steps", "0", "-q"])
        assert result.exit_code == 3, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), result.output
        assert list(out.iterdir()) == []


def test_random_bytes_through_the_cli_in_a_subprocess(tmp_path):
    """The installed entry point, with a real timeout: a hang would be killed and fail the test."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(random_bytes(7))
    target = tmp_path / "track.npz"
    completed = subprocess.run([sys.executable, "-m", "animate_cli.cli", "landmarks", str(junk), "-o", str(target),
                                "--landmarks", "dlib", "-q"],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 3, completed.stderr
    assert completed.stderr.strip() == f"error: {junk}: not a readable video (corrupt or unsupported format)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.mp4"]
