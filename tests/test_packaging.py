"""The installed package carries every subpackage and the bundled weights."""

from __future__ import annotations

import tomllib
from pathlib import Path

from animate_cli.hub import bundled_weights_dir
from animate_cli.models import read_checkpoint_config

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "animate_cli").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"


def test_bundled_weights_are_a_loadable_checkpoint():
    folder = bundled_weights_dir()
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in Path(folder).iterdir()}
    config, training = read_checkpoint_config(folder)
    assert config.image_size == 128 and config.guidance == "warp"
    assert "placeholder" in (Path(folder) / "README.md").read_text().lower() or training.get("kind") != "untrained"
