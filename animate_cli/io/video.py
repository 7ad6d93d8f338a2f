"""Streaming video in and out through the ffmpeg binary that ships with imageio-ffmpeg.

Reading yields one uint8 RGB frame at a time (memory does not grow with the length of the video);
writing streams frames to ffmpeg's stdin and produces H.264 yuv420p MP4, with the driver's audio
muxed in a second pass. Outputs are written to a temporary file and renamed, so a failed or
interrupted run never leaves a broken video behind.

ffmpeg is run directly (not through ``imageio_ffmpeg.read_frames`` / ``write_frames``): those let
ffmpeg's stderr reach the terminal or log warnings of their own, and the writer never checks
ffmpeg's exit status, so a full disk would go unnoticed. ffmpeg's stderr goes to a temporary
file instead, and is read only to explain a failure.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import cv2
import numpy as np

from animate_cli.config import DEFAULT_CRF, X264_PRESET
from animate_cli.errors import InputError, OutputError
from animate_cli.io.atomic import DISK_FULL_MESSAGE, AtomicOutput, temp_path_for
from animate_cli.io.images import check_input_file

logger = logging.getLogger(__name__)

NOT_A_VIDEO = "not a readable video (corrupt or unsupported format)"
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
AUDIO_BITRATE = "192k"


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg  # deferred: importing the package must not look for binaries

    return imageio_ffmpeg.get_ffmpeg_exe()


# --------------------------------------------------------------------------------------------
# Parsing ffmpeg's stderr (imageio-ffmpeg ships no ffprobe)


@dataclass
class _Stream:
    kind: str  # "Video", "Audio", "Subtitle", "Data", "Attachment"
    codec: str
    pix_fmt: str | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    attached_pic: bool = False


@dataclass
class _Header:
    inputs: list[_Stream] = field(default_factory=list)
    outputs: list[_Stream] = field(default_factory=list)
    duration: float | None = None  # container duration, seconds

    @property
    def video(self) -> _Stream | None:
        """The first real video stream of the input (cover art excluded)."""
        return next((s for s in self.inputs if s.kind == "Video" and not s.attached_pic), None)

    @property
    def has_audio(self) -> bool:
        return any(s.kind == "Audio" for s in self.inputs)


_STREAM_LINE = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")
_DURATION_LINE = re.compile(r"^\s*Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE_TOKEN = re.compile(r"^(\d+)x(\d+)\b")
_RATE_TOKEN = re.compile(r"^(\d+(?:\.\d+)?)(k?) (fps|tbr)$")


def _strip_parentheses(text: str) -> str:
    """Drop (nested) parenthesised groups, whose commas would break the comma-separated fields."""
    previous = None
    while previous != text:
        previous, text = text, re.sub(r"\([^()]*\)", "", text)
    return text


def _parse_stream(kind: str, description: str) -> _Stream:
    stream = _Stream(kind=kind, codec="", attached_pic="(attached pic)" in description)
    tokens = [token.strip() for token in _strip_parentheses(description).split(",")]
    stream.codec = tokens[0].split(" ")[0] if tokens and tokens[0] else ""
    if kind != "Video":
        return stream
    rates: dict[str, float] = {}
    for index, token in enumerate(tokens[1:], start=1):
        if (match := _SIZE_TOKEN.match(token)) is not None:
            stream.size = (int(match.group(1)), int(match.group(2)))
        elif (match := _RATE_TOKEN.match(token)) is not None:
            rates[match.group(3)] = float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
        elif index == 1 and " " not in token and token != "none":
            stream.pix_fmt = token
    stream.fps = rates.get("fps") or rates.get("tbr")
    return stream


def _parse_header(stderr: str) -> _Header:
    header = _Header()
    section: list[_Stream] | None = None
    for line in stderr.splitlines():
        if line.startswith("Input #"):
            section = header.inputs
        elif line.startswith("Output #"):
            section = header.outputs
        elif line.startswith("Stream mapping:"):
            section = None
        elif (match := _DURATION_LINE.match(line)) is not None and section is header.inputs:
            hours, minutes, seconds = match.groups()
            header.duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        elif section is not None and (match := _STREAM_LINE.match(line)) is not None:
            section.append(_parse_stream(match.group(1), match.group(2)))
    return header


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


@dataclass
class _ProbeRun:
    returncode: int
    header: _Header
    frames: int | None
    stderr: str


def _run_probe(path: Path, count_frames: bool) -> _ProbeRun:
    """Run ffmpeg on the first real video stream; decode all frames when ``count_frames``.

    Decoding (not just counting packets) gives the exact number of frames ``iter_frames`` will
    yield, also for damaged files. ``-fps_mode passthrough`` in both keeps the two counts equal.
    """
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:V:0?"]
    if not count_frames:
        # One decoded frame is enough for ffmpeg to print the output stream, whose size has the
        # rotation of phone videos applied.
        command += ["-frames:v", "1"]
    command += ["-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    completed = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, check=False, start_new_session=True
    )
    stderr = completed.stderr.decode("utf-8", errors="replace")
    frames = None
    for line in completed.stdout.decode("ascii", errors="replace").splitlines():
        if line.startswith("frame="):
            frames = int(line.split("=", 1)[1].strip() or 0)
    return _ProbeRun(completed.returncode, _parse_header(stderr), frames, stderr)


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds. ``size`` is (width, height) as displayed (rotation metadata applied)."""

    path: Path
    fps: float
    size: tuple[int, int]
    frame_count: int
    duration: float
    has_audio: bool


