"""Weights: one loader for Hub ids, local folders and the bundled checkpoint; publishing to the Hub.

A checkpoint is a folder with ``config.json``, ``model.safetensors`` and a ``README.md`` model card.
``--weights`` accepts:

- nothing: ``$ANIMATE_FACE_WEIGHTS`` if set, else the weights bundled with the package (offline);
- a folder: ``./my-run/final``, ``/data/ckpt``, ``~/weights``;
- a Hub id, optionally pinned: ``owner/name`` or ``owner/name@revision`` (branch, tag or commit).

Hub downloads go through ``huggingface_hub.snapshot_download`` and its cache (``HF_HOME``), so a
second run needs no network, and ``HF_HUB_OFFLINE=1`` reads the cache only.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from animate_cli.errors import UsageError, WeightsError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_CARD_FILE = "README.md"
# The learned mouth and eye models (animate_cli/parts); optional: a checkpoint without them renders
# the synthetic mouth interior.
PARTS_FILE = "parts.safetensors"
# The generator's ONNX graph for these weights (render/onnx_cache.py, ``bundle_graph``); optional: without
# it the first run on a CPU exports the graph itself, about 2 s.
GRAPH_FILE = "generator.onnx"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# What a published checkpoint must have, and everything a download or an upload takes.
PUBLISHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, MODEL_CARD_FILE)
CHECKPOINT_FILES = (*PUBLISHED_FILES, PARTS_FILE, GRAPH_FILE)
WEIGHTS_ENV = "ANIMATE_FACE_WEIGHTS"
BUNDLED = "bundled"

CANNOT_REACH = "cannot reach the Hugging Face Hub (offline?) and the weights are not in the cache"
REPO_NOT_FOUND = "repository not found on the Hub (or it is private/gated and no valid token was given)"
REVISION_NOT_FOUND = "revision not found"

# owner/name with an optional @revision. The revision may contain slashes (refs/pr/1).
_HUB_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^\s@]+))?$")


@dataclass(frozen=True)
class WeightsSpec:
    """Where weights come from: ``kind`` "hub" (location = repo id), "local" or "bundled" (a folder)."""

    kind: Literal["hub", "local", "bundled"]
    location: str
    revision: str | None = None

    def __str__(self) -> str:
        if self.kind == "hub":
            return self.location + (f"@{self.revision}" if self.revision else "")
        return self.location


def _is_valid_repo_id(repo_id: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def _looks_like_path(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or (os.altsep and os.altsep in spec):
        return True
    if os.sep != "/" and os.sep in spec:
        return True
    # More than one slash cannot be owner/name (a revision after @ may hold slashes).
    return spec.split("@", 1)[0].count("/") > 1


def parse_weights_spec(spec: str | None) -> WeightsSpec:
    """Classify a ``--weights`` value (see the module docstring). Raises UsageError when it is neither
    a folder nor a valid Hub id."""
    if spec is None:
        from_env = os.environ.get(WEIGHTS_ENV, "").strip()
        if from_env:
            return parse_weights_spec(from_env)
        return WeightsSpec("bundled", str(bundled_weights_dir()), None)
    spec = spec.strip()
    if not spec:
        raise UsageError("empty --weights value; give a folder or a Hub id (owner/name[@revision])")
    expanded = os.path.expanduser(spec)
    # An existing path always wins: a local folder named like owner/name is still a folder.
    if os.path.exists(expanded) or _looks_like_path(spec):
        return WeightsSpec("local", expanded, None)
    if spec == BUNDLED:
        return WeightsSpec("bundled", str(bundled_weights_dir()), None)
    match = _HUB_SPEC.match(spec)
    if match is not None and _is_valid_repo_id(match.group("repo")):
        return WeightsSpec("hub", match.group("repo"), match.group("revision"))
    raise UsageError(
        f"--weights {spec!r} is neither an existing folder nor a Hub id (owner/name or owner/name@revision)"
    )


def bundled_weights_dir() -> Path:
    """The folder of the weights shipped with animate-face.

    Installed, the top-level ``weights/`` folder is the package ``animate_cli.bundled_weights``
    (see pyproject.toml), a folder without ``__init__.py`` (a namespace package: ``importlib.resources``
    gives no plain path for it, so its search locations are read); in a source checkout it is
    ``weights/`` beside ``animate_cli/``.
    """
    import importlib.util

    checkout = Path(__file__).resolve().parents[1] / "weights"
    try:
        spec = importlib.util.find_spec("animate_cli.bundled_weights")
    except ModuleNotFoundError:
        spec = None
    installed = [Path(location) for location in (spec.submodule_search_locations or [])] if spec is not None else []
    for location in installed:
        if (location / CONFIG_FILE).is_file():
            return location
    # Installed without its weights: the installed folder, which the error then names.
    return installed[0] if installed and not checkout.is_dir() else checkout


def missing_files(folder: Path, names: tuple[str, ...] = REQUIRED_FILES) -> list[str]:
    """The checkpoint files absent from ``folder``."""
    return [name for name in names if not (folder / name).is_file()]


def _check_folder(folder: Path, spec: WeightsSpec, names: tuple[str, ...] = REQUIRED_FILES) -> Path:
    label = str(spec)
    if not folder.exists():
        hint = " (the package was installed without its weights: reinstall it)" if spec.kind == "bundled" else ""
        raise WeightsError(f"no such folder{hint}", label)
    if not folder.is_dir():
        raise WeightsError(f"is a file; expected a folder with {' and '.join(names)}", label)
    missing = missing_files(folder, names)
    if missing:
        raise WeightsError(f"the folder has no {'/'.join(missing)}", label)
    return folder


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level errors of the HTTP client huggingface_hub uses (httpx2 in huggingface_hub 2.x)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:  # older huggingface_hub (requests/httpx based) wraps its errors itself
        pass
    return tuple(errors)


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import; also honour it when set later.
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.is_offline_mode() or env in {"1", "ON", "YES", "TRUE"}


def _download(spec: WeightsSpec) -> Path:
    """snapshot_download of the checkpoint files, with huggingface_hub's errors as WeightsError."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    label = str(spec)
    try:
        folder = snapshot_download(
            spec.location,
            revision=spec.revision,
            allow_patterns=list(CHECKPOINT_FILES),
            local_files_only=_offline(),
        )
    except RevisionNotFoundError as error:
        raise WeightsError(REVISION_NOT_FOUND, label) from error
    except RepositoryNotFoundError as error:  # also gated repos and 401 for private ones
        raise WeightsError(REPO_NOT_FOUND, label) from error
    except LocalEntryNotFoundError as error:  # offline or unreachable, and not (fully) cached
        raise WeightsError(CANNOT_REACH, label) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise WeightsError(f"the Hugging Face Hub answered with an error (HTTP {status}); try again later", label) from error
    except _network_errors() as error:
        raise WeightsError("lost the connection to the Hugging Face Hub while downloading; try again", label) from error
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WeightsError("disk full while downloading into the Hugging Face cache (see HF_HOME)", label) from error
        raise
    return Path(folder)


