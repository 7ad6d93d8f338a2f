"""The ONNX renderer's graph cache: one graph per set of generator weights, psi an input, reused across
renderers and people; fine-tuned weights get their own entry; a broken or unwritable cache only costs
the export. A graph shipped with the weights spares even the first run the export, and is used only for
the weights and code it was made from."""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from animate_cli.config import FinetuneConfig
from animate_cli.export import ADAIN_INPUT, DEFAULT_OPSET, generator_onnx_bytes
from animate_cli.hub import GRAPH_FILE, bundled_weights_dir
from animate_cli.io import disk_cache
from animate_cli.jobs import build_engine
from animate_cli.models import TalkingHeadModel
from animate_cli.render import onnx_cache, onnx_renderer
from animate_cli.render.onnx_renderer import OnnxRenderer

CPU = torch.device("cpu")
# The cached graph computes what the baked one does (measured bit-identical); allow the uint8 rounding
# of a last-bit difference.
MAX_LEVELS = 1


@pytest.fixture(scope="module")
def engine_and_person(tiny_paper_weights, portrait_path):
    """The paper's generator (no warp guidance), so the whole frame shows the person's psi."""
    engine = build_engine(str(tiny_paper_weights), landmarks="dlib", device="cpu", backend="onnx")
    torch.manual_seed(0)
    return engine, engine.make_person([portrait_path], FinetuneConfig(steps=0))


@dataclasses.dataclass
class Cached:
    """The person's graph as the first renderer cached it, and frames drawn with psi baked in and with it."""

    name: str
    data: bytes
    targets: np.ndarray
    baked: np.ndarray
    frames: np.ndarray


@pytest.fixture(scope="module")
def cached(engine_and_person, tmp_path_factory):
    engine, person = engine_and_person
    folder = tmp_path_factory.mktemp("cache")
    targets = targets_of(person)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANIMATE_FACE_CACHE", str(folder))
        frames = OnnxRenderer(engine.model, person, CPU).render(targets)
    (path,) = (folder / "onnx").iterdir()  # and no temporary file left
    return Cached(path.name, path.read_bytes(), targets, baked_frames(engine, person, targets), frames)


@pytest.fixture
def cache(tmp_path, monkeypatch, cached):
    """A cache folder for this test holding the person's graph."""
    folder = tmp_path / "cache"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / cached.name).write_bytes(cached.data)
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(folder))
    return folder


def refuse_export(monkeypatch) -> None:
    """From here on the renderer's graph must come from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("exported the generator again")

    monkeypatch.setattr(onnx_renderer, "generator_graph_bytes", refuse)


def targets_of(person, count: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = person.photo.crop_points
    return np.stack([base + rng.normal(0, 0.6, base.shape) + [i * 0.3, -i * 0.2] for i in range(count)]
                    ).astype(np.float32)


def baked_frames(engine, person, targets) -> np.ndarray:
    """Frames of the person's own graph, psi baked in (what `animate-face export` writes)."""
    graph = generator_onnx_bytes(engine.model, person)
    return OnnxRenderer(engine.model, person, CPU, onnx_model=graph).render(targets)


