"""The learned mouth and eye models: geometry, networks, painting, checkpoints, training, fallback."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from animate_cli.errors import UsageError, WeightsError
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.parts import PARTS_WEIGHTS_NAME, LearnedParts, PartsPainter, load_parts
from animate_cli.parts.geometry import closed_mouth, cut_part, eye_openness, part_masks, part_matrix, to_part
from animate_cli.parts.model import PARTS_PRESETS, PartNet, PartsConfig, read_parts_section
from animate_cli.parts.paint import EYE_CHANGE_START, EYE_OPENING_PHOTO, part_measure, part_strength
from animate_cli.render.warp import FaceWarper, mouth_opening

from conftest import make_checkpoint

TINY = PARTS_PRESETS["tiny"]


@pytest.fixture(scope="module")
def face():
    """The astronaut's face crop (256 px) and its dlib landmarks."""
    from animate_cli.landmarks import create_backend
    from animate_cli.landmarks.tracking import detect_photo_landmarks

    image = skimage_data.astronaut()
    points = detect_photo_landmarks(create_backend("dlib"), image)
    crop = crop_from_landmarks(points, 256)
    return crop.crop_image(image), crop.points_to_crop(points)


def opened(points: np.ndarray, amount: float) -> np.ndarray:
    """The lower lip and chin moved down by ``amount`` of the face size."""
    out = points.astype(np.float64).copy()
    size = float(np.ptp(points, axis=0).max())
    for index in (55, 56, 57, 58, 59, 65, 66, 67, 6, 7, 8, 9, 10):
        out[index, 1] += amount * size
    return out.astype(np.float32)


def blinked(points: np.ndarray) -> np.ndarray:
    out = points.astype(np.float64).copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        out[upper] += (out[lower] - out[upper]) * 0.9
    return out.astype(np.float32)


def test_part_crops_are_aligned_and_the_left_eye_is_mirrored(face):
    _, points = face
    mouth = to_part(part_matrix(points, "mouth", 96), points[[48, 54]])
    assert mouth[0, 0] < 48 < mouth[1, 0] and abs(mouth[0, 1] - mouth[1, 1]) < 6    # corners level, either side
    right = to_part(part_matrix(points, "right_eye", 64), points[[36, 39]])
    left = to_part(part_matrix(points, "left_eye", 64), points[[45, 42]])
    # Both eyes have their outer corner on the crop's left: one eye model serves both.
    assert right[0, 0] < right[1, 0] and left[0, 0] < left[1, 0]
    # A blink does not move the eye crop; an opening mouth does not rescale the mouth crop.
    assert np.allclose(part_matrix(blinked(points), "right_eye", 64), part_matrix(points, "right_eye", 64))
    assert np.allclose(part_matrix(opened(points, 0.05), "mouth", 96)[:, :2],
                       part_matrix(points, "mouth", 96)[:, :2], rtol=0.1)


def test_masks_follow_the_opening(face):
    _, points = face
    closed = closed_mouth(points)
    assert mouth_opening(closed) < 1e-3
    shape_closed, _ = part_masks(closed, "mouth", 96)
    shape_open, hole_open = part_masks(opened(closed, 0.08), "mouth", 96)
    assert shape_closed.sum() < 0.2 * shape_open.sum() and shape_open.sum() > 50
    assert hole_open.sum() > shape_open.sum()           # the lips' inner rim is redrawn too
    assert eye_openness(blinked(points), "right_eye") < 0.5 * eye_openness(points, "right_eye")


def test_the_teeth_fade_out_towards_the_lower_lip(face):
    """``--mouth teeth``: the learned mouth's share is whole in the upper part of the opening (its teeth)
    and on the upper lip's rim, none on and below the lower inner lip (the synthetic interior's dark
    opening and sharp lower-lip edge stay)."""
    from animate_cli.parts.paint import teeth_weight

    _, points = face
    target = opened(closed_mouth(points), 0.1)
    size = TINY.mouth_size * 3
    matrix = part_matrix(target, "mouth", size)
    weight = teeth_weight(target, matrix, size)
    assert weight.shape == (size, size) and weight.dtype == np.float32
    assert 0.0 <= weight.min() and weight.max() <= 1.0
    upper, lower = to_part(matrix, target[[62, 66]]).round().astype(int)
    column = weight[:, upper[0]]
    assert column[upper[1] - 2] > 0.99 and column[upper[1] + 2] > 0.99    # the upper lip's rim, the teeth
    assert column[lower[1] + 1:].max() < 0.01                             # the lower lip and below
    assert np.all(np.diff(column[upper[1] + 2:lower[1] + 1]) <= 1e-6)       # fading out on the way down


