"""Meta-learning: prepared datasets and episodes (``dataset``), the training loop with
checkpoints, resume, samples, loss log, divergence guard and DDP (``loop``); the ``prepare`` / ``train``
commands live in ``animate_cli.commands.train``.

Heavy modules load on first use: ``from animate_cli.train import train`` imports torch, but
``import animate_cli.train`` alone does not.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "prepare_dataset": ".dataset", "PrepareReport": ".dataset", "EpisodeDataset": ".dataset",
    "FrameStore": ".dataset", "load_frames": ".dataset", "read_index": ".dataset", "split_people": ".dataset",
    "augment_single_photo": ".dataset",
    "train": ".loop", "TrainConfig": ".loop", "TrainResult": ".loop", "DivergenceError": ".loop",
    "read_losses": ".loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
