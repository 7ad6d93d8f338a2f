"""Weights specs, local and bundled folders, and the real huggingface_hub download/upload code
paths against a loopback fake Hub (tests/fake_hub.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fake_hub import FakeHub, closed_port_url, fake_hub, hf_home, point_hub_at, set_offline  # noqa: F401
from safetensors.numpy import load_file, save_file

from animate_cli import hub
from animate_cli.errors import UsageError, WeightsError
from animate_cli.hub import WeightsSpec, parse_weights_spec, publish, pull, resolve_weights

REPO = "someone/talking-heads"


def make_checkpoint(folder: Path, value: float = 1.0, readme: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"format_version": 1, "model": {"image_size": 64}}))
    save_file({"generator.weight": np.full((2, 3), value, dtype=np.float32)}, str(folder / "model.safetensors"))
    if readme:
        (folder / "README.md").write_text("# tiny test checkpoint\n")
    return folder


def checkpoint_bytes(tmp_path: Path, value: float) -> dict[str, bytes]:
    folder = make_checkpoint(tmp_path / f"ckpt-{value}", value)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def weight_value(folder: Path) -> float:
    return float(load_file(str(folder / "model.safetensors"))["generator.weight"][0, 0])


# ---------------------------------------------------------------------------------------------
# Spec parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("owner/name", WeightsSpec("hub", "owner/name", None)),
        ("owner/name@v1.0", WeightsSpec("hub", "owner/name", "v1.0")),
        ("Org-1/model.v2@refs/pr/3", WeightsSpec("hub", "Org-1/model.v2", "refs/pr/3")),
        ("owner/name@" + "a" * 40, WeightsSpec("hub", "owner/name", "a" * 40)),
        ("./weights", WeightsSpec("local", "./weights", None)),
        ("/abs/path/ckpt", WeightsSpec("local", "/abs/path/ckpt", None)),
        ("runs/exp1/final", WeightsSpec("local", "runs/exp1/final", None)),
        ("~/ckpt", WeightsSpec("local", os.path.expanduser("~/ckpt"), None)),
    ],
)
def test_parse_weights_spec_table(spec: str, expected: WeightsSpec) -> None:
    assert parse_weights_spec(spec) == expected


@pytest.mark.parametrize("spec", ["justaname", "owner/na me", "owner/name@", "owner/na--me", ""])
def test_parse_weights_spec_rejects_garbage(spec: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_weights_spec(spec)
    assert caught.value.exit_code == 2


def test_existing_folder_named_like_a_repo_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "owner" / "name")
    assert parse_weights_spec("owner/name") == WeightsSpec("local", "owner/name", None)
    assert resolve_weights("owner/name") == Path("owner/name")


def test_default_is_env_then_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.WEIGHTS_ENV, raising=False)
    bundled = parse_weights_spec(None)
    assert bundled.kind == "bundled"
    assert Path(bundled.location) == hub.bundled_weights_dir()
    assert parse_weights_spec("bundled") == bundled
    monkeypatch.setenv(hub.WEIGHTS_ENV, "owner/name@main")
    assert parse_weights_spec(None) == WeightsSpec("hub", "owner/name", "main")
    monkeypatch.setenv(hub.WEIGHTS_ENV, str(tmp_path))
    assert parse_weights_spec(None) == WeightsSpec("local", str(tmp_path), None)


def test_bundled_dir_in_a_checkout_is_top_level_weights() -> None:
    repo_root = Path(hub.__file__).resolve().parents[1]
    assert hub.bundled_weights_dir() == repo_root / "weights"


# ---------------------------------------------------------------------------------------------
# Local folders


def test_resolve_local_folder(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt")
    assert resolve_weights(str(folder)) == folder
    assert pull(str(folder)) == folder


def test_resolve_local_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such folder") as caught:
        resolve_weights(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(caught.value)
    assert caught.value.exit_code == 5

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="the folder has no config.json/model.safetensors"):
        resolve_weights(str(empty))

    half = make_checkpoint(tmp_path / "half")
    (half / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"the folder has no model.safetensors$"):
        resolve_weights(str(half))

    with pytest.raises(WeightsError, match="is a file"):
        resolve_weights(str(half / "config.json"))


def test_pull_detects_corrupt_files(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightsError, match="model.safetensors is corrupt"):
        pull(str(folder))
    make_checkpoint(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(WeightsError, match="config.json is not readable JSON"):
        pull(str(folder))


# ---------------------------------------------------------------------------------------------
# Hub downloads through the real huggingface_hub code path


def test_download_into_empty_cache_then_offline(fake_hub: FakeHub, hf_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    files = checkpoint_bytes(tmp_path, 3.0)
    files["notes.txt"] = b"not part of a checkpoint"
    commit = fake_hub.add_commit(REPO, files)

    folder = pull(REPO)
    assert folder.is_dir()
    assert hf_home in folder.parents  # landed in the HF cache
    assert folder.name == commit  # .../snapshots/<commit>
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert weight_value(folder) == 3.0
    assert ("HEAD", f"/{REPO}/resolve/{commit}/model.safetensors") in fake_hub.requests

    # Offline: served from the cache, without a single request.
    fake_hub.requests.clear()
    set_offline(monkeypatch, True)
    assert resolve_weights(REPO) == folder
    assert fake_hub.requests == []

    # Offline and never downloaded: the "cannot reach" message.
    with pytest.raises(WeightsError) as caught:
        resolve_weights("someone/never-downloaded")
    assert str(caught.value) == f"someone/never-downloaded: {hub.CANNOT_REACH}"


def test_offline_through_environment_variable_only(fake_hub: FakeHub, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE set after huggingface_hub was imported is honoured too."""
    fake_hub.add_commit(REPO, checkpoint_bytes(tmp_path, 1.0))
    folder = resolve_weights(REPO)
    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_weights(REPO) == folder
    assert fake_hub.requests == []


