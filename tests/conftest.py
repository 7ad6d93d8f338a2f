"""Shared fixtures: tiny checkpoints, short clips made from the samples, real data when present."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SHARED = REPO.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    # As in the CLI's entry point: OpenCV's threads fight torch's on small machines.
    cv2.setNumThreads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """What animate_cli caches (the face network, the renderer's ONNX graphs) goes to a folder of this
    session, never to the user's ~/.cache (subprocesses inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANIMATE_FACE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    return SAMPLES / "portrait.jpg"


@pytest.fixture(scope="session")
def sample_driver() -> Path:
    return SAMPLES / "drive.mp4"


def cut_clip(source: Path, path: Path, frames: int, fps: float = 25.0) -> Path:
    """The first ``frames`` frames of ``source`` (a 25 fps clip), with its audio, written to ``path``."""
    from animate_cli.io.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(source), "-frames:v", str(frames), "-t", f"{frames / fps}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def short_driver(tmp_path_factory: pytest.TempPathFactory, sample_driver: Path) -> Path:
    """The first 0.8 s (20 frames at 25 fps) of the sample driver, with its audio."""
    return cut_clip(sample_driver, tmp_path_factory.mktemp("driver") / "short.mp4", 20)


def make_batch_people(folder: Path, portrait: Path) -> Path:
    """A batch folder of five people, two of them bad: ann.jpg, bob.jpg, cat/ (two photos) animate;
    wall.png (no face) and broken.jpg (not an image) fail."""
    import numpy as np

    folder.mkdir()
    for name in ("ann.jpg", "bob.jpg", "cat/a.jpg", "cat/b.jpg"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(portrait.read_bytes())
    cv2.imwrite(str(folder / "wall.png"), np.full((120, 120, 3), 200, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def make_checkpoint(folder: Path, preset: str = "tiny", guidance: str = "warp", seed: int = 0,
                    blend_region: str = "all") -> Path:
    from animate_cli.config import get_preset
    from animate_cli.models import TalkingHeadModel

    torch.manual_seed(seed)
    config = get_preset(preset, guidance=guidance, blend_region=blend_region)
    TalkingHeadModel(config).save_pretrained(folder, training={"kind": "test"})
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint (warp guidance), as `animate-face init` would write it."""
    return make_checkpoint(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="session")
def tiny_paper_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint of the paper's generator (no warp guidance)."""
    return make_checkpoint(tmp_path_factory.mktemp("weights") / "tiny-paper", guidance="none")


@pytest.fixture(scope="session")
def tiny_region_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny warp-guided checkpoint that blends only in the mouth_border region."""
    return make_checkpoint(tmp_path_factory.mktemp("weights") / "tiny-region", blend_region="mouth_border")


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = SHARED / "realdata"
    if not path.is_dir():
        pytest.skip("../shared/realdata is not here (it is not shipped with the project)")
    return path


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """CLI tests configure the root logger as the entry point does; undo it for the next test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
