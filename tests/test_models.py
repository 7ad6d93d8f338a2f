"""Networks of the paper at the tiny preset: shapes, spectral norm, AdaIN, warp guidance,
projection discriminator, checkpoint round trip and errors, ONNX export."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from animate_cli.config import FORMAT_VERSION, get_preset
from animate_cli.errors import UsageError, WeightsError
from animate_cli.models import Discriminator, Embedder, Generator, TalkingHeadModel, read_checkpoint_config
from animate_cli.models.blocks import SelfAttention, SpectralNorm, fold_spectral_norm, has_spectral_norm
from animate_cli.models.stats import count_parameters, generator_gflops

TINY = get_preset("tiny")


def images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def tiny_model() -> TalkingHeadModel:
    torch.manual_seed(0)
    return TalkingHeadModel(TINY.replace(num_videos=3)).eval()


def test_tiny_shapes_and_ranges(tiny_model: TalkingHeadModel) -> None:
    size, emb = TINY.image_size, TINY.embedding_dim
    x, y = images(2, size, 1), images(2, size, 2)
    with torch.no_grad():
        e = tiny_model.embedder(x, y)
        psi = tiny_model.generator.project(e)
        frame = tiny_model.generator(y, psi)
        out = tiny_model.discriminator(x, y, torch.tensor([0, 2]))
        person = tiny_model.embed(x, y)
    assert e.shape == (2, emb) and (e >= 0).all()  # ReLU after sum pooling
    assert psi.shape == (2, tiny_model.generator.adain_size)
    assert frame.shape == (2, 3, size, size)
    assert frame.abs().max() <= 1.0 and frame.std() > 0.05
    assert out.score.shape == (2,) and out.v.shape == (2, emb) and (out.v >= 0).all()
    # 3 down blocks, attention at 4 px, the extra block at the bottom.
    assert [tuple(f.shape[1:]) for f in out.features] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 4, 4), (32, 4, 4)]
    assert torch.allclose(person, e.mean(0))


def test_small_forward() -> None:
    torch.manual_seed(0)
    config = get_preset("small")
    generator, embedder = Generator(config).eval(), Embedder(config).eval()
    x, y = images(1, config.image_size, 3), images(1, config.image_size, 4)
    with torch.no_grad():
        frame = generator(y, generator.project(embedder(x, y)))
    assert frame.shape == (1, 3, 128, 128) and frame.abs().max() <= 1.0
    assert sum(isinstance(m, SelfAttention) for m in generator.modules()) == 2  # 16 px down, 32 px up


def test_spectral_norm_on_every_conv_and_linear(tiny_model: TalkingHeadModel) -> None:
    layers = [m for m in tiny_model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) > 30
    assert all(has_spectral_norm(layer) for layer in layers)
    # The normalised weight has spectral norm 1 (power iteration converged at construction).
    weight = tiny_model.generator.projection.weight
    assert torch.linalg.matrix_norm(weight.detach(), ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_eval_mode_does_not_update_spectral_norm_vectors() -> None:
    torch.manual_seed(0)
    generator = Generator(TINY)
    y, psi = images(1, 32, 5), torch.randn(1, generator.adain_size)
    sn = generator.out_conv.parametrizations.weight[0]
    assert isinstance(sn, SpectralNorm)
    generator.eval()
    before = sn._u.clone()
    with torch.no_grad():
        first = generator(y, psi)
        second = generator(y, psi)
    assert torch.equal(sn._u, before) and torch.equal(first, second)
    generator.train()
    generator.out_conv.parametrizations.weight.original.data.mul_(torch.rand_like(generator.out_conv.weight) + 0.5)
    generator(y, psi)
    assert not torch.equal(sn._u, before)


def test_adain_uses_psi(tiny_model: TalkingHeadModel) -> None:
    generator = tiny_model.generator
    y = images(1, 32, 6)
    torch.manual_seed(1)
    psi_a, psi_b = torch.randn(1, generator.adain_size), torch.randn(1, generator.adain_size)
    with torch.no_grad():
        a, b, a_again = generator(y, psi_a), generator(y, psi_b), generator(y, psi_a)
    assert torch.equal(a, a_again)
    assert (a - b).abs().mean() > 0.05
    # psi of batch 1 broadcasts over a batch of landmark images.
    with torch.no_grad():
        batch = generator(torch.cat([y, y]), psi_a)
    assert torch.allclose(batch[1:], a, atol=1e-5)
    with pytest.raises(ValueError, match="psi must have shape"):
        generator(y, psi_a[:, :-1])


def test_warp_guidance_starts_at_warped_photo() -> None:
    torch.manual_seed(0)
    generator = Generator(TINY.replace(guidance="warp")).eval()
    y, warped = images(2, 32, 7), images(2, 32, 8)
    psi = generator.project(torch.rand(2, TINY.embedding_dim) * 3)
    with torch.no_grad():
        frame, mask = generator.forward_with_mask(y, psi, warped)
    assert mask.shape == (2, 1, 32, 32)
    assert torch.allclose(mask, torch.full_like(mask, 0.02), atol=1e-4)
    assert (frame - warped).abs().mean() < 0.05
    assert frame.abs().max() <= 1.0
    # The parts: the frame is the mask's blend of the network's own image and the warp.
    with torch.no_grad():
        same, same_mask, generated = generator.forward_parts(y, psi, warped)
    assert torch.equal(same, frame) and torch.equal(same_mask, mask)
    assert torch.allclose(frame, mask * generated + (1 - mask) * warped, atol=1e-6)
    assert (generated - warped).abs().mean() > 0.1                # untrained: its own image is not the warp
    with pytest.raises(ValueError, match="warped source image is required"):
        generator(y, psi)


def test_blend_region_keeps_the_warp_outside_it() -> None:
    torch.manual_seed(0)
    config = TINY.replace(guidance="warp", blend_region="mouth_border")
    assert config.uses_region and not TINY.replace(guidance="warp").uses_region
    generator = Generator(config).eval()
    y, warped = images(2, 32, 7), images(2, 32, 8)
    psi = generator.project(torch.rand(2, TINY.embedding_dim) * 3)
    region = torch.zeros(2, 1, 32, 32)
    region[:, :, 20:28, 10:22] = 1.0  # "the mouth"
    region[1, :, :4] = 0.5           # a soft edge
    with torch.no_grad():
        frame, mask, generated = generator.forward_parts(y, psi, warped, region)
        unlimited = Generator(TINY.replace(guidance="warp")).eval()
        unlimited.load_state_dict(generator.state_dict())
        _, free_mask, _ = unlimited.forward_parts(y, psi, warped)
    assert torch.allclose(mask, free_mask * region)
    outside = (region == 0).expand_as(frame)
    assert torch.equal(frame[outside], warped[outside])               # the skin is exactly the warp
    assert torch.allclose(frame, mask * generated + (1 - mask) * warped, atol=1e-6)
    assert (frame - warped)[:, :, 20:28, 10:22].abs().mean() > 1e-3   # the generator acts inside
    with pytest.raises(ValueError, match="region of the target landmarks is required"):
        generator(y, psi, warped)
    with pytest.raises(UsageError, match="blend_region must be one of"):
        TINY.replace(blend_region="eyes")


def test_no_guidance_ignores_warped(tiny_model: TalkingHeadModel) -> None:
    generator = tiny_model.generator
    y, psi = images(1, 32, 9), torch.randn(1, generator.adain_size)
    with torch.no_grad():
        plain, mask = generator.forward_with_mask(y, psi)
        with_warped = generator(y, psi, images(1, 32, 10))
    assert mask is None
    assert torch.equal(plain, with_warped)


def test_discriminator_projection_formula(tiny_model: TalkingHeadModel) -> None:
    d = tiny_model.discriminator
    x, y = images(3, 32, 11), images(3, 32, 12)
    index = torch.tensor([2, 0, 1])
    with torch.no_grad():
        d.b.fill_(0.3)
        out = d(x, y, index)
        manual = torch.stack([out.v[k] @ (d.W[:, index[k]] + d.w0) for k in range(3)]) + 0.3
        w = torch.rand(TINY.embedding_dim)
        with_w = d(x, y, w=w)
        plain = d(x, y)
    assert out.v.abs().sum() > 0
    assert torch.allclose(out.score, manual, atol=1e-5)
    assert torch.allclose(with_w.score, out.v @ w + 0.3, atol=1e-5)
    assert torch.allclose(plain.score, out.v @ d.w0 + 0.3, atol=1e-5)
    assert d.W.shape == (TINY.embedding_dim, 3)


def test_save_and_load_round_trip(tiny_model: TalkingHeadModel, tmp_path) -> None:
    x, y = images(2, 32, 13), images(2, 32, 14)

    def outputs(model: TalkingHeadModel) -> list[torch.Tensor]:
        with torch.no_grad():
            e = model.embedder(x, y)
            frame = model.generator(y, model.generator.project(e))
            return [e, frame, model.discriminator(x, y, torch.tensor([1, 2])).score]

    reference = outputs(tiny_model)
    folder = tiny_model.save_pretrained(tmp_path / "ckpt", training={"steps": 7})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    data = json.loads((folder / "config.json").read_text())
    assert data == {"format_version": FORMAT_VERSION, "model": tiny_model.config.to_dict(), "training": {"steps": 7}}
    assert "animate-face" in (folder / "README.md").read_text()
    config, training = read_checkpoint_config(folder)
    assert config == tiny_model.config and training == {"steps": 7}

    loaded = TalkingHeadModel.from_pretrained(folder)
    assert not loaded.training
    for a, b in zip(reference, outputs(loaded)):
        assert torch.equal(a, b)

    half = tiny_model.save_pretrained(tmp_path / "half", half=True, model_card="# card\n")
    assert (half / "README.md").read_text() == "# card\n"
    assert (half / "model.safetensors").stat().st_size < 0.6 * (folder / "model.safetensors").stat().st_size
    loaded_half = TalkingHeadModel.from_pretrained(half)
    assert loaded_half.generator.out_conv.parametrizations.weight.original.dtype == torch.float32
    for a, b in zip(reference, outputs(loaded_half)):
        assert torch.allclose(a, b, atol=2e-2 * (1 + a.abs().max().item()))


def test_weights_errors(tiny_model: TalkingHeadModel, tmp_path) -> None:
    with pytest.raises(WeightsError, match="checkpoint folder not found") as error:
        TalkingHeadModel.from_pretrained(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)

    folder = tiny_model.save_pretrained(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    config_path = folder / "config.json"
    good_bytes, good_config = weights.read_bytes(), config_path.read_text()

    weights.write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated") as error:
        TalkingHeadModel.from_pretrained(folder)
    assert str(weights) in str(error.value) and "\n" not in str(error.value)

    weights.unlink()
    with pytest.raises(WeightsError, match="model.safetensors not found") as error:
        TalkingHeadModel.from_pretrained(folder)
    assert str(weights) in str(error.value)
    weights.write_bytes(good_bytes)

    data = json.loads(good_config)
    data["format_version"] = FORMAT_VERSION + 1
    config_path.write_text(json.dumps(data))
    with pytest.raises(WeightsError) as error:
        TalkingHeadModel.from_pretrained(folder)
    assert str(error.value) == (f"{config_path}: was written by format version {FORMAT_VERSION + 1}; "
                                f"this animate-face reads version {FORMAT_VERSION}")

    config_path.write_text("{not json")
    with pytest.raises(WeightsError, match="cannot read checkpoint config"):
        TalkingHeadModel.from_pretrained(folder)

    # A config that does not fit the weights: W has 3 columns, the config says 5.
    data["format_version"] = FORMAT_VERSION
    data["model"]["num_videos"] = 5
    config_path.write_text(json.dumps(data))
    with pytest.raises(WeightsError) as error:
        TalkingHeadModel.from_pretrained(folder)
    assert str(error.value) == (f"{weights}: weights do not match the model config: discriminator.W has shape "
                                f"(32, 3), expected (32, 5)")

    data["model"]["attention"] = False
    data["model"]["num_videos"] = 3
    config_path.write_text(json.dumps(data))
    expected = (r"do not match the model config: missing generator\.up\.1\.\S+, .* more; "
                r"unexpected discriminator\.blocks\.3\.gamma, ")
    with pytest.raises(WeightsError, match=expected):
        TalkingHeadModel.from_pretrained(folder)

    config_path.unlink()
    with pytest.raises(WeightsError, match="config.json not found") as error:
        TalkingHeadModel.from_pretrained(folder)
    assert str(config_path) in str(error.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("guidance", ["none", "warp"])
def test_onnx_export_matches_torch(guidance: str) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    generator = Generator(TINY.replace(guidance=guidance)).eval()
    names = ["landmark_image", "psi"] + (["warped"] if guidance == "warp" else [])
    y, psi = images(1, 32, 15), torch.randn(1, generator.adain_size)
    example = (y, psi) + ((images(1, 32, 18),) if guidance == "warp" else ())
    buffer = io.BytesIO()
    torch.onnx.export(generator, example, buffer, dynamo=False, input_names=names, output_names=["frame"],
                      dynamic_axes={name: {0: "n"} for name in names + ["frame"]})
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    inputs = (images(3, 32, 16), torch.randn(3, generator.adain_size)) + (
        (images(3, 32, 19),) if guidance == "warp" else ())
    result = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})[0]
    with torch.no_grad():
        expected = generator(*inputs).numpy()
    assert result.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(result, expected, atol=1e-4)


def test_fold_spectral_norm_keeps_the_function() -> None:
    torch.manual_seed(0)
    generator = Generator(TINY).eval()
    y, psi = images(1, 32, 17), torch.randn(1, generator.adain_size)
    with torch.no_grad():
        before = generator(y, psi)
        fold_spectral_norm(generator)
        after = generator(y, psi)
    assert not any(has_spectral_norm(m) for m in generator.modules())
    assert torch.allclose(before, after, atol=1e-6)


def test_generator_gflops_counts_two_per_multiply_add() -> None:
    torch.manual_seed(0)
    generator = Generator(TINY).eval()
    manual = [0]

    def conv_hook(module: nn.Conv2d, inputs, output) -> None:
        kh, kw = module.kernel_size
        manual[0] += 2 * output.numel() * module.in_channels * kh * kw

    def attention_hook(module: SelfAttention, inputs, output) -> None:
        n, c, h, w = inputs[0].shape
        keys = (h // 2) * (w // 2)
        # query.key products (c' per pair) and attention-weighted values (cv per pair).
        manual[0] += 2 * h * w * keys * (module.query.out_channels + module.value.out_channels)

    for module in generator.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(conv_hook)
        if isinstance(module, SelfAttention):
            module.register_forward_hook(attention_hook)
    with torch.no_grad():
        generator(torch.zeros(1, 3, 32, 32), torch.zeros(1, generator.adain_size))
    # generator_gflops also counts the spectral norm mat-vec products (tiny): allow 1 %.
    assert generator_gflops(TINY) == pytest.approx(manual[0] / 1e9, rel=1e-2)
    assert count_parameters(generator) == sum(p.numel() for p in generator.parameters())
    assert count_parameters(generator) > count_parameters(Discriminator(TINY)) > 0


def test_failed_save_leaves_nothing_behind(tiny_model: TalkingHeadModel, tmp_path, monkeypatch) -> None:
    import animate_cli.models.bundle as bundle
    from animate_cli.errors import OutputError

    def card_fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    folder = tmp_path / "ckpt"
    monkeypatch.setattr(bundle.Path, "write_text", card_fails)
    with pytest.raises(OutputError, match="cannot write checkpoint: No space left on device") as error:
        tiny_model.save_pretrained(folder)
    assert str(folder) in str(error.value)
    assert list(folder.iterdir()) == []  # neither the weights nor any temporary file