def test_revision_pinning(fake_hub: FakeHub, tmp_path: Path) -> None:
    first = fake_hub.add_commit(REPO, checkpoint_bytes(tmp_path, 1.0))
    fake_hub.add_tag(REPO, "v1", first)
    second = fake_hub.add_commit(REPO, checkpoint_bytes(tmp_path, 2.0))

    assert weight_value(resolve_weights(REPO)) == 2.0
    assert resolve_weights(REPO).name == second
    assert weight_value(resolve_weights(f"{REPO}@v1")) == 1.0
    assert weight_value(resolve_weights(f"{REPO}@{first}")) == 1.0
    with pytest.raises(WeightsError) as caught:
        resolve_weights(f"{REPO}@no-such-branch")
    assert str(caught.value) == f"{REPO}@no-such-branch: {hub.REVISION_NOT_FOUND}"


def test_repo_not_found(fake_hub: FakeHub) -> None:
    with pytest.raises(WeightsError) as caught:
        resolve_weights("someone/does-not-exist")
    assert str(caught.value).startswith("someone/does-not-exist: repository not found on the Hub")
    assert caught.value.exit_code == 5


def test_repo_without_weights(fake_hub: FakeHub) -> None:
    fake_hub.add_commit(REPO, {"README.md": b"# empty"})
    with pytest.raises(WeightsError, match="the repository has no config.json/model.safetensors"):
        resolve_weights(REPO)


def test_unreachable_endpoint(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_hub_at(monkeypatch, closed_port_url())
    with pytest.raises(WeightsError) as caught:
        resolve_weights(REPO)
    assert str(caught.value) == f"{REPO}: {hub.CANNOT_REACH}"


def test_unreachable_endpoint_uses_cache(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_commit(REPO, checkpoint_bytes(tmp_path, 5.0))
    folder = resolve_weights(REPO)
    point_hub_at(monkeypatch, closed_port_url())
    assert resolve_weights(REPO) == folder


# ---------------------------------------------------------------------------------------------
# Publishing


def test_publish_uploads_only_checkpoint_files(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", 7.0)
    (folder / "optimizer.pt").write_bytes(b"do not upload")
    url = publish(folder, REPO, commit_message="first weights")
    assert url == f"{fake_hub.url}/{REPO}"
    uploaded = fake_hub.files(REPO)
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    assert "optimizer.pt" not in uploaded
    assert uploaded["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert "first weights" in fake_hub.repos[REPO]["messages"].values()

    # Publishing again to the existing repo works (exist_ok) and the round trip pulls it back.
    make_checkpoint(folder, 8.0)
    publish(folder, REPO)
    assert weight_value(pull(REPO)) == 8.0


def test_publish_validation(tmp_path: Path) -> None:
    no_card = make_checkpoint(tmp_path / "no_card", readme=False)
    with pytest.raises(WeightsError, match="the folder has no README.md"):
        publish(no_card, REPO)
    with pytest.raises(WeightsError, match="no such folder"):
        publish(tmp_path / "missing", REPO)
    with pytest.raises(UsageError):
        publish(make_checkpoint(tmp_path / "ok"), "not a repo id")
    with pytest.raises(UsageError):
        publish(tmp_path / "ok", "just-a-name")


def test_publish_unreachable(hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_hub_at(monkeypatch, closed_port_url())
    with pytest.raises(WeightsError, match="cannot reach the Hugging Face Hub"):
        publish(make_checkpoint(tmp_path / "ckpt"), REPO)


def test_bundled_dir_when_installed_is_the_package_folder(tmp_path: Path) -> None:
    # Installed from a wheel (not editable), weights/ is the folder animate_cli/bundled_weights without an
    # __init__.py: a namespace package, for which importlib.resources gives no plain path. A fresh interpreter
    # without site-packages (so no editable finder) imports this layout and must find the weights there.
    import shutil
    import subprocess
    import sys

    package = tmp_path / "site" / "animate_cli"
    (package / "bundled_weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("hub.py", "errors.py"):
        shutil.copy(Path(hub.__file__).parent / name, package / name)

    def found() -> Path:
        return Path(subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                    "from animate_cli.hub import bundled_weights_dir; print(bundled_weights_dir())",
                                    str(tmp_path / "site")], capture_output=True, text=True, check=True).stdout.strip())

    # Installed without its weights (no checkout beside it either): the installed folder, which the error names.
    assert found() == package / "bundled_weights"
    (package / "bundled_weights" / "config.json").write_text("{}")
    assert found() == package / "bundled_weights"