def test_the_learned_teeth_give_way_to_the_synthetic_ones_where_the_output_enlarges_them(face):
    """``--mouth teeth`` on a large face: the model draws the mouth at its crop's size, so where the output shows
    that drawing enlarged (a large photo's face) its teeth would be a soft smear; the synthetic interior's crisp
    teeth are left instead, and the mouth model is not run. Shown at its size, the learned teeth are drawn."""
    from animate_cli.parts.paint import TEETH, TEETH_SHOWN, teeth_share
    from animate_cli.parts.geometry import MOUTH_SIDE
    from animate_cli.landmarks.crop import face_size

    image, points = face
    torch.manual_seed(0)
    parts = LearnedParts(TINY).eval()
    closed = closed_mouth(points)
    source = FaceWarper(image, points).warp(closed)
    painter = PartsPainter(parts, source, closed, draw=(TEETH,))
    warper = FaceWarper(source, closed)
    target = opened(closed, 0.1)
    synthetic = warper.warp(target)
    # The output pixels one model pixel covers, at shown = 1.
    enlarged = MOUTH_SIDE * face_size(target.astype(np.float64)) / TINY.mouth_size
    small, large = TEETH_SHOWN[0] / enlarged * 0.99, TEETH_SHOWN[1] / enlarged * 1.01
    assert teeth_share(target, TINY.mouth_size, small) == 1.0 and teeth_share(target, TINY.mouth_size, large) == 0.0
    middle = teeth_share(target, TINY.mouth_size, (small + large) / 2)
    assert 0.0 < middle < 1.0
    calls = []
    handle = parts.mouth.register_forward_hook(lambda *args: calls.append(1))
    alphas = np.zeros((1,) + synthetic.shape[:2], np.float32)
    kept = painter.paint(synthetic[None], target[None], alphas=alphas, shown=large)[0]
    assert np.array_equal(kept, synthetic) and not alphas.any() and not calls
    drawn = painter.paint(synthetic[None], target[None], shown=small)[0]
    handle.remove()
    assert calls and not np.array_equal(drawn, synthetic)


def test_part_network_shapes_and_range():
    torch.manual_seed(0)
    net = PartNet(TINY.channels)
    inputs = torch.rand(2, 9, TINY.mouth_size, TINY.mouth_size) * 2 - 1
    out = net(inputs)
    assert out.shape == (2, 3, TINY.mouth_size, TINY.mouth_size)
    assert out.abs().max() <= 1.0
    with pytest.raises(UsageError):
        PartsConfig(mouth_size=30)


def test_painter_leaves_unchanged_parts_alone_and_paints_only_near_the_part(face):
    image, points = face
    torch.manual_seed(0)
    parts = LearnedParts(TINY).eval()
    closed = closed_mouth(points)
    source = FaceWarper(image, points).warp(closed)
    painter = PartsPainter(parts, source, closed)
    warper = FaceWarper(source, closed)
    same = warper.warp(closed, fill_mouth=False)
    # The photo's own expression: nothing is redrawn, the lips stay exactly as rendered.
    assert np.array_equal(painter.paint(same[None], closed[None])[0], same)
    assert part_strength("mouth", closed, closed) == 0.0

    target = opened(closed, 0.1)
    assert part_strength("mouth", closed, target) == 1.0
    frame = warper.warp(target, fill_mouth=False)
    painted = painter.paint(frame[None], target[None])[0]
    changed = np.abs(painted.astype(int) - frame.astype(int)).max(axis=2) > 0
    assert changed.any()
    ys, xs = np.nonzero(changed)
    lips = target[48:68]
    margin = 0.1 * float(np.ptp(target, axis=0).max())
    assert xs.min() >= lips[:, 0].min() - margin and xs.max() <= lips[:, 0].max() + margin
    assert ys.min() >= lips[:, 1].min() - margin and ys.max() <= lips[:, 1].max() + margin

    blink = blinked(closed)
    assert part_strength("right_eye", closed, blink) == 1.0
    eyes = painter.paint(warper.warp(blink)[None], blink[None])[0]
    assert not np.array_equal(eyes, warper.warp(blink))


