"""Meta-learning (paper, section 3.2): the embedder E, generator G and discriminator D trained
together on episodes of many people.

Each step, for a batch of episodes (K shots + a target of one training video i):

* E embeds the K shots; their mean is the person embedding e_i; G draws the target from its
  landmark image with psi = P e_i (and, with warp guidance, the nearest shot warped to it).
* G/E update (Adam, lr 5e-5): ``content_weight * L_CNT + L_ADV + match_weight * L_MCH`` with
  L_ADV = hinge generator loss + ``feature_matching_weight`` * feature matching on D's blocks,
  and L_MCH = L1(W_i, e_i), W_i held constant. D is frozen here. With warp guidance also
  ``raw_content_weight`` * L_CNT of the generator's unblended image (see below).
* D update (Adam, lr 2e-4): hinge loss on the real target and the (detached) generated frame,
  both projected on W_i + w0, plus ``match_weight`` * L1(W_i, e_i) with e_i held constant. W is
  an ordinary parameter of D, one column per training video, so under DistributedDataParallel
  its gradients are all-reduced like any other.

Two choices the paper leaves open, made so that meta-learning and fine-tuning agree and the
embedder cannot die:

* W_i starts as the embedding e_i of the first episode of video i that training sees (columns
  are filled lazily, on every rank alike: the batch's embeddings are all-gathered). With W
  randomly initialised near 0, the match term (weight 80) drove E's ReLU output to zero within
  ~10 steps at preset small: psi = P e was then 0, AdaIN scales 0, and every generated frame
  one flat colour (the divergence guard stopped the run; measured on LFW at 64 px).
* L_MCH pulls both ways (e_i towards W_i in the G/E update, W_i towards e_i in the D update),
  so W_i stays close to e_i: fine-tuning initialises D's vector as w0 + e_new, which is what
  a column of W then is.

With warp guidance (an extension, not in the paper) the frame is ``mask * generated + (1 - mask)
* warped`` with the mask starting at 0.02, so the content loss reaches the generated image only
through that 2% and it learned ~50x slower than without guidance: after 250 steps at the
paper's rates the mask was still 0.020 everywhere and the blend no better than the warp. The
extra content term on ``generated`` itself lets the network learn an image at full speed, and
the mask learns where that image beats the warp.

Run folder::

    RUN/run.json                          dataset, model and training config, held-out people,
                                          the training videos (W's columns, in order)
    RUN/losses.jsonl                      one line per ``log_every`` steps
    RUN/samples/step-000250.png           rows: shots | landmark image | [warped | unblended] |
                                          generated | target
    RUN/checkpoints/step-000500/          config.json, model.safetensors, README.md (loadable with
                                          TalkingHeadModel.from_pretrained), trainer_state.json and
                                          trainer_state.safetensors (optimisers, step, RNG states)
    RUN/last -> checkpoints/step-000500   the latest good checkpoint

Resuming restores weights, optimiser states, the GradScaler, the divergence guard, the step and
the RNG states; the data order is a function of (seed, step) (see ``dataset.episode_batches``),
so a resumed run reproduces the losses of an uninterrupted one.

Divergence guard: a NaN or infinite loss, a loss above ``explode_factor`` times its running
median for ``explode_patience`` consecutive steps, or generated frames of a single colour in
every image of the batch for ``collapse_patience`` consecutive steps stop the run with
DivergenceError; no checkpoint is written after that, so ``RUN/last`` stays the last good one.
One-step spikes are tolerated (and no checkpoint is written during one): at preset lite without
guidance, D's hinge loss jumped from ~2 to 66 for a single logged step (real and fake scores both
+65, i.e. a projection term W_i + w0, not D telling them apart) and was back under 20 by the next
log line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import FORMAT_VERSION, ModelConfig
from ..errors import DivergenceError, InputError, OutputError, UsageError, WeightsError
from ..losses import ContentLoss, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss, match_loss
from ..models import TalkingHeadModel
from ..tensors import tensor_to_images
from .dataset import EpisodeBatchSampler, EpisodeDataset, load_frames, split_people

log = logging.getLogger(__name__)

RUN_NAME = "run.json"
LOSSES_NAME = "losses.jsonl"
LAST_NAME = "last"
TRAINER_STATE_JSON = "trainer_state.json"
TRAINER_STATE_TENSORS = "trainer_state.safetensors"
SAMPLE_ROWS = 4
# TrainConfig fields that may change when a run is resumed (they do not change its numbers).
RESUME_MUTABLE = frozenset({"steps", "checkpoint_every", "sample_every", "log_every", "num_workers",
                            "keep_checkpoints", "device", "explode_factor", "explode_patience", "collapse_std",
                            "collapse_patience"})
COLUMNS_KEY = "video_columns_initialised"
LOSS_NAMES = ("loss_g", "content", "adversarial", "feature_matching", "match", "loss_d", "real_score", "fake_score")


@dataclass(frozen=True)
class TrainConfig:
    """Meta-learning settings. ``batch_size`` is episodes per process and step; the paper's
    learning rates and loss weights are the defaults."""

    steps: int = 10000
    batch_size: int = 4
    shots: int = 8
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-4
    feature_matching_weight: float = 10.0
    match_weight: float = 80.0
    content_weight: float = 1.0
    # Warp guidance only: content loss on the generator's unblended image (see forward_parts).
    raw_content_weight: float = 1.0
    checkpoint_every: int = 500
    sample_every: int = 250
    log_every: int = 10
    seed: int = 0
    amp: bool = True
    holdout: int = 0
    num_workers: int = 0
    keep_checkpoints: int = 3
    explode_factor: float = 50.0
    explode_patience: int = 3
    collapse_std: float = 0.02
    collapse_patience: int = 3
    device: str = "auto"
    # Episode weights by kind ({"video": .., "photos": .., "single": ..}); None = uniform over
    # training videos (see ``dataset.EpisodeDataset``).
    mix: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "shots", "checkpoint_every", "sample_every", "log_every",
                     "collapse_patience", "explode_patience"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        for name in ("holdout", "num_workers", "keep_checkpoints", "seed"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        if self.lr_generator <= 0 or self.lr_discriminator <= 0:
            raise UsageError("learning rates must be positive")
        if min(self.feature_matching_weight, self.match_weight, self.content_weight, self.raw_content_weight) < 0:
            raise UsageError("loss weights must be >= 0")
        if self.explode_factor <= 1 or self.collapse_std < 0:
            raise UsageError("explode factor must be > 1 and collapse std >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.mix is not None:
            from .dataset import check_mix

            check_mix(self.mix)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What ``train`` did: the final step, its losses and the last checkpoint."""

    run_dir: Path
    step: int
    start_step: int
    checkpoint: Path | None
    first_losses: dict[str, float] | None
    last_losses: dict[str, float] | None
    seconds: float
    heldout_people: list[str]
    content_loss: str
    model: TalkingHeadModel = field(repr=False)


