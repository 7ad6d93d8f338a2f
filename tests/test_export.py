"""ONNX export, the onnxruntime renderer's parity with torch, `--backend onnx`, and the overlapped
pipeline's ordering, error propagation and cleanup."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.config import FinetuneConfig
from animate_cli.export import export_generator, person_generator
from animate_cli.io.video import probe_output
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack
from animate_cli.landmarks.regions import blend_regions
from animate_cli.render.onnx_renderer import OnnxRenderer
from animate_cli.render.pipeline import Driver, RenderConfig, compose_frames, render_video
from animate_cli.render.renderers import NeuralRenderer, WarpRenderer, resolve_render_backend

runner = CliRunner()
CPU = torch.device("cpu")
# Parity tolerance on uint8 crops: the two runtimes order float sums differently (about 1e-6 apart
# before rounding), so a pixel may round to the neighbouring level; the detail path adds one more
# rounding of the upsampled correction.
MAX_LEVELS, MEAN_LEVELS = 2, 0.5


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_engine(weights):
    return build_engine(str(weights), landmarks="dlib", device="cpu", backend="torch")


@pytest.fixture(scope="module", params=["warp", "none", "warp-region"])
def engine_and_person(request, tiny_weights, tiny_paper_weights, tiny_region_weights, portrait_path):
    engine = make_engine({"warp": tiny_weights, "none": tiny_paper_weights,
                          "warp-region": tiny_region_weights}[request.param])
    torch.manual_seed(0)
    person = engine.make_person([portrait_path], FinetuneConfig(steps=0))
    return engine, person


def moving_targets(person, count: int = 6) -> np.ndarray:
    """The photo's crop landmarks, shifted and opened a little differently in each frame."""
    rng = np.random.default_rng(0)
    base = person.photo.crop_points
    return np.stack([base + rng.normal(0, 0.6, base.shape) + [i * 0.3, -i * 0.2] for i in range(count)]
                    ).astype(np.float32)