def test_the_eye_model_draws_what_the_photo_lacks_not_a_squint_or_a_wider_open_eye(face):
    # A squint (the gap 0.72 of the photo's) shows the photo's own eye between lids slid over it, and an open eye
    # opened wider the photo's eye stretched (render.warp), both sharp at any size; the model draws only what the
    # photo does not show: a closed lid (a blink), or an eye the photo shows shut, opened.
    _, points = face
    squint, wider = points.astype(np.float64).copy(), points.astype(np.float64).copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        gap = points[lower] - points[upper]
        squint[upper] += 0.14 * gap
        squint[lower] -= 0.14 * gap
        wider[upper] -= gap / 3
        wider[lower] += gap / 3
    # (changes the model used to redraw: any over EYE_CHANGE_START)
    assert part_measure("right_eye", squint) < part_measure("right_eye", points) - EYE_CHANGE_START
    assert part_measure("right_eye", wider) > part_measure("right_eye", points) + EYE_CHANGE_START
    assert part_strength("right_eye", points, squint) == 0.0
    assert part_strength("right_eye", points, wider) == 0.0
    assert part_strength("right_eye", points, blinked(points)) == 1.0
    # A photo whose eyes are shut, driven open: the photo has no eye to stretch.
    assert part_measure("right_eye", blinked(points)) < EYE_OPENING_PHOTO[0]
    assert part_strength("right_eye", blinked(points), points) == 1.0


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    torch.manual_seed(1)
    parts = LearnedParts(TINY)
    parts.save(folder, {"steps": 3})
    assert read_parts_section(folder) == (TINY, {"steps": 3})
    loaded = load_parts(folder)
    inputs = torch.rand(1, 9, TINY.eye_size, TINY.eye_size)
    with torch.no_grad():
        assert torch.allclose(loaded.eye(inputs), parts.eval().eye(inputs), atol=1e-5)   # NHWC sums in another order
    # The main networks still load from the folder the part models were added to.
    from animate_cli.models import TalkingHeadModel
    TalkingHeadModel.from_pretrained(folder)
    assert load_parts(make_checkpoint(tmp_path / "plain")) is None

    (folder / PARTS_WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="corrupt"):
        load_parts(folder)
    LearnedParts(PartsConfig(mouth_size=32, eye_size=16, channels=8)).save(tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    config["parts"]["config"] = {"mouth_size": 32, "eye_size": 16, "channels": 8}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / PARTS_WEIGHTS_NAME).write_bytes((tmp_path / "other" / PARTS_WEIGHTS_NAME).read_bytes())
    assert load_parts(folder) is not None
    config["parts"]["config"]["channels"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="do not match"):
        load_parts(folder)


