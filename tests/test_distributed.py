"""Distributed meta-learning: 2 CPU processes under torchrun (gloo) end with identical weights,
equal to rank 0's checkpoint, although each rank trained on different episodes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from test_train import write_photos  # tests/ is on sys.path under pytest

pytest.importorskip("torch.distributed.run")

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys
    import cv2, torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from animate_cli.config import get_preset
    from animate_cli.losses import ContentLoss
    from animate_cli.train.dataset import EpisodeBatchSampler
    from animate_cli.train.loop import TrainConfig, train

    dataset, run, out = sys.argv[1:4]
    config = TrainConfig(steps=3, batch_size=1, shots=2, checkpoint_every=3, sample_every=3, log_every=1)
    # The offline default content loss: the substitute plus dlib's face ResNet, on every rank.
    result = train(dataset, run, get_preset("tiny"), config, content_loss=ContentLoss.from_available(allow_download=False))
    state = result.model.state_dict()
    digest = hashlib.sha256(b"".join(state[k].detach().contiguous().numpy().tobytes() for k in sorted(state)))
    rank = int(os.environ["RANK"])
    first = next(iter(EpisodeBatchSampler(None, 1, 0, rank, int(os.environ["WORLD_SIZE"]))))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"digest": digest.hexdigest(), "step": result.step, "first_episodes": first}, handle)
""")


def state_digest(path: Path) -> str:
    state = load_file(str(path))
    return hashlib.sha256(b"".join(state[k].contiguous().numpy().tobytes() for k in sorted(state))).hexdigest()


def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    from animate_cli.train.dataset import prepare_dataset

    photos = write_photos(tmp_path / "photos", {"Alice": 3, "Bob": 2}, corrupt=False)
    prepare_dataset([photos], tmp_path / "ds", size=32, workers=1)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(script), str(tmp_path / "ds"), str(tmp_path / "run"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["first_episodes"] != ranks[1]["first_episodes"]      # different data per rank
    assert ranks[0]["digest"] == ranks[1]["digest"]                       # DDP kept them in step
    # Only rank 0 wrote the run, and its checkpoint holds those weights.
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000003"
    assert state_digest(checkpoint / "model.safetensors") == ranks[0]["digest"]
    lines = (tmp_path / "run" / "losses.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["world_size"] == 2 and "face ResNet" in run_info["content_loss"]