# ----------------------------------------------------------------------------------------------
# Distributed


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK set):
    NCCL on CUDA, gloo on CPU. A plain launch is a group of one."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    if world_size > 1:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, world_size, local_rank, torch_device, owns)


class EmbedAndGenerate(nn.Module):
    """E and G in one module, so one DistributedDataParallel wraps the whole G/E update."""

    def __init__(self, embedder: nn.Module, generator: nn.Module):
        super().__init__()
        self.embedder = embedder
        self.generator = generator

    def forward(self, shot_images: torch.Tensor, shot_landmarks: torch.Tensor, target_landmarks: torch.Tensor,
                warped: torch.Tensor | None, region: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, K, 3, H, W) shots and landmark images -> generated targets (B, 3, H, W), the
        generator's unblended images (the same tensor without warp guidance) and the
        per-episode embeddings e_i (B, emb), the mean of E over the K shots."""
        batch, shots = shot_images.shape[:2]
        embeddings = self.embedder(shot_images.flatten(0, 1), shot_landmarks.flatten(0, 1))
        embeddings = embeddings.view(batch, shots, -1).mean(dim=1)
        fake, _, raw = self.generator.forward_parts(target_landmarks, self.generator.project(embeddings), warped,
                                                  region)
        return fake, raw, embeddings


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` inside the block (gradients still flow through it)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# Divergence guard


class DivergenceGuard:
    """Watches the losses and the generated frames; ``check`` returns why training diverged, or None."""

    WATCHED = ("loss_g", "content", "loss_d")

    def __init__(self, explode_factor: float = 50.0, collapse_std: float = 0.02, collapse_patience: int = 3,
                 window: int = 100, warmup: int = 10, explode_patience: int = 3):
        self.explode_factor, self.collapse_std, self.collapse_patience = explode_factor, collapse_std, collapse_patience
        self.explode_patience = explode_patience
        self.window, self.warmup = window, warmup
        self.history: dict[str, list[float]] = {name: [] for name in self.WATCHED}
        self.collapsed_steps = 0
        self.exploded_steps = 0

    def check(self, losses: dict[str, float], image_std: float) -> str | None:
        """``image_std``: the largest (over the batch) per-image colour spread, i.e. the max over
        channels of the standard deviation over pixels; a one-colour frame has 0."""
        bad = [name for name, value in losses.items() if not np.isfinite(value)]
        if bad:
            return f"{bad[0]} is {losses[bad[0]]}"
        explosion = None
        for name in self.WATCHED:
            history = self.history[name]
            value = losses[name]
            if len(history) >= self.warmup:
                median = abs(float(np.median(history)))
                # The floor keeps losses that hover near 0 (a winning D's hinge) from tripping it.
                if abs(value) > self.explode_factor * max(median, 1.0) and explosion is None:
                    explosion = (f"{name} exploded to {value:.4g} ({self.explode_factor:g}x above its running "
                                 f"median {median:.4g})")
            history.append(value)
            del history[:-self.window]
        self.exploded_steps = self.exploded_steps + 1 if explosion else 0
        if explosion and self.exploded_steps >= self.explode_patience:
            return explosion + (f" for {self.exploded_steps} steps" if self.exploded_steps > 1 else "")
        self.collapsed_steps = self.collapsed_steps + 1 if image_std < self.collapse_std else 0
        if self.collapsed_steps >= self.collapse_patience:
            return (f"generated frames collapsed to a single colour (colour spread {image_std:.4f} < "
                    f"{self.collapse_std:g} for {self.collapsed_steps} steps)")
        return None

    @property
    def unsettled(self) -> bool:
        """A loss spike or one-coloured frames right now (not yet long enough to stop)."""
        return self.collapsed_steps > 0 or self.exploded_steps > 0

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "collapsed_steps": self.collapsed_steps, "exploded_steps": self.exploded_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {name: [float(v) for v in state["history"].get(name, [])] for name in self.WATCHED}
        self.collapsed_steps = int(state["collapsed_steps"])
        self.exploded_steps = int(state.get("exploded_steps", 0))


class VideoColumns:
    """Fills W's column of a training video with that video's embedding the first time the
    video appears in a batch (see the module docstring). Every rank applies the same updates."""

    def __init__(self, discriminator: nn.Module, ctx: DistributedContext):
        self.discriminator = discriminator
        self.ctx = ctx
        self.initialised = torch.zeros(discriminator.W.shape[1], dtype=torch.bool)

    @torch.no_grad()
    def update(self, video: torch.Tensor, embeddings: torch.Tensor) -> int:
        """Set the unseen columns among ``video`` (B,) to ``embeddings`` (B, emb); returns how many."""
        video, embeddings = video.detach(), embeddings.detach().float()
        if self.ctx.distributed:
            videos = [torch.empty_like(video) for _ in range(self.ctx.world_size)]
            gathered = [torch.empty_like(embeddings) for _ in range(self.ctx.world_size)]
            dist.all_gather(videos, video)
            dist.all_gather(gathered, embeddings)
            video, embeddings = torch.cat(videos), torch.cat(gathered)
        W = self.discriminator.W
        count = 0
        for j, v in enumerate(video.cpu().tolist()):
            if not self.initialised[v]:        # a video twice in the batch: its first episode wins
                W[:, v] = embeddings[j].to(W.dtype)
                self.initialised[v] = True
                count += 1
        return count


def colour_spread(images: torch.Tensor) -> torch.Tensor:
    """Per image (N, 3, H, W): the max over channels of the standard deviation over pixels."""
    return images.detach().float().flatten(2).std(dim=2).amax(dim=1)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer,
                       tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Optimiser state dict -> JSON (param groups, scalar state) + tensors named ``name/param/key``."""
    state_dict = optimizer.state_dict()
    state_json: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        state_json[str(param_id)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{param_id}/{key}"] = value.detach().to("cpu").contiguous().clone()
                state_json[str(param_id)][key] = {"tensor": f"{name}/{param_id}/{key}"}
            else:
                state_json[str(param_id)][key] = {"value": value}
    return {"param_groups": state_dict["param_groups"], "state": state_json}


def _unflatten_optimizer(data: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    try:
        for param_id, entries in data["state"].items():
            state[int(param_id)] = {key: tensors[entry["tensor"]] if "tensor" in entry else entry["value"]
                                    for key, entry in entries.items()}
        return {"state": state, "param_groups": data["param_groups"]}
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"optimiser state does not match its tensors ({error})", path) from error


def _atomic_symlink(target: str, link: Path) -> None:
    temporary = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def save_checkpoint(run_dir: Path, step: int, model: TalkingHeadModel, optimizers: dict[str, torch.optim.Optimizer],
                    scaler: torch.amp.GradScaler | None, trainer: dict[str, Any], training_record: dict[str, Any],
                    keep: int = 0, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``checkpoints/step-XXXXXX`` (through a temporary folder, renamed when complete) and
    point ``last`` at it; keep the newest ``keep`` checkpoints (0 = all)."""
    checkpoints = run_dir / "checkpoints"
    final = checkpoints / f"step-{step:06d}"
    temporary = checkpoints / f".step-{step:06d}.partial"
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        if temporary.exists():
            shutil.rmtree(temporary)
        model.save_pretrained(temporary, training=training_record,
                              model_card=training_model_card(model.config, training_record))
        tensors: dict[str, torch.Tensor] = {k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
        state = dict(trainer)
        state["step"] = step
        state["optimizers"] = {name: _flatten_optimizer(name, opt, tensors) for name, opt in optimizers.items()}
        state["scaler"] = scaler.state_dict() if scaler is not None else None
        state["rng"] = _rng_state()
        save_file(tensors, str(temporary / TRAINER_STATE_TENSORS), metadata={"format": "pt"})
        (temporary / TRAINER_STATE_JSON).write_text(json.dumps(state) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        _atomic_symlink(f"checkpoints/{final.name}", run_dir / LAST_NAME)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise OutputError(f"cannot write the checkpoint ({error.strerror or error})", final) from error
    if keep:
        older = sorted(p for p in checkpoints.glob("step-*") if p.is_dir() and p != final)
        for stale in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    log.info("checkpoint: %s", final)
    return final


def load_trainer_state(checkpoint: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``trainer_state.json`` and ``trainer_state.safetensors`` of a checkpoint (no unpickling)."""
    json_path, tensor_path = checkpoint / TRAINER_STATE_JSON, checkpoint / TRAINER_STATE_TENSORS
    try:
        state = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
    except FileNotFoundError as error:
        raise WeightsError("not a training checkpoint (trainer state missing)", checkpoint) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as error:
        raise WeightsError(f"unreadable trainer state ({str(error).splitlines()[0]})", checkpoint) from error
    if not isinstance(state, dict) or "step" not in state or "optimizers" not in state:
        raise WeightsError("trainer state has no step or optimisers", json_path)
    return state, tensors


def training_model_card(config: ModelConfig, record: dict[str, Any]) -> str:
    """README.md of a training checkpoint."""
    heldout = record.get("heldout_people") or []
    return "\n".join([
        "---", "library_name: animate-face", "tags: [talking-head, few-shot, gan, meta-learning]", "---",
        "# animate-face meta-learning checkpoint", "",
        "Few-shot talking-head model (Zakharov et al. 2019, arXiv 1905.08233), meta-learned with "
        "`animate-face train`.", "",
        f"- step: {record.get('step')}",
        f"- dataset: {record.get('dataset')} ({record.get('train_people')} training people, "
        f"{record.get('num_videos')} videos)",
        f"- held-out people ({len(heldout)}): {', '.join(heldout) if heldout else 'none'}",
        f"- content loss: {record.get('content_loss')}",
        "- model config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()),
        "- training config: " + ", ".join(f"{k}={v}" for k, v in (record.get("train_config") or {}).items()),
        "", "Load with `TalkingHeadModel.from_pretrained(folder)` or `animate-face --weights folder`.", "",
    ])


# ----------------------------------------------------------------------------------------------
# Samples and logs


def sample_grid(batch: dict[str, torch.Tensor], fake: torch.Tensor, rows: int = SAMPLE_ROWS,
                raw: torch.Tensor | None = None) -> np.ndarray:
    """uint8 image: one row per episode: shots | landmark image | [warped | the generator's own
    image before blending] | generated | target."""
    count = min(rows, fake.shape[0])
    lines = []
    for i in range(count):
        tiles = [batch["shot_images"][i], batch["target_landmarks"][i:i + 1]]
        if "warped" in batch:
            tiles.append(batch["warped"][i:i + 1])
            if raw is not None:
                tiles.append(raw[i:i + 1].detach().float().clamp(-1, 1).cpu())
        tiles += [fake[i:i + 1].detach().float().clamp(-1, 1).cpu(), batch["target_image"][i:i + 1]]
        images = tensor_to_images(torch.cat([t.float().cpu() for t in tiles]))
        lines.append(np.concatenate(list(images), axis=1))
    return np.concatenate(lines, axis=0)


def _truncate_losses(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_losses(run_dir: str | Path) -> list[dict[str, float]]:
    """The entries of a run's ``losses.jsonl``."""
    path = Path(run_dir) / LOSSES_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# Training


def _check_run(run_dir: Path, run: dict[str, Any]) -> None:
    """On resume: the run's saved settings must match this launch's."""
    path = run_dir / RUN_NAME
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: nothing to resume (no {RUN_NAME})") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the run settings ({error})", path) from error
    differences = []
    if saved.get("model") != run["model"]:
        changed = [k for k in run["model"] if saved.get("model", {}).get(k) != run["model"][k]]
        differences.append("model " + ", ".join(changed))
    changed = [k for k in run["train"] if k not in RESUME_MUTABLE and saved.get("train", {}).get(k) != run["train"][k]]
    if changed:
        differences.append("training " + ", ".join(changed))
    for key in ("heldout_people", "videos", "dataset"):
        if saved.get(key) != run[key]:
            differences.append(key.replace("_", " "))
    if differences:
        raise UsageError(f"{run_dir}: cannot resume with different settings ({'; '.join(differences)}); "
                         "use the run's own preset and options")


def _move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def train(dataset_dir: str | Path, run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig,
          resume: bool = False, progress: Callable[[int], None] | None = None,
          content_loss: nn.Module | None = None, allow_download: bool = True) -> TrainResult:
    """Meta-learn E, G and D on a prepared dataset; see the module docstring.

    ``model_config.num_videos`` is replaced by the number of training videos. ``content_loss``
    defaults to ``ContentLoss.from_available(allow_download=...)`` (VGG19/VGGFace when their
    weights load, else the stated substitute). ``progress(n)`` advances by n steps (on resume,
    first by the steps already done). Only rank 0 writes files. Raises DivergenceError when the
    guard trips, UsageError for a bad run folder or mismatched resume.
    """
    started = time.perf_counter()
    dataset_dir, run_dir = Path(dataset_dir).expanduser(), Path(run_dir).expanduser()
    cfg = train_config
    ctx = init_distributed(cfg.device)
    try:
        return _train(dataset_dir, run_dir, model_config, cfg, resume, progress, content_loss, allow_download,
                      ctx, started)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(dataset_dir: Path, run_dir: Path, model_config: ModelConfig, cfg: TrainConfig, resume: bool,
           progress: Callable[[int], None] | None, content_loss: nn.Module | None, allow_download: bool,
           ctx: DistributedContext, started: float) -> TrainResult:
    exists = (run_dir / RUN_NAME).exists() or (run_dir / LAST_NAME).exists()
    if not resume and exists:
        raise UsageError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose "
                         "another --out")
    if resume and not exists:
        # --resume on a run that never started is a fresh start (handy for restartable jobs).
        log.info("%s: no run to resume; starting a new one", run_dir)
        resume = False
    if ctx.distributed:
        # Every rank decides from the folder as it was before rank 0 writes into it.
        dist.barrier()

    store = load_frames(dataset_dir)
    train_people, heldout = split_people(store, cfg.holdout, cfg.seed)
    episodes = EpisodeDataset(store, shots=cfg.shots, image_size=model_config.image_size, seed=cfg.seed,
                              guidance=model_config.guidance, people=train_people, mix=cfg.mix,
                              blend_region=model_config.region_input)
    del store
    log.info("training videos by kind: %s", ", ".join(f"{k} {n}" for k, n in episodes.kind_counts().items()))
    config = model_config.replace(num_videos=episodes.num_videos)
    if content_loss is None:
        content_loss = ContentLoss.from_available(allow_download=allow_download)
    content_mode = getattr(content_loss, "description", type(content_loss).__name__)
    run = {"format_version": FORMAT_VERSION, "dataset": str(dataset_dir.resolve()), "model": config.to_dict(),
           "train": cfg.to_dict(), "heldout_people": heldout, "train_people": len(train_people),
           "videos": episodes.video_names}
    if resume:
        _check_run(run_dir, run)
    elif ctx.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / RUN_NAME).write_text(json.dumps({**run, "content_loss": content_mode,
                                                        "world_size": ctx.world_size}, indent=1) + "\n",
                                            encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write the run folder ({error.strerror or error})", run_dir) from error

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = ctx.device
    model = TalkingHeadModel(config).to(device).train()
    content_loss = content_loss.to(device)
    # betas (0.5, 0.999) as in fine-tuning and the GAN reimplementations of the paper.
    optimizers = {
        "generator": torch.optim.Adam([*model.embedder.parameters(), *model.generator.parameters()],
                                      lr=cfg.lr_generator, betas=(0.5, 0.999)),
        "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr_discriminator,
                                          betas=(0.5, 0.999)),
    }
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    guard = DivergenceGuard(cfg.explode_factor, cfg.collapse_std, cfg.collapse_patience,
                            explode_patience=cfg.explode_patience)

    columns = VideoColumns(model.discriminator, ctx)
    start_step, elapsed_before, checkpoint = 0, 0.0, None
    last_link = run_dir / LAST_NAME
    if resume and last_link.exists():
        checkpoint = last_link.resolve()
        start_step, elapsed_before = _restore(checkpoint, model, optimizers, scaler, guard, columns, device)
        log.info("resumed from %s (step %d)", checkpoint, start_step)
    elif resume:
        log.warning("%s: no checkpoint yet; starting from step 0", run_dir)
    if ctx.is_main:
        _truncate_losses(run_dir / LOSSES_NAME, start_step)
    if progress is not None and start_step:
        progress(start_step)

    generate: nn.Module = EmbedAndGenerate(model.embedder, model.generator)
    discriminate: nn.Module = model.discriminator
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        generate = nn.parallel.DistributedDataParallel(generate, device_ids=ids)
        discriminate = nn.parallel.DistributedDataParallel(discriminate, device_ids=ids)

    sampler = EpisodeBatchSampler(episodes, cfg.batch_size, start_step, ctx.rank, ctx.world_size)
    loader = torch.utils.data.DataLoader(episodes, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=cfg.num_workers > 0)
    record_base = {"kind": "meta-learned", "dataset": run["dataset"], "train_people": len(train_people),
                   "heldout_people": heldout, "num_videos": episodes.num_videos, "content_loss": content_mode,
                   "train_config": cfg.to_dict(), "world_size": ctx.world_size}
    first_losses = last_losses = None
    postponed = False
    step = start_step
    session_start = time.perf_counter()
    batches = iter(loader)
    while step < cfg.steps:
        batch = _move(next(batches), device)
        step += 1
        losses, fake, raw, spread = _train_step(batch, model, generate, discriminate, content_loss, optimizers, scaler,
                                           columns, cfg, device, use_amp, amp_dtype)
        # Every rank sees the same (averaged) numbers, so every rank takes the same decision below.
        step_losses, spread = _reduce(losses, spread, ctx)
        reason = guard.check(step_losses, spread)
        if reason is not None:
            kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
            raise DivergenceError(f"training diverged at step {step}: {reason}; {kept}")
        first_losses = first_losses or step_losses
        last_losses = step_losses
        seconds = elapsed_before + time.perf_counter() - session_start
        if ctx.is_main:
            if step % cfg.log_every == 0:
                _append_losses(run_dir, {"step": step, **step_losses, "image_std": spread, "seconds": seconds})
                log.info("step %d/%d: G %.3f (content %.3f, adv %.3f, fm %.3f, match %.4f) D %.3f", step, cfg.steps,
                         step_losses["loss_g"], step_losses["content"], step_losses["adversarial"],
                         step_losses["feature_matching"], step_losses["match"], step_losses["loss_d"])
            if step % cfg.sample_every == 0 or step == cfg.steps:
                _save_sample(run_dir, step, batch, fake, raw)
        due = postponed or step % cfg.checkpoint_every == 0 or step == cfg.steps
        # During a loss spike or while frames look one-coloured (not yet long enough to stop) a
        # checkpoint waits, so that `last` never points at a diverging model.
        postponed = due and guard.unsettled
        if postponed:
            log.warning("step %d: checkpoint postponed (a loss spike or one-coloured frames)", step)
        elif due:
            if ctx.is_main:
                record = {**record_base, "step": step, "seconds": round(seconds, 1)}
                checkpoint = save_checkpoint(run_dir, step, model, optimizers, scaler,
                                             {"format_version": FORMAT_VERSION, "seconds": seconds,
                                              "guard": guard.state_dict(), "heldout_people": heldout,
                                              "world_size": ctx.world_size},
                                             record, keep=cfg.keep_checkpoints,
                                             extra_tensors={COLUMNS_KEY: columns.initialised.to(torch.uint8)})
            else:
                checkpoint = run_dir / "checkpoints" / f"step-{step:06d}"
        if progress is not None:
            progress(1)
    if ctx.distributed:
        dist.barrier()
    return TrainResult(run_dir=run_dir, step=step, start_step=start_step, checkpoint=checkpoint,
                       first_losses=first_losses, last_losses=last_losses,
                       seconds=time.perf_counter() - started, heldout_people=heldout,
                       content_loss=content_mode, model=model)