def assert_same_frames(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= MAX_LEVELS


def graphs(cache) -> list[str]:
    return sorted(path.name for path in (cache / "onnx").iterdir())


def other_person(person, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    psi = person.adain_params + torch.randn(person.adain_params.shape, generator=generator)
    return dataclasses.replace(person, adain_params=psi)


def fine_tuned(engine, person):
    """A stand-in for fine-tuning (tested elsewhere): the model's generator weights, changed."""
    state = {name: tensor.clone() for name, tensor in engine.model.generator.state_dict().items()}
    generator = torch.Generator().manual_seed(2)
    for name, tensor in state.items():
        if name.endswith("weight.original"):
            tensor.mul_(1.0 + 0.2 * torch.randn(tensor.shape, generator=generator))
    return dataclasses.replace(person, generator_state=state)


def test_a_second_renderer_loads_the_graph_from_the_cache(engine_and_person, cached, cache, monkeypatch):
    engine, person = engine_and_person
    key = onnx_cache.graph_key(engine.model.config, engine.model.generator.state_dict(), DEFAULT_OPSET)
    assert cached.name == f"generator-{key}.onnx"
    assert_same_frames(cached.frames, cached.baked)  # the renderer that exported it

    refuse_export(monkeypatch)
    again = OnnxRenderer(engine.model, person, CPU)
    assert [i.name for i in again.session.get_inputs()] == ["landmark_images", ADAIN_INPUT]
    assert again.input_names == ["landmark_images"]
    np.testing.assert_array_equal(again.render(cached.targets), cached.frames)
    assert graphs(cache) == [cached.name]


def test_another_persons_psi_draws_that_person_from_the_same_graph(engine_and_person, cached, cache,
                                                                   monkeypatch):
    engine, person = engine_and_person
    refuse_export(monkeypatch)
    other = other_person(person)
    frames = OnnxRenderer(engine.model, other, CPU).render(cached.targets)
    assert graphs(cache) == [cached.name]
    assert_same_frames(frames, baked_frames(engine, other, cached.targets))
    assert np.abs(frames.astype(int) - cached.frames.astype(int)).mean() > 5  # psi shows in the frames


def test_fine_tuned_weights_get_their_own_graph(engine_and_person, cached, cache):
    engine, person = engine_and_person
    tuned = fine_tuned(engine, person)
    frames = OnnxRenderer(engine.model, tuned, CPU).render(cached.targets)
    assert len(graphs(cache)) == 2
    assert_same_frames(frames, baked_frames(engine, tuned, cached.targets))
    assert np.abs(frames.astype(int) - cached.frames.astype(int)).mean() > 1


def test_the_key_follows_what_the_graph_is_made_of(engine_and_person):
    engine, person = engine_and_person
    config, state = engine.model.config, engine.model.generator.state_dict()
    key = onnx_cache.graph_key(config, state, DEFAULT_OPSET)
    assert onnx_cache.graph_key(config, {n: t.clone() for n, t in state.items()}, DEFAULT_OPSET) == key
    assert onnx_cache.graph_key(config, fine_tuned(engine, person).generator_state, DEFAULT_OPSET) != key
    assert onnx_cache.graph_key(config, state, DEFAULT_OPSET + 1) != key
    assert onnx_cache.graph_key(dataclasses.replace(config, blend_region="mouth_border"), state,
                                DEFAULT_OPSET) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another graph", "empty"])
def test_a_broken_cache_file_is_replaced(engine_and_person, cached, cache, damage, caplog):
    engine, person = engine_and_person
    path = cache / "onnx" / cached.name
    if damage == "another graph":  # whole, but another graph's key (other weights) under this one's name
        graph = onnx.load_model_from_string(cached.data)
        onnx.helper.set_model_props(graph, {onnx_cache.KEY_PROPERTY: "another"})
        path.write_bytes(graph.SerializeToString())
    else:
        broken = {"garbage": b"not an onnx graph" * 100, "truncated": cached.data[:-3], "empty": b""}
        path.write_bytes(broken[damage])
    with caplog.at_level(logging.INFO, logger=onnx_renderer.__name__):
        renderer = OnnxRenderer(engine.model, person, CPU)
    assert "ignoring a" in caplog.text and str(path) in caplog.text
    assert all(record.levelno <= logging.INFO for record in caplog.records)
    np.testing.assert_array_equal(renderer.render(cached.targets), cached.frames)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # whole again
    key = cached.name[len("generator-"):-len(".onnx")]
    assert session.get_modelmeta().custom_metadata_map[onnx_cache.KEY_PROPERTY] == key


def test_an_unwritable_cache_still_renders(engine_and_person, cached, tmp_path, monkeypatch, caplog):
    engine, person = engine_and_person
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A folder under a file: fails for root too, unlike a folder without write permission.
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.INFO):
        frames = OnnxRenderer(engine.model, person, CPU).render(cached.targets)
    assert "cannot cache the generator's ONNX graph" in caplog.text
    assert all(record.levelno <= logging.INFO for record in caplog.records)
    np.testing.assert_array_equal(frames, cached.frames)
    assert list(tmp_path.iterdir()) == [blocker]


def test_only_the_newest_graphs_are_kept(tmp_path):
    folder = tmp_path / "onnx"
    folder.mkdir()
    now = time.time()
    files = {folder / f"generator-{age}.onnx": 100 * age for age in range(1, 5)}
    stale, fresh = folder / ".generator-9.partial-1.onnx", folder / ".generator-8.partial-2.onnx"
    files.update({stale: 2 * disk_cache.STALE_TEMPORARY_S, fresh: 10})  # left by processes that died, or writing
    for path, age in files.items():
        path.write_bytes(b"graph")
        os.utime(path, (now - age, now - age))
    assert onnx_cache.read_graph(folder / "generator-4.onnx") == b"graph"  # the oldest, used: now the newest
    onnx_cache.store_graph(folder / "generator-0.onnx", b"graph", keep=3)
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name, "generator-0.onnx", "generator-1.onnx",
                                                        "generator-4.onnx"]
    assert onnx_cache.read_graph(folder / "generator-absent.onnx") is None