def test_renderers_use_the_part_models_and_fall_back_without_them(tmp_path, portrait_path):
    from animate_cli.jobs import build_engine
    from animate_cli.render.renderers import WarpRenderer

    folder = make_checkpoint(tmp_path / "ckpt")
    LearnedParts(TINY).save(folder)
    with_parts = build_engine(str(folder), landmarks="dlib", device="cpu", renderer="warp", mouth="learned")
    eyes_only = build_engine(str(folder), landmarks="dlib", device="cpu", renderer="warp", mouth="synthetic")
    teeth = build_engine(str(folder), landmarks="dlib", device="cpu", renderer="warp")
    without = build_engine(str(folder), landmarks="dlib", device="cpu", renderer="warp", learned_parts=False)
    neural = build_engine(str(folder), landmarks="dlib", device="cpu", renderer="neural", backend="torch",
                          mouth="learned")
    assert with_parts.parts is not None and neural.parts is not None and without.parts is None
    assert "learned mouth and eyes" in with_parts.summary() and without.summary().endswith("synthetic mouth")
    assert "learned eyes · synthetic mouth" in eyes_only.summary()
    assert "learned eyes · learned teeth over the synthetic mouth" in teeth.summary()
    with pytest.raises(UsageError, match="unknown mouth"):
        build_engine(str(folder), landmarks="dlib", device="cpu", renderer="warp", mouth="plate")

    shots = without.load_photos([portrait_path])
    person = without.make_person(shots, finetune=__import__("animate_cli.config", fromlist=["x"]).FinetuneConfig())
    points = shots[0].crop_points
    target = opened(closed_mouth(points), 0.1)[None]
    synthetic = WarpRenderer(person).render(target)[0]
    learned = WarpRenderer(person, parts=with_parts.parts).render(target)[0]
    # Without part models the warp paints the synthetic interior, as before.
    assert np.array_equal(synthetic, FaceWarper(shots[0].crop_image, points).warp(target[0]))
    assert not np.array_equal(learned, synthetic)
    # A residual mouth model is given the synthetic interior to correct; untrained, it changes nothing.
    import dataclasses
    residual = LearnedParts(dataclasses.replace(TINY, mouth_residual=True)).eval()
    assert np.array_equal(WarpRenderer(person, parts=residual, part_names=("mouth",)).render(target)[0], synthetic)
    # With the synthetic mouth only the eyes are learned: an opening mouth with unchanged eyes is the synthetic one.
    assert eyes_only.frame_renderer(person).painter.draw == ("right_eye", "left_eye")
    assert np.array_equal(eyes_only.frame_renderer(person).render(target)[0], synthetic)
    # The default paints the learned mouth over the synthetic interior, fading out towards the lower
    # lip: the upper part of the opening changes, the lower lip and what is below it do not. That is where
    # the output shows the model's drawing at about its size (``shown``: output pixels per crop pixel); the tiny
    # model's 32 px mouth shown in the crop itself would be enlarged about 6x, and the synthetic teeth stay.
    from animate_cli.landmarks.crop import face_size
    from animate_cli.parts.geometry import MOUTH_SIDE

    renderer = teeth.frame_renderer(person)
    painter = renderer.painter
    assert painter.teeth and painter.draw == ("mouth", "right_eye", "left_eye") and painter.needs_synthetic_mouth
    assert np.array_equal(renderer.render(target)[0], synthetic)
    at_size = TINY.mouth_size / (MOUTH_SIDE * face_size(target[0].astype(np.float64)))
    over = renderer.render_layers(target, shown=at_size)[0].crop
    lower_lip = int(np.ceil(target[0, [65, 66, 67], 1].max()))
    assert np.array_equal(over[lower_lip + 4:], synthetic[lower_lip + 4:])
    upper = target[0, [61, 62, 63]].mean(axis=0)
    opening = over[int(upper[1]) + 1:int(upper[1]) + 4, int(upper[0]) - 6:int(upper[0]) + 6]
    assert not np.array_equal(opening, synthetic[int(upper[1]) + 1:int(upper[1]) + 4, int(upper[0]) - 6:int(upper[0]) + 6])
    blink = blinked(points)[None]
    assert not np.array_equal(eyes_only.frame_renderer(person).render(blink)[0], WarpRenderer(person).render(blink)[0])
    neural_frames = neural.frame_renderer(neural.make_person(neural.load_photos([portrait_path]),
                                                             finetune=__import__("animate_cli.config",
                                                                                 fromlist=["x"]).FinetuneConfig()))
    assert neural_frames.painter is not None
    out = neural_frames.render(target * (neural_frames.model_size / without.crop_size))
    assert out.shape == (1, neural_frames.size, neural_frames.size, 3)