def resolve_weights(spec: str | None) -> Path:
    """A local folder holding config.json and model.safetensors (and usually README.md) for ``spec``.

    Hub ids are downloaded into (or read from) the Hugging Face cache. Raises WeightsError, naming
    the spec, when the Hub cannot be reached and the cache lacks the weights, the repository or
    revision does not exist, or the folder lacks a file; UsageError for a malformed spec.
    """
    parsed = parse_weights_spec(spec)
    if parsed.kind == "hub":
        folder = _download(parsed)
        missing = missing_files(folder)
        if missing:
            raise WeightsError(f"the repository has no {'/'.join(missing)}", str(parsed))
        return folder
    return _check_folder(Path(parsed.location), parsed)


def verify_checkpoint(folder: Path, label: str | None = None) -> dict:
    """Check that a checkpoint folder is readable: config.json is a JSON object and
    model.safetensors has a valid header. Returns the parsed config. Raises WeightsError."""
    label = label or str(folder)
    config_path = folder / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"config.json is not readable JSON ({error})", label) from error
    if not isinstance(config, dict):
        raise WeightsError("config.json does not hold a JSON object", label)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
            count = len(list(weights.keys()))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"model.safetensors is corrupt ({error})", label) from error
    if count == 0:
        raise WeightsError("model.safetensors holds no tensors", label)
    if (folder / PARTS_FILE).exists():
        try:
            with safe_open(str(folder / PARTS_FILE), framework="numpy") as parts:
                list(parts.keys())
        except (SafetensorError, OSError) as error:
            raise WeightsError(f"{PARTS_FILE} is corrupt ({error})", label) from error
    return config


def pull(spec: str | None) -> Path:
    """Resolve ``spec`` (downloading when it is a Hub id) and verify the files; return the folder."""
    folder = resolve_weights(spec)
    verify_checkpoint(folder, str(parse_weights_spec(spec)))
    return folder


def publish(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload animate-face weights",
) -> str:
    """Upload a checkpoint folder (config.json, model.safetensors, README.md, and parts.safetensors and
    generator.onnx when present, nothing else) to the Hub.

    Creates the repository when needed and returns its URL. Raises UsageError for a malformed
    repo id and WeightsError when the folder is incomplete or the upload fails.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError

    if repo_id.count("/") != 1 or not _is_valid_repo_id(repo_id):
        raise UsageError(f"{repo_id!r} is not a valid Hub repository id (owner/name)")
    folder = Path(folder).expanduser()
    local = WeightsSpec("local", str(folder), None)
    _check_folder(folder, local, PUBLISHED_FILES)
    verify_checkpoint(folder)

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            allow_patterns=list(CHECKPOINT_FILES),
            commit_message=commit_message,
        )
    except LocalTokenNotFoundError as error:
        raise WeightsError("no Hugging Face token: run `hf auth login` or pass a token", repo_id) from error
    except RepositoryNotFoundError as error:
        raise WeightsError("not allowed to write to this repository (check the token)", repo_id) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        if status in (401, 403):
            raise WeightsError("not allowed to write to this repository (check the token)", repo_id) from error
        raise WeightsError(f"the Hub refused the upload (HTTP {status})", repo_id) from error
    except _network_errors() as error:
        raise WeightsError("cannot reach the Hugging Face Hub (offline?)", repo_id) from error
    return str(url)