def _displayed_size(header: _Header) -> tuple[int, int] | None:
    for stream in header.outputs:
        if stream.kind == "Video" and stream.size is not None:
            return stream.size
    video = header.video
    return None if video is None else video.size


def probe_video(path: str | Path) -> VideoInfo:
    """Describe a video file, with its exact frame count (all frames are decoded once).

    Raises InputError (with the path) when the file is missing, a folder, empty, not a readable
    video, has no video stream (an audio file) or has no frames.
    """
    path = Path(path).expanduser()
    check_input_file(path, "a video file")
    run = _run_probe(path, count_frames=True)
    header = run.header
    if not header.inputs:
        raise InputError(NOT_A_VIDEO, path)
    video = header.video
    if video is None:
        raise InputError("has no video stream", path)
    size = _displayed_size(header)
    if not run.frames or size is None:
        raise InputError("has no frames", path)
    if run.returncode != 0:
        logger.warning("%s: ffmpeg reported errors (%s); using the %d frames that decode",
                       path, _last_lines(run.stderr, 1), run.frames)
    fps = video.fps
    if not fps or fps <= 0:
        fps = run.frames / header.duration if header.duration else 25.0
        logger.warning("%s: no frame rate in the file; assuming %.3f fps", path, fps)
    elif header.duration and run.frames < header.duration * fps - 2:
        # The container promises more than decodes: a cut-off download or copy.
        logger.warning("%s: the file says %.2f s but only %d frames (%.2f s) decode; truncated?",
                       path, header.duration, run.frames, run.frames / fps)
    return VideoInfo(
        path=path,
        fps=float(fps),
        size=size,
        frame_count=int(run.frames),
        duration=run.frames / fps,
        has_audio=header.has_audio,
    )


def has_audio_stream(path: str | Path) -> bool:
    """Whether a media file has at least one audio stream (reads the header only)."""
    path = Path(path).expanduser()
    check_input_file(path, "a media file")
    return _run_probe(path, count_frames=False).header.has_audio