def _reduce(losses: dict[str, torch.Tensor], spread: torch.Tensor,
            ctx: DistributedContext) -> tuple[dict[str, float], float]:
    """Losses averaged over ranks, colour spread maxed over ranks, as Python floats."""
    values = torch.stack([losses[name].detach().float() for name in LOSS_NAMES])
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / ctx.world_size
        dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return dict(zip(LOSS_NAMES, values.cpu().tolist())), float(spread)


def _train_step(batch: dict[str, torch.Tensor], model: TalkingHeadModel, generate: nn.Module,
                discriminate: nn.Module, content_loss: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                scaler: torch.amp.GradScaler | None, columns: VideoColumns, cfg: TrainConfig, device: torch.device,
                use_amp: bool, amp_dtype: torch.dtype
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One G/E update then one D update; returns the losses, the generated frames, the
    generator's unblended images (warp guidance only, else None) and the frames' largest
    colour spread (see ``colour_spread``)."""
    target, target_landmarks = batch["target_image"], batch["target_landmarks"]
    target_points = batch["target_points"]
    video = batch["video_index"]
    discriminator = model.discriminator
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    with autocast:
        fake, raw, embeddings = generate(batch["shot_images"], batch["shot_landmarks"], target_landmarks,
                                         batch.get("warped"), batch.get("region"))
        columns.update(video, embeddings)
        # D is used unwrapped and frozen here: its update below is the only one it gets.
        with _frozen(discriminator):
            fake_out = discriminator(fake, target_landmarks, video_index=video)
            with torch.no_grad():
                real_out = discriminator(target, target_landmarks, video_index=video)
        content = content_loss(fake.float(), target, target_points)
        adversarial = hinge_generator_loss(fake_out.score.float())
        feature_matching = feature_matching_loss([f.float() for f in real_out.features],
                                                 [f.float() for f in fake_out.features])
        match = match_loss(discriminator.W[:, video].t().detach().float(), embeddings.float())
        loss_g = (cfg.content_weight * content + adversarial + cfg.feature_matching_weight * feature_matching
                  + cfg.match_weight * match)
        if "warped" in batch and cfg.raw_content_weight:
            loss_g = loss_g + cfg.raw_content_weight * content_loss(raw.float(), target, target_points)
    optimizers["generator"].zero_grad(set_to_none=True)
    _backward_step(loss_g, optimizers["generator"], scaler)

    with autocast:
        # Real and generated frames in one forward: one DDP reduction per update.
        both = discriminate(torch.cat([target, fake.detach()]), torch.cat([target_landmarks, target_landmarks]),
                            video_index=torch.cat([video, video]))
        scores = both.score.float()
        real_score, fake_score = scores[:len(video)], scores[len(video):]
        loss_d = hinge_discriminator_loss(real_score, fake_score)
        match_d = match_loss(discriminator.W[:, video].t().float(), embeddings.detach().float())
    optimizers["discriminator"].zero_grad(set_to_none=True)
    _backward_step(loss_d + cfg.match_weight * match_d, optimizers["discriminator"], scaler)
    if scaler is not None:
        scaler.update()

    losses = {"loss_g": loss_g, "content": content, "adversarial": adversarial,
              "feature_matching": feature_matching, "match": match, "loss_d": loss_d,
              "real_score": real_score.mean(), "fake_score": fake_score.mean()}
    return losses, fake.detach(), raw.detach() if "warped" in batch else None, colour_spread(fake).max()


def _backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)


def _restore(checkpoint: Path, model: TalkingHeadModel, optimizers: dict[str, torch.optim.Optimizer],
             scaler: torch.amp.GradScaler | None, guard: DivergenceGuard, columns: VideoColumns,
             device: torch.device) -> tuple[int, float]:
    """Load weights, optimisers, scaler, guard and RNG states; returns (step, seconds so far)."""
    from ..models.bundle import WEIGHTS_NAME, check_state_dict, read_checkpoint_config

    config, _ = read_checkpoint_config(checkpoint)
    if config != model.config:
        raise UsageError(f"{checkpoint}: the checkpoint's model config differs from this run's")
    weights = checkpoint / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"corrupt or truncated weights file ({str(error).splitlines()[0]})", weights) from error
    check_state_dict(model.state_dict(), state, weights)
    model.load_state_dict(state)
    trainer, tensors = load_trainer_state(checkpoint)
    for name, optimizer in optimizers.items():
        data = trainer["optimizers"].get(name)
        if data is None:
            raise WeightsError(f"trainer state has no {name} optimiser", checkpoint)
        try:
            optimizer.load_state_dict(_unflatten_optimizer(data, tensors, checkpoint))
        except (ValueError, KeyError) as error:
            raise WeightsError(f"optimiser state does not fit the model ({error})", checkpoint) from error
    for optimizer in optimizers.values():
        for entries in optimizer.state.values():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    entries[key] = value.to(device)
    if scaler is not None and trainer.get("scaler"):
        scaler.load_state_dict(trainer["scaler"])
    guard.load_state_dict(trainer["guard"])
    mask = tensors.get(COLUMNS_KEY)
    if mask is None or mask.shape != columns.initialised.shape:
        raise WeightsError("trainer state has no (or a mis-sized) video column mask", checkpoint)
    columns.initialised = mask.bool()
    _set_rng_state(trainer["rng"])
    return int(trainer["step"]), float(trainer.get("seconds", 0.0))


def _append_losses(run_dir: Path, entry: dict[str, float]) -> None:
    try:
        with open(run_dir / LOSSES_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    except OSError as error:
        raise OutputError(f"cannot write the loss log ({error.strerror or error})", run_dir / LOSSES_NAME) from error


def _save_sample(run_dir: Path, step: int, batch: dict[str, torch.Tensor], fake: torch.Tensor,
                 raw: torch.Tensor | None = None) -> Path:
    from ..io.images import save_image

    samples = run_dir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    return save_image(samples / f"step-{step:06d}.png", sample_grid(batch, fake, raw=raw), overwrite=True)