def test_train_parts_writes_a_loadable_checkpoint(tmp_path, short_driver):
    from animate_cli.parts.train import FrameBank, PairSampler, PartsTrainConfig, train_parts
    from animate_cli.train.dataset import prepare_dataset

    source = tmp_path / "videos"
    source.mkdir()
    (source / "speaker.mp4").symlink_to(short_driver)
    prepare_dataset([source], tmp_path / "data", size=64, frames_per_video=20, workers=1)
    bank = FrameBank.load([tmp_path / "data"])
    sampler = PairSampler(bank, TINY, seed=3)
    first, again = sampler.sample("mouth", 5, 1), sampler.sample("mouth", 5, 1)
    assert all(np.array_equal(first[k], again[k]) for k in first)        # a pure function of (seed, step, index)
    assert first["target"].shape == (TINY.mouth_size, TINY.mouth_size, 3) and first["hole"].max() > 0.5
    assert sampler.sample("eye", 6, 0)["source"].shape == (TINY.eye_size, TINY.eye_size, 3)

    folder = make_checkpoint(tmp_path / "ckpt")
    torch.manual_seed(0)
    record = train_parts([tmp_path / "data"], folder, TINY, PartsTrainConfig(steps=4, batch_size=2, save_every=2),
                         workers=0)
    assert record["steps"] == 4 and np.isfinite(record["max_discriminator_loss"])
    assert load_parts(folder).config == TINY and record["critic"] == "patch"
    # The critic on the face ResNet's stages trains through the same loop.
    record = train_parts([tmp_path / "data"], make_checkpoint(tmp_path / "ckpt2"), TINY,
                         PartsTrainConfig(steps=2, batch_size=2, critic="features"), workers=0)
    assert record["critic"] == "features" and np.isfinite(record["max_discriminator_loss"])
    # The tone and edge terms train through it too and are logged with the losses (the edge term for
    # both parts).
    record = train_parts([tmp_path / "data"], make_checkpoint(tmp_path / "ckpt3"), TINY,
                         PartsTrainConfig(steps=2, batch_size=2, tone_weight=1.0, edge_weight=8.0), workers=0)
    assert record["tone_weight"] == 1.0 and np.isfinite(record["final_losses"]["mouth_tone"])
    assert record["edge_weight"] == 8.0
    assert all(np.isfinite(record["final_losses"][f"{part}_edge"]) for part in ("mouth", "eye"))


def test_cli_train_parts_refuses_to_replace_existing_models(tmp_path):
    from typer.testing import CliRunner

    from animate_cli.cli import app

    folder = make_checkpoint(tmp_path / "ckpt")
    LearnedParts(TINY).save(folder)
    before = (folder / PARTS_WEIGHTS_NAME).read_bytes()
    result = CliRunner().invoke(app, ["train-parts", str(tmp_path), "--into", str(folder)])
    assert result.exit_code == 2 and "already has part models" in result.output
    assert (folder / PARTS_WEIGHTS_NAME).read_bytes() == before
    result = CliRunner().invoke(app, ["train-parts", str(tmp_path), "--into", str(tmp_path / "none")])
    assert result.exit_code == 5


def test_photo_people_are_kept_open_mouths_first_and_closed_by_the_warp(tmp_path, short_driver, face):
    from test_train import write_photos

    from animate_cli.parts.train import MOUTH_OPEN, FrameBank, PairSampler
    from animate_cli.train.dataset import prepare_dataset

    source = tmp_path / "videos"
    source.mkdir()
    (source / "speaker.mp4").symlink_to(short_driver)
    prepare_dataset([source], tmp_path / "video-data", size=64, frames_per_video=6, workers=1)
    prepare_dataset([write_photos(tmp_path / "photos", {"Alice": 2, "Bob": 2}, corrupt=False)],
                    tmp_path / "photo-data", size=64, workers=1)
    everything = FrameBank.load([tmp_path / "video-data", tmp_path / "photo-data"])
    assert everything.is_video.sum() == 6 and (~everything.is_video).sum() == 4
    kept = FrameBank.load([tmp_path / "video-data", tmp_path / "photo-data"], max_photos=1)
    assert kept.is_video.sum() == 6 and (~kept.is_video).sum() == 1
    assert len(set(everything.group[~everything.is_video])) == 2        # photo people keep their own ids
    # A photo stands in for a closed-mouth photo of itself: its lips closed by the warp.
    sampler = PairSampler(everything, TINY)
    target = int(np.argmax(everything.mouth))
    assert everything.mouth[target] > MOUTH_OPEN
    image, points, same = sampler._closed(target)
    assert same == target and image.shape == everything.images[target].shape and mouth_opening(points) < 1e-3


def test_main_command_draws_the_mouth_it_is_asked_for(tmp_path, portrait_path, short_driver):
    from typer.testing import CliRunner

    from animate_cli.cli import app

    folder = make_checkpoint(tmp_path / "ckpt")
    LearnedParts(TINY).save(folder)
    said = {}
    for flags in ((), ("--mouth", "learned"), ("--mouth", "synthetic"), ("--no-learned-parts",)):
        out = tmp_path / f"out{len(said)}.mp4"
        result = CliRunner().invoke(app, [str(portrait_path), "--drive", str(short_driver), "-o", str(out),
                                          "--renderer", "warp", "--weights", str(folder), "--landmarks", "dlib",
                                          "--size", "96", *flags])
        assert result.exit_code == 0, result.output
        assert out.is_file()
        said[flags] = " ".join(result.output.split())
    assert "learned eyes · learned teeth over the synthetic mouth" in said[()]
    assert "learned mouth and eyes" in said[("--mouth", "learned")]
    assert "learned eyes · synthetic mouth" in said[("--mouth", "synthetic")]
    assert "· synthetic mouth" in said[("--no-learned-parts",)] and "learned" not in said[("--no-learned-parts",)]


