"""Make the redistributable samples: a portrait and a short talking driving clip with audio.

    python samples/make_samples.py          # writes samples/portrait.jpg and samples/drive.mp4

- ``portrait.jpg``: a crop of scikit-image's ``astronaut`` photo (Eileen Collins, NASA; public domain).
- ``drive.mp4``: the same photo, zoomed differently, animated by animate-face's own warp renderer
  from a scripted landmark motion: the mouth follows the loudness of a sentence spoken by espeak-ng
  (GPL speech synthesiser; its output audio is ours to redistribute), the eyes blink every 2.4 s and
  the head sways a little. 256x256, 25 fps, AAC audio. Everything here is made by this script.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from animate_cli.io.images import save_image
from animate_cli.io.video import VideoWriter
from animate_cli.landmarks import create_backend, detect_photo_landmarks
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.render.warp import FaceWarper

HERE = Path(__file__).resolve().parent
TEXT = "Hello! I am a sample driving video, made by animate face itself. Watch my mouth move."
FPS = 25
SIZE = 256


def speech(path: Path) -> np.ndarray:
    """Speak TEXT into a WAV file; return the loudness per video frame in [0, 1]."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng is needed to make the sample audio (apt-get install espeak-ng)")
    subprocess.run([espeak, "-s", "150", "-w", str(path), TEXT], check=True)
    with wave.open(str(path)) as wav:
        rate, samples = wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
    hop = rate // FPS
    frames = len(samples) // hop
    rms = np.sqrt(np.mean(samples[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2, axis=1))
    loudness = np.clip(rms / np.percentile(rms, 95), 0, 1)
    return np.convolve(loudness, np.ones(3) / 3, mode="same")


def scripted_points(points: np.ndarray, opening: float, blink: float, angle: float, shift: np.ndarray) -> np.ndarray:
    """Move the source landmarks: open the mouth, close the eyes by ``blink``, turn and shift the head."""
    out = points.copy()
    height = points[:, 1].max() - points[:, 1].min()
    drop = opening * 0.12 * height
    out[[56, 57, 58, 65, 66, 67], 1] += drop                           # lower lip
    out[[55, 59], 1] += 0.7 * drop
    out[5:12, 1] += drop * np.array([0.3, 0.6, 0.85, 1.0, 0.85, 0.6, 0.3])  # chin follows
    out[[61, 62, 63], 1] -= 0.15 * drop                                # upper inner lip
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        out[upper] += blink * 0.9 * (points[lower] - points[upper])
    centre = points.mean(axis=0)
    rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    return (out @ rotation[:, :2].T + rotation[:, 2] + shift).astype(np.float32)


def main() -> None:
    photo = data.astronaut()
    backend = create_backend("dlib")
    points = detect_photo_landmarks(backend, photo)

    # The portrait: head and shoulders, 288x352.
    face = crop_from_landmarks(points, 352, scale=2.6)
    portrait = face.crop_image(photo)[:, 32:320]
    save_image(HERE / "portrait.jpg", portrait)

    # The driver: a tighter crop of the same photo, animated by the warp renderer.
    crop = crop_from_landmarks(points, SIZE, scale=2.0)
    warper = FaceWarper(crop.crop_image(photo), crop.points_to_crop(points))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        loudness = speech(wav)
        count = len(loudness) + FPS // 2
        loudness = np.pad(loudness, (0, count - len(loudness)))
        rng = np.random.default_rng(0)
        with VideoWriter(HERE / "drive.mp4", FPS, (SIZE, SIZE), crf=23, audio_from=wav, overwrite=True) as writer:
            for index in range(count):
                t = index / FPS
                phase = (t % 2.4) / 0.2
                blink = float(np.clip(1 - abs(phase - 1), 0, 1)) if phase < 2 else 0.0
                angle = 3.0 * np.sin(2 * np.pi * t / 3.1)
                shift = np.array([4 * np.sin(2 * np.pi * t / 4.3), 2 * np.sin(2 * np.pi * t / 2.7)])
                opening = loudness[index] * (0.8 + 0.2 * rng.random())
                target = scripted_points(crop.points_to_crop(points), opening, blink, angle, shift)
                writer.write(warper.warp(target))
    print(f"wrote {HERE / 'portrait.jpg'} and {HERE / 'drive.mp4'} ({count} frames, {count / FPS:.1f} s)")


if __name__ == "__main__":
    main()
