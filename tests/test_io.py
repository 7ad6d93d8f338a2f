"""Images, atomic outputs and streaming video (ffmpeg from imageio-ffmpeg), on tiny generated files."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from animate_cli.errors import InputError, OutputError
from animate_cli.io import atomic as atomic_module
from animate_cli.io import images as images_module
from animate_cli.io.atomic import atomic_output
from animate_cli.io.images import list_images, load_image, save_image
from animate_cli.io.video import (
    VideoWriter,
    even_size,
    ffmpeg_exe,
    fps_fraction,
    iter_frames,
    probe_output,
    probe_video,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args], check=True, capture_output=True)


def frame(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A frame with a flat colour per index (easy to compare after H.264)."""
    width, height = size
    colour = np.array([(index * 40) % 256, 255 - (index * 25) % 256, 128], dtype=np.uint8)
    return np.broadcast_to(colour, (height, width, 3)).copy()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small media files made with ffmpeg once for the module."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {name: folder / name for name in
             ("av.mp4", "rotated.mp4", "long_audio.m4a", "short_audio.m4a", "silent.mp4", "moov_last.mp4")}
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
           "-frames:v", "10", "-t", "0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(paths["av.mp4"]))
    ffmpeg("-display_rotation", "90", "-i", str(paths["av.mp4"]), "-c", "copy", str(paths["rotated.mp4"]))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "2", "-c:a", "aac", str(paths["long_audio.m4a"]))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.2", "-c:a", "aac", str(paths["short_audio.m4a"]))
    # 50 frames, index at the front (faststart), so a cut file still decodes its first frames.
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "50", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-movflags", "+faststart", str(paths["silent.mp4"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "50", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(paths["moov_last.mp4"]))
    data = paths["silent.mp4"].read_bytes()
    paths["cut.mp4"] = folder / "cut.mp4"
    paths["cut.mp4"].write_bytes(data[: int(len(data) * 0.8)])
    paths["zero_frames.mp4"] = folder / "zero_frames.mp4"
    paths["zero_frames.mp4"].write_bytes(data[: data.index(b"mdat") + 4])  # header only, no frame data
    moov_last = paths["moov_last.mp4"].read_bytes()
    paths["truncated.mp4"] = folder / "truncated.mp4"
    paths["truncated.mp4"].write_bytes(moov_last[: len(moov_last) * 2 // 3])  # index lost
    paths["random.mp4"] = folder / "random.mp4"
    paths["random.mp4"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return paths


# ---------------------------------------------------------------------------------------------
# Images


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.webp", "d.tiff", "notes.txt", ".a.partial-1.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.webp", "d.tiff"]
    with pytest.raises(InputError, match="no such folder"):
        list_images(tmp_path / "missing")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((40, 60, 3), dtype=np.uint8)  # 60 wide, 40 high, as the sensor stored it
    stored[:] = BLUE
    stored[:16, :16] = RED  # top-left block
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise (portrait phone photo)
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    upright = load_image(path)
    assert upright.shape == (60, 40, 3) and upright.dtype == np.uint8
    # The stored top-left corner is now the top-right corner.
    assert np.abs(upright[4, 35].astype(int) - RED).max() < 30
    assert np.abs(upright[4, 4].astype(int) - BLUE).max() < 30
    assert np.abs(upright[55, 35].astype(int) - BLUE).max() < 30


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :2] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[:, 2:4] = (255, 0, 0, 255)  # opaque red stays red
    rgba[:, 4:] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    assert image.shape == (4, 6, 3)
    assert (image[:, :2] == 255).all()
    assert (image[:, 2:4] == RED).all()
    assert np.abs(image[:, 4:].astype(int) - 127).max() <= 1

    palette = Image.new("P", (3, 2), 0)
    palette.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)  # index 1 (black) is transparent
    image = load_image(tmp_path / "p.png")
    assert (image[0, 0] == 255).all()
    assert (image[1, 2] == (0, 255, 0)).all()

    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png") == 255).all()


def test_greyscale_cmyk_and_16_bit(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.shape == (3, 4, 3) and (image == grey[..., None]).all()

    grey16 = np.array([[0, 65535, 32896, 257]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    assert (load_image(tmp_path / "grey16.png")[..., 0] == [[0, 255, 128, 1]]).all()

    rgb16 = np.array([[[65535, 0, 32896], [257 * 10, 257 * 200, 65535]]], dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])
    expected = np.round(rgb16 / 257.0)
    assert np.abs(load_image(tmp_path / "rgb16.png").astype(int) - expected).max() <= 1

    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = load_image(tmp_path / "cmyk.jpg")
    assert red.shape == (5, 5, 3)
    assert red[..., 0].min() > 200 and red[..., 1:].max() < 60


def test_opencv_fallback_for_files_pillow_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb16 = np.full((3, 3, 3), 65535, dtype=np.uint16)
    rgb16[..., 2] = 0  # BGR order: red channel zero
    assert cv2.imwrite(str(tmp_path / "x.tif"), rgb16)

    def refuse(*args: object, **kwargs: object) -> None:
        raise UnidentifiedImageError("cannot identify image file")

    monkeypatch.setattr(images_module.Image, "open", refuse)
    image = load_image(tmp_path / "x.tif")
    assert (image == (0, 255, 255)).all()


def test_large_images_load_and_limit_stays_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.jpg"
    Image.new("L", (8000, 6000), 90).save(path, quality=50)
    image = load_image(path)
    assert image.shape == (6000, 8000, 3) and int(image[3000, 4000, 0]) in range(88, 93)
    del image

    Image.new("RGB", (100, 100), (1, 2, 3)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stricter than the file: 10k > 2 * 1000
    assert load_image(tmp_path / "small.png").shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored: the raise was local

    monkeypatch.setattr(images_module, "MAX_MEGAPIXELS", 0.005)
    with pytest.raises(InputError, match="image too large"):
        load_image(tmp_path / "small.png")


def test_unreadable_images(tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.jpg": "no such file",
        tmp_path: "is a folder, expected an image file",
        tmp_path / "empty.jpg": "empty file",
        tmp_path / "random.jpg": "not a readable image (corrupt or unsupported format)",
        tmp_path / "text.png": "not a readable image (corrupt or unsupported format)",
        tmp_path / "cut.jpg": "image file is truncated",
    }
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "random.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (tmp_path / "text.png").write_text("hello, not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path, message in cases.items():
        with pytest.raises(InputError) as caught:
            load_image(path)
        assert str(caught.value) == f"{path}: {message}"
        assert caught.value.exit_code == 3


def test_save_image_round_trip_and_refusals(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = tmp_path / "out.png"
    save_image(path, image)
    assert (load_image(path) == image).all()
    with pytest.raises(OutputError, match="exists; pass --overwrite to replace it"):
        save_image(path, image, overwrite=False)
    save_image(path, image[::-1].copy())  # replaces by default
    assert (load_image(path) == image[::-1]).all()
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary files left
    with pytest.raises(OutputError) as caught:
        save_image(tmp_path / "no" / "such" / "x.png", image)
    assert str(caught.value) == f"{tmp_path / 'no' / 'such'}: folder does not exist"
    with pytest.raises(ValueError):
        save_image(tmp_path / "f.png", image.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Atomic output


def test_atomic_output_renames_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    with atomic_output(target, overwrite=False) as temp:
        assert temp.parent == tmp_path
        assert temp.name == f".result.partial-{os.getpid()}.txt"
        temp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert os.listdir(tmp_path) == ["result.txt"]

    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_output(tmp_path / "failed.txt") as temp:
                temp.write_text("half")
                raise error
    assert os.listdir(tmp_path) == ["result.txt"]


def test_atomic_output_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(OutputError) as caught:
        with atomic_output(target, overwrite=False):
            pass
    assert str(caught.value) == f"{target}: exists; pass --overwrite to replace it"
    assert caught.value.exit_code == 7

    with pytest.raises(OutputError, match="disk full while writing"):
        with atomic_output(target, overwrite=True):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]

    with pytest.raises(OutputError, match="is a folder"):
        with atomic_output(tmp_path, overwrite=True):
            pass

    # Tests run as root, where chmod cannot make a folder read-only: simulate the refusal.
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic_module.os, "open", refuse)
    with pytest.raises(OutputError) as caught:
        with atomic_output(tmp_path / "new.bin"):
            pass
    assert str(caught.value) == f"{tmp_path}: folder is not writable"


# ---------------------------------------------------------------------------------------------
# Video writing


def test_even_size_and_fps_fraction() -> None:
    assert even_size(65, 49) == (64, 48)
    assert even_size(64, 48) == (64, 48)
    assert even_size(1, 1) == (2, 2)
    assert fps_fraction(25) == 25
    assert fps_fraction(29.97) == Fraction(30000, 1001)
    assert fps_fraction(23.976) == Fraction(24000, 1001)
    assert fps_fraction(12.5) == Fraction(25, 2)


def test_video_writer_h264_yuv420p(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=25, size=(64, 48), crf=10, preset="ultrafast") as writer:
        for index in range(10):
            writer.write(frame(index))
        assert not path.exists()  # only renamed at the end
    assert writer.frames_written == 10
    info = probe_output(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (64, 48)
    assert info["fps"] == 25 and info["frame_count"] == 10 and info["has_audio"] is False
    decoded = list(iter_frames(path))
    assert len(decoded) == 10
    for index, image in enumerate(decoded):
        assert np.abs(image.astype(int) - frame(index)).mean() < 4
    assert os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize(("audio", "frames", "duration"), [("long_audio.m4a", 10, 0.4), ("short_audio.m4a", 25, 1.0)])
def test_video_writer_muxes_audio_cut_to_video(clips: dict[str, Path], tmp_path: Path, audio: str, frames: int,
                                               duration: float) -> None:
    path = tmp_path / "talk.mp4"
    with VideoWriter(path, fps=25, size=(64, 48), audio_from=clips[audio], preset="ultrafast") as writer:
        for index in range(frames):
            writer.write(frame(index))
    info = probe_output(path)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["frame_count"] == frames
    # Longer audio is cut to the video; shorter audio leaves the video at full length.
    assert info["duration"] == pytest.approx(duration, abs=0.06)
    assert os.listdir(tmp_path) == ["talk.mp4"]


def test_video_writer_audio_source_without_audio(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=25, size=(64, 48), audio_from=clips["silent.mp4"], preset="ultrafast") as writer:
        for index in range(3):
            writer.write(frame(index))
    info = probe_output(path)
    assert info["frame_count"] == 3 and not info["has_audio"]


@pytest.mark.parametrize("error", [RuntimeError("renderer crashed"), KeyboardInterrupt()])
def test_video_writer_leaves_nothing_on_error(clips: dict[str, Path], tmp_path: Path, error: BaseException) -> None:
    with pytest.raises(type(error)):
        with VideoWriter(tmp_path / "out.mp4", fps=25, size=(64, 48), audio_from=clips["av.mp4"]) as writer:
            for index in range(5):
                writer.write(frame(index))
            raise error
    assert os.listdir(tmp_path) == []


def test_video_writer_refusals(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists; pass --overwrite to replace it"):
        with VideoWriter(path, fps=25, size=(64, 48)):
            pass
    assert path.read_bytes() == b"keep me"
    with VideoWriter(path, fps=25, size=(64, 48), overwrite=True, preset="ultrafast") as writer:
        writer.write(frame(0))
    assert probe_output(path)["frame_count"] == 1

    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", fps=25, size=(63, 48))
    with pytest.raises(ValueError, match="preset"):
        VideoWriter(tmp_path / "p.mp4", fps=25, size=(64, 48), preset="fastest")
    with pytest.raises(ValueError, match="expected a uint8 frame of shape"):
        with VideoWriter(tmp_path / "shape.mp4", fps=25, size=(64, 48)) as writer:
            writer.write(np.zeros((64, 48, 3), dtype=np.uint8))
    with pytest.raises(OutputError, match="no frames were written"):
        with VideoWriter(tmp_path / "empty.mp4", fps=25, size=(64, 48)):
            pass
    with pytest.raises(OutputError, match="folder does not exist"):
        with VideoWriter(tmp_path / "missing" / "x.mp4", fps=25, size=(64, 48)):
            pass
    assert os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_video_writer_disk_full(tmp_path: Path) -> None:
    """ffmpeg really hits ENOSPC: the temporary file is a link to /dev/full."""
    target = tmp_path / "out.mp4"
    os.symlink("/dev/full", atomic_module.temp_path_for(target))
    with pytest.raises(OutputError) as caught:
        with VideoWriter(target, fps=25, size=(64, 48), preset="ultrafast") as writer:
            for index in range(10):
                writer.write(frame(index))
    assert str(caught.value) == f"{target}: disk full while writing"
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Video reading


def test_probe_video(clips: dict[str, Path]) -> None:
    info = probe_video(clips["av.mp4"])
    assert (info.fps, info.size, info.frame_count, info.has_audio) == (25.0, (64, 48), 10, True)
    assert info.duration == pytest.approx(0.4)
    silent = probe_video(clips["silent.mp4"])
    assert (silent.frame_count, silent.has_audio) == (50, False)
    rotated = probe_video(clips["rotated.mp4"])  # phone video with rotation metadata
    assert rotated.size == (48, 64)
    assert next(iter_frames(clips["rotated.mp4"])).shape == (64, 48, 3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated.mp4", "not a readable video (corrupt or unsupported format)"),
        ("random.mp4", "not a readable video (corrupt or unsupported format)"),
        ("long_audio.m4a", "has no video stream"),
        ("zero_frames.mp4", "has no frames"),
    ],
)
def test_probe_video_errors(clips: dict[str, Path], name: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        probe_video(clips[name])
    assert str(caught.value) == f"{clips[name]}: {message}"


def test_probe_video_path_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path, message in [(tmp_path / "none.mp4", "no such file"), (tmp_path, "is a folder, expected a video file"),
                          (tmp_path / "empty.mp4", "empty file")]:
        with pytest.raises(InputError) as caught:
            probe_video(path)
        assert str(caught.value) == f"{path}: {message}"
    with pytest.raises(InputError, match="no such file"):
        next(iter_frames(tmp_path / "none.mp4"))


def test_iter_frames_streams_resizes_and_survives_truncation(clips: dict[str, Path], caplog: pytest.LogCaptureFixture,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    frames = iter_frames(clips["av.mp4"], size=(32, 24))
    first = next(frames)
    assert first.shape == (24, 32, 3) and first.dtype == np.uint8
    first[0, 0] = 0  # frames are writable arrays the caller owns
    assert sum(1 for _ in frames) == 9

    info = probe_video(clips["cut.mp4"])
    assert 0 < info.frame_count < 50
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="animate_cli.io.video"):
        decoded = list(iter_frames(clips["cut.mp4"], info=info.__class__(
            info.path, info.fps, info.size, 50, 2.0, False)))
    assert len(decoded) == info.frame_count  # what decodes, no exception
    assert any(f"only {info.frame_count} of 50 frames decoded" in r.getMessage() for r in caplog.records)
    assert capfd.readouterr().err == ""  # ffmpeg's complaints never reach the terminal

    early = iter_frames(clips["silent.mp4"])
    next(early)
    early.close()  # stops ffmpeg without reading the rest