def test_a_residual_mouth_model_starts_as_the_synthetic_interior_and_corrects_it(face):
    import dataclasses

    image, points = face
    residual = dataclasses.replace(TINY, mouth_residual=True)
    torch.manual_seed(0)
    parts = LearnedParts(residual).eval()
    closed = closed_mouth(points)
    source = FaceWarper(image, points).warp(closed)
    painter = PartsPainter(parts, source, closed)
    assert painter.needs_synthetic_mouth and not PartsPainter(LearnedParts(TINY), source, closed).needs_synthetic_mouth
    warper = FaceWarper(source, closed)
    target = opened(closed, 0.1)
    synthetic = warper.warp(target)
    assert not np.array_equal(synthetic, warper.warp(target, fill_mouth=False))
    # Untrained, it leaves the synthetic interior exactly as drawn at full size (only a change is pasted).
    assert np.array_equal(painter.paint(synthetic[None], target[None])[0], synthetic)
    # Its last layer changes the hole: the correction is added to the interior.
    with torch.no_grad():
        parts.mouth.dec0[-1].bias.fill_(0.5)
    brighter = painter.paint(synthetic[None], target[None])[0].astype(int)
    changed = np.abs(brighter - synthetic.astype(int)).max(axis=2) > 0
    assert (brighter >= synthetic).all() and changed.any()
    ys, xs = np.nonzero(changed)
    lips = target[48:68]
    margin = 0.1 * float(np.ptp(target, axis=0).max())
    assert xs.min() >= lips[:, 0].min() - margin and ys.max() <= lips[:, 1].max() + margin
    # Saved and loaded, it is still a residual model.
    inputs = torch.rand(1, 9, residual.mouth_size, residual.mouth_size) * 2 - 1
    assert torch.equal(PartNet(residual.channels, residual=True)(inputs), inputs[:, :3].clamp(-1, 1))


def test_training_only_the_mouth_keeps_the_eye_model(tmp_path, short_driver):
    import dataclasses

    from animate_cli.parts.train import PartsTrainConfig, train_parts
    from animate_cli.train.dataset import prepare_dataset

    source = tmp_path / "videos"
    source.mkdir()
    (source / "speaker.mp4").symlink_to(short_driver)
    prepare_dataset([source], tmp_path / "data", size=64, frames_per_video=20, workers=1)
    torch.manual_seed(0)
    start = LearnedParts(TINY).eval()
    residual = dataclasses.replace(TINY, mouth_residual=True)
    folder = make_checkpoint(tmp_path / "ckpt")
    record = train_parts([tmp_path / "data"], folder, residual,
                         PartsTrainConfig(steps=2, batch_size=2, save_every=2, parts=("mouth",)), workers=0,
                         start_from=start)
    assert record["parts_trained"] == ["mouth"]
    loaded = load_parts(folder)
    assert loaded.config.mouth_residual and read_parts_section(folder)[0] == residual
    for name, tensor in start.eye.state_dict().items():
        assert torch.allclose(loaded.eye.state_dict()[name], tensor)
    # The mouth changed mode, so it did not start from the blank-hole model's weights.
    assert not torch.allclose(loaded.mouth.dec0[-1].weight, start.mouth.dec0[-1].weight)
    with pytest.raises(UsageError):
        PartsTrainConfig(parts=("nose",))
    # The blank-hole mouth is not thrown away for an untrained residual one while only the eye trains.
    with pytest.raises(UsageError, match="mouth model to start from"):
        train_parts([tmp_path / "data"], make_checkpoint(tmp_path / "eye_only"), residual,
                    PartsTrainConfig(steps=2, batch_size=2, parts=("eye",)), workers=0, start_from=start)