def iter_frames(
    path: str | Path,
    size: tuple[int, int] | None = None,
    *,
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as uint8 RGB arrays (H, W, 3).

    ``size`` (width, height) resizes the frames in ffmpeg. Pass ``info`` (from probe_video) to
    skip a header probe and to get a warning when fewer frames decode than were counted. A video
    that ends early (truncated, damaged) yields the frames that decode and stops; ffmpeg's own
    messages never reach the terminal. Closing the iterator early stops ffmpeg.
    """
    path = Path(path).expanduser()
    if info is None:
        check_input_file(path, "a video file")
        header = _run_probe(path, count_frames=False).header
        if not header.inputs:
            raise InputError(NOT_A_VIDEO, path)
        if header.video is None:
            raise InputError("has no video stream", path)
        native = _displayed_size(header)
        if native is None:
            raise InputError("has no frames", path)
        expected = None
    else:
        native, expected = info.size, info.frame_count
    width, height = size if size is not None else native
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")

    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
               "-map", "0:V:0", "-fps_mode", "passthrough"]
    if (width, height) != tuple(native):
        flags = "area" if width * height < native[0] * native[1] else "bicubic"
        command += ["-vf", f"scale={width}:{height}:flags={flags}"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    yielded = 0
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file,
            start_new_session=True,  # Ctrl-C reaches Python, which stops ffmpeg in order
        )
        assert process.stdout is not None
        finished = False
        try:
            while True:
                buffer = bytearray(frame_bytes)  # a fresh writable buffer per frame: callers may keep frames
                filled = _read_exactly(process.stdout, buffer)
                if filled < frame_bytes:
                    if filled:
                        logger.warning("%s: the last frame is incomplete (file truncated?); dropped it", path)
                    break
                yield np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
                yielded += 1
            finished = True
        finally:
            _stop(process)
            if finished:
                process.wait()
                stderr_file.seek(0)
                messages = stderr_file.read().decode("utf-8", errors="replace")
                if process.returncode != 0 or (expected is not None and yielded < expected):
                    detail = f" ({_last_lines(messages, 1)})" if messages.strip() else ""
                    if expected is not None and yielded < expected:
                        logger.warning("%s: only %d of %d frames decoded%s", path, yielded, expected, detail)
                    else:
                        logger.warning("%s: ffmpeg stopped with an error after %d frames%s", path, yielded, detail)


def read_frame_at(path: str | Path, seconds: float, height: int | None = None) -> np.ndarray | None:
    """The frame shown at ``seconds`` (uint8 RGB), by a seek (ffmpeg decodes from the key frame
    before it, not the whole video), scaled to ``height`` pixels when given; None when nothing decodes there."""
    path = Path(path).expanduser()
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-ss", f"{max(seconds, 0.0):.4f}",
               "-i", str(path), "-map", "0:V:0", "-frames:v", "1"]
    if height is not None:
        command += ["-vf", f"scale=-2:{int(height)}:flags=area"]
    command += ["-f", "image2pipe", "-vcodec", "png", "-compression_level", "1", "-"]
    completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                               start_new_session=True)
    if completed.returncode != 0 or not completed.stdout:
        return None
    image = cv2.imdecode(np.frombuffer(completed.stdout, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else np.ascontiguousarray(image[..., ::-1])


def _read_exactly(stream: IO[bytes], buffer: bytearray) -> int:
    """Fill ``buffer`` from ``stream``; return how many bytes were read (less only at end of stream)."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def _stop(process: subprocess.Popen) -> None:
    """Stop an ffmpeg process that may still be running, and close its pipes."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except BrokenPipeError:
                pass  # ffmpeg already gone: nothing left to flush
    if process.poll() is None:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------------------------
# Writing


def even_size(width: int, height: int) -> tuple[int, int]:
    """Round a frame size down to even numbers (yuv420p needs them), at least 2x2."""
    return max(2, int(width) - int(width) % 2), max(2, int(height) - int(height) % 2)


def fps_fraction(fps: float) -> Fraction:
    """A frame rate as an exact fraction: 25 -> 25/1, 29.97 -> 30000/1001, 12.5 -> 25/2."""
    if abs(fps - round(fps)) < 1e-3:
        return Fraction(round(fps))
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)  # 23.976, 29.97, 59.94
    if abs(float(ntsc) - fps) < 2e-3:
        return ntsc
    return Fraction(fps).limit_denominator(1001)


def _ffmpeg_failure(stderr: str, path: Path, what: str) -> OutputError:
    """Turn a failed ffmpeg run into an OutputError, recognising a full disk."""
    if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
        return OutputError(DISK_FULL_MESSAGE, path)
    detail = _last_lines(stderr, 2) or "no message"
    return OutputError(f"ffmpeg failed while {what}: {detail}", path)


class VideoWriter:
    """Write an H.264 (libx264, yuv420p) MP4 frame by frame, atomically.

    ::

        with VideoWriter("out.mp4", fps=25, size=(256, 256), audio_from=driver) as writer:
            for frame in frames:
                writer.write(frame)

    ``size`` is (width, height) and must be even (see :func:`even_size`). When ``audio_from`` has an
    audio stream, it is muxed in (AAC) after the frames, cut to the video's duration; a shorter
    audio track leaves the video at full length. The file appears at ``path`` only when the block
    ends without error; on an error or Ctrl-C nothing is left behind, temporary files included.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size: tuple[int, int],
        crf: int = DEFAULT_CRF,
        audio_from: str | Path | None = None,
        overwrite: bool = False,
        preset: str = X264_PRESET,
    ):
        width, height = (int(v) for v in size)
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"video size must be even and at least 2x2, got {width}x{height}; use even_size()")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be between 0 and 51, got {crf}")
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {preset!r}; choose from {', '.join(X264_PRESETS)}")
        self.path = Path(path).expanduser()
        self.fps = float(fps)
        self.size = (width, height)
        self.crf = int(crf)
        self.audio_from = None if audio_from is None else Path(audio_from).expanduser()
        self.overwrite = overwrite
        self.preset = preset
        self.frames_written = 0
        self._output: AtomicOutput | None = None
        self._video_temp: Path | None = None
        self._process: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> VideoWriter:
        if self.audio_from is not None:
            check_input_file(self.audio_from, "a media file")
        self._output = AtomicOutput(self.path, self.overwrite)
        # With audio, frames go to a second temporary file first, muxed into the final one at the end.
        if self.audio_from is not None:
            self._video_temp = temp_path_for(self.path, "video")
        target = self._video_temp or self._output.temp_path
        width, height = self.size
        command = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", str(fps_fraction(self.fps)), "-i", "-",
            "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(target),
        ]
        self._output.__enter__()
        try:
            self._stderr = tempfile.TemporaryFile()
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                start_new_session=True,  # Ctrl-C reaches Python, which then cleans up in order
            )
        except BaseException:  # ffmpeg did not start, or Ctrl-C came now: leave no temporary file
            self._cleanup()
            self._output.discard()
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame of shape (height, width, 3)."""
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("VideoWriter.write called outside its with-block")
        width, height = self.size
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (height, width, 3):
            raise ValueError(
                f"expected a uint8 frame of shape ({height}, {width}, 3), got "
                f"{getattr(frame, 'dtype', type(frame))} {getattr(frame, 'shape', '')}"
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError as error:  # ffmpeg exited: find out why
            self._process.wait()
            raise _ffmpeg_failure(self._read_stderr(), self.path, "encoding") from error
        self.frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._output is not None
        if exc_type is not None:
            self._cleanup()
            return self._output.__exit__(exc_type, exc, tb)  # discards; maps a full disk
        try:
            self._finish(self._output.temp_path)
        except BaseException:
            self._cleanup()
            self._output.discard()
            raise
        self._cleanup()
        self._output.commit()
        return False

    def _finish(self, final_temp: Path) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg already exited; its status below tells why
        self._process.wait()
        if self._process.returncode != 0:
            raise _ffmpeg_failure(self._read_stderr(), self.path, "encoding")
        if self.frames_written == 0:
            raise OutputError("no frames were written; nothing to save", self.path)
        if self._video_temp is None:
            return
        assert self.audio_from is not None
        if not has_audio_stream(self.audio_from):
            logger.info("%s has no audio stream; writing the video without sound", self.audio_from)
            self._video_temp.replace(final_temp)
            return
        duration = self.frames_written / float(fps_fraction(self.fps))
        # -t with the video's duration cuts longer audio; unlike -shortest it keeps the whole
        # video when the audio is shorter.
        command = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-i", str(self._video_temp), "-i", str(self.audio_from),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", AUDIO_BITRATE,
            "-t", f"{duration:.6f}", "-movflags", "+faststart", str(final_temp),
        ]
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            check=False, start_new_session=True,
        )
        if completed.returncode != 0:
            raise _ffmpeg_failure(completed.stderr.decode("utf-8", errors="replace"), self.path, "adding the audio")

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def _cleanup(self) -> None:
        """Stop ffmpeg if it still runs; delete the intermediate video; close the stderr file."""
        if self._process is not None:
            _stop(self._process)
            self._process = None
        if self._video_temp is not None:
            try:
                self._video_temp.unlink(missing_ok=True)
            except OSError as error:
                logger.warning("could not delete the temporary file %s: %s", self._video_temp, error)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def probe_output(path: str | Path) -> dict:
    """Describe a written video: codec, pix_fmt, width, height, fps, frame_count, has_audio,
    audio_codec and duration (container duration, seconds). Used to check outputs in tests."""
    path = Path(path).expanduser()
    check_input_file(path, "a video file")
    run = _run_probe(path, count_frames=True)
    video = run.header.video
    if video is None:
        raise InputError("has no video stream" if run.header.inputs else NOT_A_VIDEO, path)
    audio = next((s for s in run.header.inputs if s.kind == "Audio"), None)
    width, height = video.size or (0, 0)
    return {
        "codec": video.codec,
        "pix_fmt": video.pix_fmt,
        "width": width,
        "height": height,
        "fps": video.fps,
        "frame_count": run.frames or 0,
        "has_audio": audio is not None,
        "audio_codec": None if audio is None else audio.codec,
        "duration": run.header.duration,
    }