def shipped(engine, state, data: bytes, folder):
    """A checkpoint folder whose shipped graph is ``data`` keyed for the generator weights ``state``."""
    folder.mkdir(parents=True, exist_ok=True)
    return onnx_cache.bundle_graph(engine.model.config, state, data, DEFAULT_OPSET, folder).parent


def test_a_graph_shipped_with_the_weights_spares_the_first_run_the_export(engine_and_person, cached, tmp_path,
                                                                         monkeypatch):
    engine, person = engine_and_person
    checkpoint = shipped(engine, engine.model.generator.state_dict(), cached.data, tmp_path / "checkpoint")
    empty = tmp_path / "cache"
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(empty))
    refuse_export(monkeypatch)
    frames = OnnxRenderer(engine.model, person, CPU, weights_dir=checkpoint).render(cached.targets)
    np.testing.assert_array_equal(frames, cached.frames)
    assert not empty.exists()  # nothing exported, nothing cached
    assert [p.name for p in checkpoint.iterdir()] == [GRAPH_FILE]  # no temporary file left


@pytest.mark.parametrize("shipped_graph", ["of other weights", "garbage", "truncated"])
def test_a_shipped_graph_that_is_not_these_weights_graph_is_ignored(engine_and_person, cached, tmp_path, monkeypatch,
                                                                   caplog, shipped_graph):
    engine, person = engine_and_person
    checkpoint = shipped(engine, fine_tuned(engine, person).generator_state if shipped_graph == "of other weights"
                         else engine.model.generator.state_dict(), cached.data, tmp_path / "checkpoint")
    path = checkpoint / GRAPH_FILE
    if shipped_graph != "of other weights":
        path.write_bytes(b"not an onnx graph" * 100 if shipped_graph == "garbage" else path.read_bytes()[:-3])
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger=onnx_renderer.__name__):
        frames = OnnxRenderer(engine.model, person, CPU, weights_dir=checkpoint).render(cached.targets)
    assert f"ignoring a broken bundled ONNX graph {path}" in caplog.text or (
        f"ignoring a bundled ONNX graph {path} without this graph's key" in caplog.text)
    np.testing.assert_array_equal(frames, cached.frames)  # exported instead
    assert graphs(tmp_path / "cache") == [cached.name]


def test_a_fine_tuned_person_never_renders_with_the_shipped_graph(engine_and_person, cached, tmp_path, monkeypatch):
    engine, person = engine_and_person
    checkpoint = shipped(engine, engine.model.generator.state_dict(), cached.data, tmp_path / "checkpoint")
    monkeypatch.setenv("ANIMATE_FACE_CACHE", str(tmp_path / "cache"))
    tuned = fine_tuned(engine, person)
    frames = OnnxRenderer(engine.model, tuned, CPU, weights_dir=checkpoint).render(cached.targets)
    assert_same_frames(frames, baked_frames(engine, tuned, cached.targets))
    assert np.abs(frames.astype(int) - cached.frames.astype(int)).mean() > 1


def test_the_shipped_key_holds_across_torch_versions_the_cached_one_does_not(engine_and_person, monkeypatch):
    engine, _ = engine_and_person
    config, state = engine.model.config, engine.model.generator.state_dict()
    cached_key = onnx_cache.graph_key(config, state, DEFAULT_OPSET)
    portable_key = onnx_cache.graph_key(config, state, DEFAULT_OPSET, portable=True)
    assert portable_key != cached_key
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert onnx_cache.graph_key(config, state, DEFAULT_OPSET, portable=True) == portable_key
    assert onnx_cache.graph_key(config, state, DEFAULT_OPSET) != cached_key


def test_the_shipped_graph_is_that_of_the_shipped_weights():
    """The bundled weights' graph must match them and today's generator code, or every user's first run
    exports it again: after changing either, run `python scripts/bundle_graph.py`."""
    folder = bundled_weights_dir()
    model = TalkingHeadModel.from_pretrained(folder, device=CPU).eval()
    assert (folder / GRAPH_FILE).is_file(), "no weights/generator.onnx: run scripts/bundle_graph.py"
    assert onnx_renderer.bundled_session(model, folder, CPU) is not None, (
        "weights/generator.onnx is not the graph of the bundled weights and this code: run scripts/bundle_graph.py")