def test_the_tone_term_matches_how_much_dark_an_opening_shows_not_where():
    from animate_cli.parts.train import tone_distance

    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    shape = torch.zeros(2, 1, 32, 32)
    shape[:, :, 10:20, 6:26] = 1.0
    assert float(tone_distance(real, real, shape)) == 0.0
    # The same colours at other places inside the opening: L1 sees a difference, the tone term none.
    moved = real.clone()
    inside = moved[:, :, 10:20, 6:26].reshape(2, 3, -1)
    moved[:, :, 10:20, 6:26] = inside[:, :, torch.randperm(200)].reshape(2, 3, 10, 20)
    assert float(tone_distance(moved, real, shape)) < 1e-6 < float((moved - real).abs().mean())
    # Outside the opening nothing counts; inside, a pale in-between costs what it moves the colours.
    outside = real.clone()
    outside[:, :, :5] = 1.0
    assert float(tone_distance(outside, real, shape)) == 0.0
    # Values on histogram bins: a pale grey, and dark gaps and teeth as far below and above it.
    grey, step = 1 / 15, 12 / 15
    dark = torch.where(torch.rand(2, 1, 32, 32) < 0.5, grey - step, grey + step).expand(2, 3, 32, 32)
    pale = torch.full_like(dark, grey)
    assert float(tone_distance(pale, dark, shape)) == pytest.approx(step, abs=1e-5)
    # A sample without an opening is left out rather than scored as a match.
    shape[1] = 0.0
    assert float(tone_distance(pale, dark, shape)) == pytest.approx(step, abs=1e-5)
    assert float(tone_distance(pale, dark, torch.zeros_like(shape))) == 0.0


def test_the_edge_term_costs_a_blurred_lip_edge_more_than_a_sharp_one_a_pixel_off():
    from animate_cli.parts.train import edge_distance

    # A lip edge: lip colour above row 16, a dark opening below, in the hole's rows 8-24.
    real = torch.full((1, 3, 32, 32), 0.4)
    real[:, :, 16:] = -0.8
    hole = torch.zeros(1, 1, 32, 32)
    hole[:, :, 8:24] = 1.0
    assert float(edge_distance(real, real, hole)) == 0.0
    shifted = torch.roll(real, 1, dims=2)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(real, (0, 0, 2, 2), mode="replicate"),
                                             (5, 1), 1)
    # L1 prefers the blur (it pays for every pixel a sharp edge misplaces); the edge term the
    # sharp edge a pixel off, which costs it nothing.
    assert float((blurred - real).abs().mean()) < float((shifted - real).abs().mean())
    assert float(edge_distance(shifted, real, hole)) < 1e-6 < float(edge_distance(blurred, real, hole))
    # A missing edge (a flat pale opening) costs most; outside the hole nothing counts.
    flat = torch.full_like(real, 0.4)
    assert float(edge_distance(flat, real, hole)) > float(edge_distance(blurred, real, hole))
    assert float(edge_distance(flat, real, torch.zeros_like(hole))) == 0.0


def test_the_dark_share_reads_a_dark_opening_as_open_and_a_lip_coloured_one_as_closed():
    from animate_cli.eval.parts import interior_dark_share

    size = 96
    shape = np.zeros((size, size), np.float32)
    cv2.ellipse(shape, (48, 48), (24, 8), 0, 0, 360, 1.0, -1)
    lips = np.full((size, size, 3), (170, 90, 90), np.uint8)       # lip colour everywhere
    assert interior_dark_share(lips, shape) == 0.0
    dark = lips.copy()
    dark[shape > 0.5] = (30, 10, 10)
    assert interior_dark_share(dark, shape) == 1.0
    half = dark.copy()
    half[:48][shape[:48] > 0.5] = (230, 230, 225)                  # upper teeth showing
    assert 0.3 < interior_dark_share(half, shape) < 0.7
    assert interior_dark_share(dark, np.zeros_like(shape)) is None