def test_export_writes_the_persons_generator_with_a_dynamic_batch(tmp_path, engine_and_person):
    engine, person = engine_and_person
    model = engine.model
    path = export_generator(model, person, tmp_path / "g.onnx")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    warp, region = model.config.guidance == "warp", model.config.uses_region
    names = [i.name for i in graph.graph.input]
    # psi is baked in
    assert names == ["landmark_images"] + ["warped"] * warp + ["region"] * region
    assert [o.name for o in graph.graph.output] == ["frames"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]  # no temporary left

    size = model.config.image_size
    torch.manual_seed(1)
    # A batch other than the traced 2.
    inputs = [torch.rand(3, 1 if name == "region" else 3, size, size) * (1 if name == "region" else 2)
              - (0 if name == "region" else 1) for name in names]
    with torch.no_grad():
        expected = model.generator(inputs[0], person.adain_params[None].expand(3, -1),
                                   inputs[1] if warp else None, inputs[2] if region else None).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (frames,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    assert frames.shape == (3, 3, size, size)
    np.testing.assert_allclose(frames, expected, atol=1e-4)
    with pytest.raises(Exception, match="exists"):
        export_generator(model, person, path)


def test_export_uses_the_fine_tuned_generator(tmp_path, tiny_weights, portrait_path):
    engine = make_engine(tiny_weights)
    person = engine.make_person([portrait_path], FinetuneConfig(steps=0))
    # A stand-in for fine-tuning (which is tested elsewhere): the same weights, changed.
    state = {name: tensor.clone() for name, tensor in engine.model.generator.state_dict().items()}
    for name, tensor in state.items():
        if name.endswith("weight.original"):
            tensor.mul_(1.0 + 0.2 * torch.randn_like(tensor))
    person.generator_state = state
    path = export_generator(engine.model, person, tmp_path / "tuned.onnx")
    size = engine.model.config.image_size
    landmarks, warped = (torch.rand(2, 3, size, size) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        tuned = person_generator(engine.model, person)(landmarks, warped).numpy()
        meta = engine.model.generator(landmarks, person.adain_params[None], warped).numpy()
    (frames,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"landmark_images": landmarks.numpy(), "warped": warped.numpy()})
    np.testing.assert_allclose(frames, tuned, atol=1e-4)
    assert np.abs(frames - meta).max() > 1e-3  # the person's weights, not the meta-learned ones
    # Folding spectral norm for inference left the shared model untouched.
    assert hasattr(engine.model.generator.out_conv, "parametrizations")
    engine.model.generator.out_conv.weight  # noqa: B018 - raises if the parametrization was broken


def test_onnx_renderer_matches_torch(engine_and_person):
    engine, person = engine_and_person
    # With warp guidance, through the detail path too (sharp warp at 64 px + upsampled correction).
    detail_size = 64 if engine.model.config.guidance == "warp" else None
    targets = moving_targets(person)
    torch_crops = NeuralRenderer(engine.model, person, CPU, detail_size=detail_size).render(targets)
    onnx_renderer = OnnxRenderer(engine.model, person, CPU, detail_size=detail_size)
    onnx_crops = onnx_renderer.render(targets)
    size = detail_size or engine.model.config.image_size
    assert onnx_renderer.size == size
    assert torch_crops.shape == onnx_crops.shape == (len(targets), size, size, 3)
    assert onnx_crops.dtype == np.uint8
    difference = np.abs(torch_crops.astype(int) - onnx_crops.astype(int))
    assert difference.max() <= MAX_LEVELS and difference.mean() < MEAN_LEVELS
    assert torch_crops.std(axis=0).mean() > 0.5  # the frames move, so the comparison means something


def test_region_model_keeps_the_warp_on_the_skin_after_finetuning(tiny_region_weights, portrait_path):
    engine = make_engine(tiny_region_weights)
    torch.manual_seed(0)
    person = engine.make_person([portrait_path], FinetuneConfig(steps=2))
    assert person.generator_state is not None                      # fine-tuned with its regions
    targets = moving_targets(person)
    crops = NeuralRenderer(engine.model, person, CPU).render(targets)
    warps = WarpRenderer(person).render(targets)
    size = engine.model.config.image_size
    regions = blend_regions(targets, size, "mouth_border")[:, 0]
    skin, free = regions < 0.01, regions > 0.5
    assert skin.mean() > 0.1 and free.mean() > 0.2
    difference = np.abs(crops.astype(int) - warps.astype(int)).max(axis=-1)
    assert difference[skin].max() <= 1                             # uint8 rounding only
    assert difference[free].mean() > difference[skin].mean()


def test_auto_backend_is_torch_on_cuda_and_checked():
    assert resolve_render_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_render_backend("auto", CPU) in ("torch", "onnx")
    assert resolve_render_backend("onnx", CPU) == "onnx"
    with pytest.raises(Exception, match="unknown backend 'tensorrt'"):
        resolve_render_backend("tensorrt", CPU)


def test_cli_export_writes_onnx_and_refuses_to_overwrite(tmp_path, tiny_weights, portrait_path):
    out = tmp_path / "person.onnx"
    args = ("export", portrait_path, "-o", out, "--weights", tiny_weights, "--finetune-steps", 0,
            "--landmarks", "dlib", "-q")
    result = run(*args)
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["landmark_images", "warped"]
    before = out.read_bytes()
    result = run(*args)
    assert result.exit_code == 7 and "exists; pass --overwrite" in result.output
    assert out.read_bytes() == before
    result = run(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    result = run("export", portrait_path, "-o", tmp_path / "x.pt", "--weights", tiny_weights)
    assert result.exit_code == 2 and "must be an .onnx file" in result.output


def test_cli_backend_onnx_end_to_end(tmp_path, tiny_weights, portrait_path, short_driver):
    out = tmp_path / "onnx.mp4"
    result = run(portrait_path, "--drive", short_driver, "-o", out, "--weights", tiny_weights,
                 "--finetune-steps", 0, "--landmarks", "dlib", "--backend", "onnx", "--crop-only",
                 "--size", 64, "-q")
    assert result.exit_code == 0, result.output
    info = probe_output(out)
    assert info["frame_count"] == 20 and (info["width"], info["height"]) == (64, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["onnx.mp4"]
    result = run(portrait_path, "--drive", short_driver, "-o", tmp_path / "c.mp4", "--weights", tiny_weights,
                 "--device", "cpu", "--compile")
    assert result.exit_code == 2 and "--compile applies to the torch backend on a CUDA GPU" in result.output


# ----------------------------------------------------------------------------------------------
# The overlapped pipeline, with fake renderers


class IndexRenderer:
    """Crop k is filled with the value k (mod 256); raises at the batch numbered ``fail_at``."""

    size = 32

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.batches = 0
        self.next_index = 0

    def render(self, target_points: np.ndarray) -> np.ndarray:
        if self.batches == self.fail_at:
            raise RuntimeError(f"renderer failed at batch {self.batches}")
        self.batches += 1
        values = (np.arange(len(target_points)) + self.next_index) % 256
        self.next_index += len(target_points)
        return np.broadcast_to(values[:, None, None, None], (len(target_points), 32, 32, 3)).astype(np.uint8)


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("generate", "composite")]


def child_processes() -> list[str]:
    """Names of this process's live children (Linux /proc)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            names.append(stat.parent.joinpath("comm").read_text().strip())
    return names


@pytest.fixture(scope="module")
def tiny_person(tiny_weights, portrait_path):
    return make_engine(tiny_weights).make_person([portrait_path], FinetuneConfig(steps=0))


def test_overlapped_pipeline_keeps_frame_order(tiny_person):
    targets = np.repeat(tiny_person.photo.crop_points[None], 50, axis=0)
    config = RenderConfig(crop_only=True, batch_size=4)
    frames = list(compose_frames(IndexRenderer(), tiny_person.photo, targets, config, (32, 32)))
    assert [int(f[0, 0, 0]) for f in frames] == list(range(50))
    assert pipeline_threads() == []


def test_closing_the_pipeline_early_stops_its_threads(tiny_person):
    targets = np.repeat(tiny_person.photo.crop_points[None], 400, axis=0)
    frames = compose_frames(IndexRenderer(), tiny_person.photo, targets, RenderConfig(crop_only=True, batch_size=4),
                            (32, 32))
    assert int(next(frames)[0, 0, 0]) == 0
    assert set(pipeline_threads()) == {"generate", "composite"}
    frames.close()
    assert pipeline_threads() == []


def test_renderer_error_propagates_and_leaves_no_output(tmp_path, tiny_person):
    track = LandmarkTrack(points=np.repeat(tiny_person.photo.points[None], 40, axis=0), valid=np.ones(40, bool),
                          fps=25.0, frame_size=(288, 352))
    driver = Driver(path=tmp_path / "drive.npz", track=track, video=None)
    renderer = IndexRenderer(fail_at=3)
    with pytest.raises(RuntimeError, match="renderer failed at batch 3"):
        render_video(renderer, tiny_person, driver, tmp_path / "out.mp4", RenderConfig(batch_size=4, size=64))
    assert renderer.batches == 3
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file
    assert pipeline_threads() == []
    assert "ffmpeg" not in child_processes()
