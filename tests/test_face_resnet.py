"""dlib's face-descriptor ResNet in torch: parity with dlib, the cache, the chips and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animate_cli.errors import WeightsError
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.landmarks.dlib_backend import DlibBackend, face_model_path
from animate_cli.losses import ContentLoss, FaceLoss
from animate_cli.models import face_resnet
from animate_cli.models.face_resnet import face_chips, installed_dat_path, load_face_resnet, read_dlib_resnet

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> face_resnet.FaceResNet:
    return load_face_resnet(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def dlib_models():
    detector = dlib.get_frontal_face_detector()
    five = dlib.shape_predictor(str(face_model_path("shape_predictor_5_face_landmarks.dat", "tests")))
    recogniser = dlib.face_recognition_model_v1(str(installed_dat_path()))
    return detector, five, recogniser


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def load_rgb(path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def five_points(image: np.ndarray, dlib_models):
    detector, five, _ = dlib_models
    shape = five(image, max(detector(image, 1), key=lambda r: r.area()))
    return shape, np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def real_faces(realdata=None) -> list[np.ndarray]:
    faces = [astronaut()]
    if realdata is not None:
        faces += [load_rgb(realdata / name) for name in ("facerec_obama.jpg", "facerec_knn_train_rose_leslie_img1.jpg",
                                                         "tpsmm_source.png", "liveportrait_s9.jpg")]
    return faces


def check_parity(network, dlib_models, image: np.ndarray) -> None:
    shape, _ = five_points(image, dlib_models)
    chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
    expected = np.asarray(dlib_models[2].compute_face_descriptor(chip))
    with torch.no_grad():
        found = network(to_tensor(chip))[0].numpy()
    np.testing.assert_allclose(found, expected, atol=1e-4)


def test_descriptors_match_dlib_on_a_real_face(network, dlib_models) -> None:
    check_parity(network, dlib_models, astronaut())


def test_descriptors_match_dlib_on_realdata_faces(network, dlib_models, realdata) -> None:
    for image in real_faces(realdata)[1:]:
        check_parity(network, dlib_models, image)


def test_torch_chip_sees_what_dlib_sees(network, dlib_models) -> None:
    image = astronaut()
    shape, points5 = five_points(image, dlib_models)
    expected = np.asarray(dlib_models[2].compute_face_descriptor(image, shape))
    points = np.zeros((68, 2), np.float32)
    points[list(face_resnet.CHIP_POINTS_68)] = points5  # the 68-point landmarks with the 5 points' meaning
    chip = face_chips(to_tensor(image), torch.from_numpy(points[None]))
    dlib_chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
    assert np.abs(chip[0].permute(1, 2, 0).numpy() - dlib_chip).mean() < 1.0  # grey levels
    with torch.no_grad():
        assert np.linalg.norm(network(chip)[0].numpy() - expected) < 0.01  # dlib: < 0.6 is the same person


def test_chips_of_a_big_face_are_pre_shrunk_not_aliased(network) -> None:
    # A 4x enlarged photo gives (nearly) the chip of the original: the area pre-shrink stands in
    # for dlib's pyramid.
    image = astronaut()
    points = np.asarray(DlibBackend().landmarks(image, DlibBackend().detect_faces(image)[0].box), np.float32)
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    small_chip = face_chips(to_tensor(image), torch.from_numpy(points[None]))
    big_chip = face_chips(to_tensor(big), torch.from_numpy(points[None] * 4 + 1.5))
    assert (small_chip - big_chip).abs().mean() < 4.0


def test_cache_is_written_then_used_and_refreshed_when_the_file_changes(tmp_path, monkeypatch) -> None:
    dat = tmp_path / face_resnet.DAT_FILE
    dat.write_bytes(installed_dat_path().read_bytes())
    cache = tmp_path / "cache"
    first = load_face_resnet(dat, cache)
    assert (cache / face_resnet.CACHE_NAME).is_file()
    face_resnet._load.cache_clear()

    def no_parse(path):
        raise AssertionError("parsed again although the cache is current")

    monkeypatch.setattr(face_resnet, "read_dlib_resnet", no_parse)
    second = load_face_resnet(dat, cache)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))

    # The source file changed (another version installed): parsed again.
    face_resnet._load.cache_clear()
    import os

    os.utime(dat, ns=(1, 1))
    with pytest.raises(AssertionError, match="parsed again"):
        load_face_resnet(dat, cache)


def test_broken_network_files_raise_naming_the_file(tmp_path) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(installed_dat_path().read_bytes()[:5_000_000])
    with pytest.raises(WeightsError, match="not dlib's face-descriptor network") as error:
        read_dlib_resnet(truncated)
    assert str(truncated) in str(error.value)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(WeightsError, match="no metric loss layer"):
        read_dlib_resnet(other)
    with pytest.raises(WeightsError, match="missing"):
        load_face_resnet(tmp_path / "absent.dat", tmp_path / "cache")


def crop_of(image: np.ndarray, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The face crop inference and training use, in [-1, 1], with its landmarks."""
    backend = DlibBackend()
    points = np.asarray(backend.landmarks(image, backend.detect_faces(image)[0].box), np.float32)
    crop = crop_from_landmarks(points, size)
    pixels = crop.crop_image(image)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return tensor, torch.from_numpy(crop.points_to_crop(points)[None].astype(np.float32))


def test_face_loss_on_known_inputs(network) -> None:
    loss = FaceLoss(network)
    face, points = crop_of(astronaut())
    perceptual, identity = loss.terms(face, face, points)
    assert perceptual.item() == 0.0 and identity.item() < 1e-5
    shifted = [loss(torch.roll(face, shifts=s, dims=3), face, points).item() for s in (1, 3)]
    assert 0 < shifted[0] < shifted[1]
    blurred = torch.nn.functional.avg_pool2d(face, 5, 1, 2, count_include_pad=False)
    assert loss(blurred, face, points).item() > shifted[0]
    generated = (face + 0.05 * torch.randn_like(face)).requires_grad_(True)
    loss(generated, face, points).backward()
    assert generated.grad.abs().sum() > 0


def test_a_different_person_costs_more_than_a_shifted_copy(network, realdata) -> None:
    loss = FaceLoss(network)
    faces = [crop_of(image) for image in real_faces(realdata)]
    for index, (face, points) in enumerate(faces):
        shifted = loss.terms(torch.roll(face, shifts=3, dims=3), face, points)
        for other, _ in faces[:index] + faces[index + 1:]:
            different = loss.terms(other, face, points)
            assert different[0] > shifted[0] and different[1] > shifted[1]
            assert different[1] > 0.5  # the descriptor distance of two people


def test_content_loss_adds_the_face_term_and_needs_landmarks(network) -> None:
    loss = ContentLoss(face_loss=FaceLoss(network))
    assert loss.needs_points and "face ResNet" in loss.description
    face, points = crop_of(astronaut())
    with pytest.raises(ValueError, match="landmarks"):
        loss(face, face)
    shifted = torch.roll(face, shifts=2, dims=3)
    plain = ContentLoss()(shifted, face).item()
    assert loss(shifted, face, points).item() > plain > 0
    assert ContentLoss.from_available(allow_download=False).needs_points
    assert not ContentLoss.from_available(allow_download=False, face=False).needs_points