def test_the_feature_critic_learns_to_tell_real_crops_from_blurred_ones(face):
    from animate_cli.parts.train import FeatureCritic, PartsTrainConfig, installed_perceptual

    perceptual = installed_perceptual()
    if perceptual is None:
        pytest.skip("dlib's face ResNet is not installed")
    image, points = face
    size = TINY.mouth_size
    real = cut_part_batch(image, points, size)
    blurred = cut_part_batch(cv2.GaussianBlur(image, (0, 0), 3), points, size)
    hole = torch.ones(real.shape[0], 1, size, size)
    with torch.no_grad():
        real_features = perceptual.stage_features(real)
        fake_features = perceptual.stage_features(blurred)
    scales = [f.abs().mean() for f in real_features]
    torch.manual_seed(0)
    critic = FeatureCritic([f.shape[1] for f in real_features], width=16)
    optim = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(40):
        loss = critic.scores(real_features, scales, hole, -1.0) + critic.scores(fake_features, scales, hole, 1.0)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[0] > 1.8 and losses[-1] < 1.0        # 2 is chance
    with torch.no_grad():
        assert critic.generator_term(real_features, scales, hole) > critic.generator_term(fake_features, scales, hole)
    with pytest.raises(UsageError, match="unknown critic"):
        PartsTrainConfig(critic="pixels")


def cut_part_batch(image: np.ndarray, points: np.ndarray, size: int) -> torch.Tensor:
    """Four mouth crops of ``image`` (shifted by a pixel or two) as a batch in [-1, 1]."""
    crops = []
    for dx, dy in ((0, 0), (1, 0), (0, 2), (-2, -1)):
        shifted = points + np.array([dx, dy], np.float32)
        crops.append(cut_part(image, part_matrix(shifted, "mouth", size), size))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def test_eval_parts_reports_the_crops_and_the_dark_share(tmp_path, sample_driver):
    from typer.testing import CliRunner

    from animate_cli.cli import app

    folder = make_checkpoint(tmp_path / "ckpt")
    torch.manual_seed(0)
    LearnedParts(TINY).save(folder)
    report, sheet = tmp_path / "parts.json", tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["eval-parts", str(sample_driver), "--weights", str(folder), "--max-frames", "40",
                                      "--json", str(report), "--sheet", str(sheet), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "dark share" in result.output
    # The contact sheet: the widest-open mouth crops (at most 4), real | synthetic | teeth | learned, at twice
    # their size.
    image = cv2.imread(str(sheet))
    rows = min(4, json.loads(report.read_text())["summary"]["mouth"]["count"])
    assert image.shape == (rows * 2 * TINY.mouth_size, 4 * 2 * TINY.mouth_size, 3)
    assert "teeth - synthetic" in result.output and "learned - synthetic" in result.output
    result = CliRunner().invoke(app, ["eval-parts", str(sample_driver), "--weights", str(folder),
                                      "--sheet", str(tmp_path / "sheet.gif")])
    assert result.exit_code == 2 and "sheet.gif" in result.output and not (tmp_path / "sheet.gif").exists()
    mouth = json.loads(report.read_text())["summary"]["mouth"]
    assert mouth["count"] > 0
    for name in ("real", "synthetic", "teeth", "learned"):
        assert 0.0 <= mouth["dark_share"][name] <= 1.0
    # The teeth are the learned mouth over the synthetic interior: on a crop they differ from both.
    assert mouth["teeth"]["l1"] not in (mouth["synthetic"]["l1"], mouth["learned"]["l1"])
    result = CliRunner().invoke(app, ["eval-parts", str(sample_driver), "--weights", str(folder), "--max-frames", "40",
                                      "--json", str(report), "--quiet"])
    assert result.exit_code == 7 and str(report.name) in result.output    # an existing report is not replaced
    assert json.loads(report.read_text())["summary"]["mouth"] == mouth


def test_parts_protocol_runs_without_the_cli_and_names_a_checkpoint_without_part_models(tmp_path, short_driver):
    """The protocol is a library function (the command only prints and writes): it checks the drivers,
    refuses a checkpoint that has no part models, and on one that has them returns the report."""
    from animate_cli.eval.parts import run_parts_protocol
    from animate_cli.progress import SilentProgress

    folder = make_checkpoint(tmp_path / "ckpt")
    with pytest.raises(WeightsError, match="no part models"):
        run_parts_protocol([short_driver], str(folder), max_frames=4)
    torch.manual_seed(0)
    LearnedParts(TINY).save(folder)
    progress = SilentProgress()
    report = run_parts_protocol([short_driver], str(folder), max_frames=4, progress=progress)
    assert report["weights"] == str(folder) and len(report["videos"]) == 1
    assert {"mouth", "eyes"} <= set(report["summary"]) and "cpu_count" in report["machine"]
    assert progress.counts["eval parts"] == 1
