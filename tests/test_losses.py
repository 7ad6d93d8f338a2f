"""Loss values on known inputs, the substitute content loss, and the VGG loading paths."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage.data import astronaut

from animate_cli import losses
from animate_cli.errors import WeightsError
from animate_cli.losses import (ContentLoss, VGGFeatures, feature_matching_loss, hinge_discriminator_loss,
                                hinge_generator_loss, match_loss, vgg19, vggface)


def test_hinge_discriminator_loss_known_values() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1.5)=1.5 -> 0.75.
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(1.0)
    # Confident, correct scores cost nothing (the ReLU; without it this would be -8).
    assert hinge_discriminator_loss(torch.tensor([5.0]), torch.tensor([-5.0])).item() == 0.0
    assert hinge_discriminator_loss(torch.tensor([-1.0]), torch.tensor([1.0])).item() == pytest.approx(4.0)


def test_hinge_generator_loss() -> None:
    assert hinge_generator_loss(torch.tensor([2.0, -1.0, 0.5])).item() == pytest.approx(-0.5)


def test_feature_matching_loss_value_and_detach() -> None:
    real = [torch.zeros(1, 2, 2, 2, requires_grad=True), torch.ones(1, 3)]
    fake = [torch.full((1, 2, 2, 2), 0.5, requires_grad=True), torch.tensor([[1.0, 3.0, -1.0]], requires_grad=True)]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(0.5 + 4.0 / 3.0)
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None
    with pytest.raises(ValueError):
        feature_matching_loss(real, fake[:1])


def test_match_loss_value() -> None:
    w = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    e = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    assert match_loss(w, e).item() == pytest.approx(0.75)


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """The astronaut photo at 64 px, (1, 3, 64, 64) in [-1, 1]."""
    image = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(image, size=(64, 64), mode="area")


def blur(images: torch.Tensor, radius: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(images, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def test_substitute_content_loss(face: torch.Tensor) -> None:
    loss = ContentLoss()
    assert loss.mode == "substitute" and "pyramid" in loss.description
    assert loss(face, face).item() == 0.0
    blurred = [loss(blur(face, r), face).item() for r in (1, 2, 4)]
    assert 0 < blurred[0] < blurred[1] < blurred[2]
    shifted = [loss(torch.roll(face, shifts=s, dims=3), face).item() for s in (1, 3)]
    assert 0 < shifted[0] < shifted[1]
    generated = face.clone().requires_grad_(True)
    loss(generated + 0.1 * torch.randn_like(face), face).backward()
    assert generated.grad.abs().sum() > 0


def write_timm_vgg19(path, seed: int = 0) -> VGGFeatures:
    """A randomly initialised VGG19 saved under timm's key names, with the classifier keys
    timm's file also has (which the loader must ignore)."""
    torch.manual_seed(seed)
    network = vgg19()
    tensors = {key: value.contiguous() for key, value in network.state_dict().items()}
    tensors["features.30.weight"] = torch.zeros(4)  # beyond relu5_1: ignored
    tensors["pre_logits.fc1.weight"] = torch.zeros(2, 2)
    tensors["head.fc.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path))
    return network


def test_perceptual_content_loss_from_local_vgg19(tmp_path, face: torch.Tensor) -> None:
    path = tmp_path / "vgg19.safetensors"
    reference = write_timm_vgg19(path)
    loss = ContentLoss.from_available(vgg19=path, allow_download=False, face=False)
    assert loss.mode == "perceptual" and "VGG19" in loss.description and loss.vggface is None
    # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision/timm numbering.
    assert loss.vgg19.taps == [1, 6, 11, 20, 29] and len(loss.vgg19.features) == 30
    assert torch.equal(loss.vgg19.features[28].weight, reference.features[28].weight)
    assert not any(p.requires_grad for p in loss.vgg19.parameters())

    other = blur(face, 2)
    assert loss(face, face).item() == 0.0
    # The value by hand: ImageNet normalisation of [0, 1] images, mean L1 per layer, summed, x 0.15.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        a, b = reference(((other + 1) / 2 - mean) / std), reference(((face + 1) / 2 - mean) / std)
    expected = 0.15 * sum(F.l1_loss(x, y) for x, y in zip(a, b))
    assert loss(other, face).item() == pytest.approx(expected.item(), rel=1e-4)
    generated = other.clone().requires_grad_(True)
    loss(generated, face).backward()
    assert generated.grad.abs().sum() > 0


def test_environment_variable_and_vggface_names(tmp_path, monkeypatch, face: torch.Tensor) -> None:
    path = tmp_path / "vgg19.safetensors"
    write_timm_vgg19(path)
    monkeypatch.setenv("ANIMATE_FACE_VGG19", str(path))
    # VGGFace conversions name layers conv1_1 ... conv5_3.
    torch.manual_seed(1)
    face_net = vggface()
    tensors = {f"{name}.{kind}": getattr(face_net.features[index], kind).contiguous()
               for name, index in face_net.conv_names.items() if index < len(face_net.features)
               for kind in ("weight", "bias")}
    face_path = tmp_path / "vggface.safetensors"
    save_file(tensors, str(face_path))
    monkeypatch.setenv("ANIMATE_FACE_VGGFACE", str(face_path))
    loss = ContentLoss.from_available(allow_download=False)
    assert loss.vgg19 is not None and loss.vggface is not None
    assert torch.equal(loss.vggface.features[24].weight, face_net.features[24].weight)
    assert "VGGFace x 0.025" in loss.description
    assert loss(blur(face, 1), face).item() > 0


def test_download_path_and_offline_fallback(tmp_path, monkeypatch, caplog) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    import animate_cli.losses as losses

    monkeypatch.delenv("ANIMATE_FACE_VGG19", raising=False)
    monkeypatch.delenv("ANIMATE_FACE_VGGFACE", raising=False)
    path = tmp_path / "model.safetensors"
    write_timm_vgg19(path)
    calls = []

    def cached(repo_id: str, filename: str, local_files_only: bool = False) -> str:
        calls.append((repo_id, filename, local_files_only))
        return str(path)

    # In the cache: used without touching the network.
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cached)
    assert ContentLoss.from_available().mode == "perceptual"
    assert calls == [("timm/vgg19.tv_in1k", "model.safetensors", True)]

    def downloadable(repo_id: str, filename: str, local_files_only: bool = False) -> str:
        calls.append((repo_id, filename, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not in the cache")
        return str(path)

    # Not cached, Hub reachable: downloaded.
    calls.clear()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", downloadable)
    monkeypatch.setattr(losses, "_hub_reachable", lambda timeout=2.0: True)
    assert ContentLoss.from_available().mode == "perceptual"
    assert [c[2] for c in calls] == [True, False]

    # Not cached, Hub unreachable: no download attempted, the substitute; said once at INFO (offline is the
    # normal state, nothing for the user to act on), never as a warning.
    calls.clear()
    monkeypatch.setattr(losses, "_hub_reachable", lambda timeout=2.0: False)
    with caplog.at_level(logging.INFO, logger="animate_cli.losses"):
        loss = ContentLoss.from_available()
    assert loss.mode == "substitute"
    assert [c[2] for c in calls] == [True]
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "VGG19" in r.getMessage()]
    assert len(notes) == 1 and "VGG19 weights unavailable" in notes[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # Downloads not allowed: the Hub is not asked at all.
    calls.clear()
    assert ContentLoss.from_available(allow_download=False).mode == "substitute" and calls == []


def test_hub_reachability_is_false_when_closed_or_offline(monkeypatch) -> None:
    import socket

    from huggingface_hub import constants

    import animate_cli.losses as losses

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert losses._hub_reachable() is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert losses._hub_reachable() is False


def test_bad_vgg_files_raise(tmp_path) -> None:
    with pytest.raises(WeightsError, match="VGG weights file not found"):
        ContentLoss.from_available(vgg19=tmp_path / "missing.safetensors", allow_download=False)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(WeightsError, match="corrupt or truncated") as error:
        ContentLoss.from_available(vgg19=broken, allow_download=False)
    assert str(broken) in str(error.value)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, str(wrong))
    with pytest.raises(WeightsError, match="missing features.10.bias"):
        ContentLoss.from_available(vgg19=wrong, allow_download=False)
    np.testing.assert_equal(len(losses.VGG19_LAYOUT), 20)
