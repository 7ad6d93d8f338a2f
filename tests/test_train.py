"""Meta-learning: dataset preparation, episodes, augmentation, the training loop (log,
checkpoints, samples, exact resume), the divergence guard and the commands."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from animate_cli.config import get_preset  # noqa: E402
from animate_cli.errors import UsageError  # noqa: E402
from animate_cli.losses import ContentLoss  # noqa: E402
from animate_cli.landmarks.regions import blend_regions  # noqa: E402
from animate_cli.models import TalkingHeadModel  # noqa: E402
from animate_cli.models.generator import Generator  # noqa: E402
from animate_cli.render.warp import mouth_opening  # noqa: E402
from animate_cli.train import dataset as dataset_module  # noqa: E402
from animate_cli.train.dataset import (EpisodeDataset, augment_single_photo, load_frames, parse_mix,  # noqa: E402
                                       prepare_dataset, read_index, split_people)
from animate_cli.train.loop import (DivergenceError, DivergenceGuard, TrainConfig, colour_spread,  # noqa: E402
                                    read_losses, train)

PEOPLE = {"Alice": 3, "Bob": 3, "Carol": 1}
TINY = get_preset("tiny")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # 2 cores shared by several processes: torch's thread pool only adds contention here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)


def write_photos(root: Path, people: dict[str, int], corrupt: bool = True) -> Path:
    """LFW layout Name/Name_NNNN.jpg: the astronaut, slightly rotated and scaled per photo."""
    astronaut = skimage_data.astronaut()
    for p, (name, count) in enumerate(people.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            matrix = cv2.getRotationMatrix2D((256, 200), (i - 1) * 4 + p * 2, 1.0 - 0.04 * i)
            image = cv2.warpAffine(astronaut, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT)
            Image.fromarray(cv2.resize(image, (320, 320), interpolation=cv2.INTER_AREA)).save(
                folder / f"{name}_{i:04d}.jpg")
    if corrupt:
        (root / "Bob" / "Bob_0099.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"), PEOPLE)


@pytest.fixture(scope="module")
def dataset_dir(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "dataset"
    prepare_dataset([photos], out, size=64, workers=1)
    return out


def test_prepare_writes_shards_index_and_report(dataset_dir):
    index = read_index(dataset_dir)
    assert index["people"] == ["Alice", "Bob", "Carol"]
    assert [v["count"] for v in index["videos"]] == [3, 3, 1]
    assert [v["name"] for v in index["videos"]] == ["Alice/photos", "Bob/photos", "Carol/photos"]
    assert index["size"] == 64 and index["count"] == 7 and index["complete"]
    with np.load(dataset_dir / index["shards"][0]["file"], allow_pickle=False) as shard:
        assert shard["images"].shape == (7, 64, 64, 3) and shard["images"].dtype == np.uint8
        assert shard["points"].shape == (7, 68, 2) and shard["points"].dtype == np.float32
        assert shard["person"].tolist() == [0, 0, 0, 1, 1, 1, 2]
        points = shard["points"]
    # Cropped as inference crops: the landmarks span 1 / 1.8 of the crop, centred horizontally.
    extent = (points.max(axis=1) - points.min(axis=1)).max(axis=1)
    np.testing.assert_allclose(extent, 64 / 1.8, rtol=0.02)
    centre_x = (points[..., 0].max(axis=1) + points[..., 0].min(axis=1)) / 2
    np.testing.assert_allclose(centre_x, 32, atol=0.5)

    report = json.loads((dataset_dir / "report.json").read_text())
    assert len(report["skipped"]) == 1
    assert report["skipped"][0]["file"].endswith("Bob_0099.jpg")
    assert "not a readable image" in report["skipped"][0]["reason"]


def test_prepare_is_resumable(photos, tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    first = write_photos(tmp_path / "src", {"Alice": 2, "Bob": 2}, corrupt=False)
    processed = []
    original = dataset_module.process_unit

    def counting(unit, *args, **kwargs):
        processed.append(unit.person)
        return original(unit, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "process_unit", counting)
    prepare_dataset([first], out, size=32, workers=1)
    assert processed == ["Alice", "Bob"]
    shard = out / "shard-00000.npz"
    stamp = shard.stat().st_mtime_ns

    write_photos(first, {"Carol": 1}, corrupt=False)     # a new person appears in the source
    report = prepare_dataset([first], out, size=32, workers=1)
    assert processed == ["Alice", "Bob", "Carol"]      # only the new one was processed
    assert (report.new_units, report.reused_units) == (1, 2)
    assert shard.stat().st_mtime_ns == stamp
    index = read_index(out)
    assert index["people"] == ["Alice", "Bob", "Carol"] and index["count"] == 5
    assert [s["count"] for s in index["shards"]] == [4, 1]
    report = prepare_dataset([first], out, size=32, workers=1)
    assert report.new_units == 0 and processed == ["Alice", "Bob", "Carol"]
    with pytest.raises(UsageError, match="prepared at size 32"):
        prepare_dataset([first], out, size=64, workers=1)


def test_prepare_reads_lfw_tar_with_workers(tmp_path):
    source = write_photos(tmp_path / "lfw", {"Dan": 2, "Eve": 1, "Fay": 2}, corrupt=False)
    archive = tmp_path / "lfw.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="lfw")
    report = prepare_dataset([archive], tmp_path / "out", size=32, workers=2, min_photos=2)
    index = read_index(tmp_path / "out")
    assert index["people"] == ["Dan", "Fay"] and index["count"] == 4   # Eve: 1 photo < --min-photos 2
    assert report.filtered_people == 1 and report.skipped == [] and report.new_units == 2
    store = load_frames(tmp_path / "out")
    assert store.images.shape == (4, 32, 32, 3) and store.images.std() > 20


def test_prepare_samples_frames_of_videos(tmp_path, short_driver):
    source = tmp_path / "videos"
    (source / "id001" / "vidA").mkdir(parents=True)
    (source / "id001" / "vidA" / "00001.mp4").symlink_to(short_driver)      # VoxCeleb layout
    (source / "speaker.mp4").symlink_to(short_driver)                        # a plain folder of videos
    (source / "broken.mp4").write_bytes(b"not a video")
    report = prepare_dataset([source], tmp_path / "out", size=32, frames_per_video=3, workers=1)
    index = read_index(tmp_path / "out")
    assert index["people"] == ["id001", "speaker"]
    assert [(v["name"], v["count"]) for v in index["videos"]] == [("id001/vidA/00001", 3), ("speaker", 3)]
    assert {v["kind"] for v in index["videos"]} == {"video"}
    assert [s["file"].endswith("broken.mp4") for s in report.skipped] == [True]
    with np.load(tmp_path / "out" / "shard-00000.npz", allow_pickle=False) as shard:
        names = shard["names"].tolist()
    assert [name.rsplit("#", 1)[1] for name in names[:3]] == ["0", "10", "19"]     # spread over 20 frames
    item = EpisodeDataset(load_frames(tmp_path / "out"), shots=2)[0]
    assert item["shot_images"].shape == (2, 3, 32, 32)


def test_episodes_shapes_same_video_and_determinism(dataset_dir):
    store = load_frames(dataset_dir)
    episodes = EpisodeDataset(store, shots=2, image_size=32, seed=3)
    assert len(episodes) == 3 and episodes.num_videos == 3
    item = episodes[0]
    assert item["shot_images"].shape == (2, 3, 32, 32) and item["shot_landmarks"].shape == (2, 3, 32, 32)
    assert item["target_image"].shape == (3, 32, 32) and item["target_landmarks"].shape == (3, 32, 32)
    assert item["shot_images"].min() >= -1 and item["shot_images"].max() <= 1
    assert "warped" not in item
    # One epoch visits every video once.
    assert sorted(episodes.video_of(p) for p in range(3)) == [0, 1, 2]

    for p in range(6):
        images, _, video, target = episodes.frames(p)
        assert int(episodes.store.person[target]) == video       # one video per person here
        if video == 0:   # Alice: 3 photos >= K + 1 -> three distinct frames of her video
            own = episodes.store.images[episodes.video_frames[0]]
            matches = [int(np.flatnonzero((own == image).all(axis=(1, 2, 3)))[0]) for image in images]
            assert sorted(matches) == [0, 1, 2]

    again = EpisodeDataset(store, shots=2, image_size=32, seed=3)[4]
    for key, value in episodes[4].items():
        assert torch.equal(value, again[key]), key
    other = EpisodeDataset(store, shots=2, image_size=32, seed=4)
    assert any(not torch.equal(episodes[p]["target_image"], other[p]["target_image"]) for p in range(6))

    warped = EpisodeDataset(store, shots=2, image_size=32, seed=3, guidance="warp")[0]
    assert warped["warped"].shape == (3, 32, 32) and "region" not in warped
    limited = EpisodeDataset(store, shots=2, image_size=32, seed=3, guidance="warp", blend_region="mouth_border")[0]
    assert torch.equal(limited["warped"], warped["warped"])
    expected = blend_regions(limited["target_points"].numpy()[None], 32, "mouth_border")[0]
    assert torch.equal(limited["region"], torch.from_numpy(expected))   # the target's region, not a shot's
    assert "region" not in EpisodeDataset(store, shots=2, image_size=32, blend_region="mouth_border")[0]
    with pytest.raises(UsageError, match="prepare it again with a larger --size"):
        EpisodeDataset(store, image_size=128)


def test_single_photo_augmentation_makes_k_different_frames(dataset_dir):
    store = load_frames(dataset_dir)
    carol = int(np.flatnonzero(store.person == 2)[0])
    frames, points = augment_single_photo(store.images[carol], store.points[carol], 8, np.random.default_rng(0))
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8 and points.shape == (8, 68, 2)
    for i in range(8):
        for j in range(i):
            assert np.abs(frames[i].astype(float) - frames[j]).mean() > 1.0
    openings = [mouth_opening(p) for p in points]
    assert max(openings) - min(openings) > 0.02           # the mouth opens and closes
    assert np.abs(points - store.points[carol]).max() > 1.0
    # Carol's episodes come from augmentation: K + 1 different frames of one photo.
    episodes = EpisodeDataset(store, shots=4, seed=0)
    p = next(p for p in range(9) if episodes.video_of(p) == 2)
    images, _, _, _ = episodes.frames(p)
    assert len({image.tobytes() for image in images}) == 5


def test_episode_mix_weighs_kinds_and_stays_reproducible(dataset_dir):
    store = load_frames(dataset_dir)
    # Alice and Bob have 3 photos ("photos"), Carol one ("single").
    assert EpisodeDataset(store, shots=2).kind_counts() == {"video": 0, "photos": 2, "single": 1}
    uniform = EpisodeDataset(store, shots=2, seed=1)
    assert sum(uniform.video_of(p) == 2 for p in range(300)) == 100        # 1 video in 3: a third
    mixed = EpisodeDataset(store, shots=2, seed=1, mix=parse_mix("photos=0.2, single=0.8, video=1"))
    carol = sum(mixed.video_of(p) == 2 for p in range(1000))
    assert 740 < carol < 860                   # "video" is absent, so 0.8 of the 1.0 left goes to Carol
    again = EpisodeDataset(store, shots=2, seed=1, mix={"photos": 0.2, "single": 0.8})
    assert [again.video_of(p) for p in range(50)] == [mixed.video_of(p) for p in range(50)]
    assert torch.equal(again[7]["target_image"], mixed[7]["target_image"])
    only_photos = EpisodeDataset(store, shots=2, mix={"photos": 1.0})
    assert {only_photos.video_of(p) for p in range(100)} == {0, 1}
    with pytest.raises(UsageError, match="no episodes of the weighted kinds"):
        EpisodeDataset(store, shots=2, mix={"video": 1.0})
    for text, message in (("faces=1", "unknown episode kind 'faces'"), ("photos=x", "needs a number"),
                          ("photos=-1", "weight >= 0"), ("photos=0", "at least one positive")):
        with pytest.raises(UsageError, match=message):
            parse_mix(text)


def test_split_people_holds_out_people_with_two_frames(dataset_dir):
    store = load_frames(dataset_dir)
    train_people, held = split_people(store, holdout=1, seed=0)
    assert held in (["Alice"], ["Bob"]) and sorted(train_people + held) == ["Alice", "Bob", "Carol"]
    assert split_people(store, holdout=1, seed=0) == (train_people, held)
    with pytest.raises(UsageError, match="cannot hold out 3 people"):
        split_people(store, holdout=3)


def small_config(**changes) -> TrainConfig:
    values = dict(steps=4, batch_size=2, shots=2, checkpoint_every=2, sample_every=2, log_every=1, seed=0)
    values.update(changes)
    return TrainConfig(**values)


def test_training_with_the_face_trained_loss(dataset_dir, tmp_path):
    # The offline default: the substitute plus dlib's face ResNet on chips cut at the targets' landmarks.
    loss = ContentLoss.from_available(allow_download=False)
    assert loss.needs_points
    result = train(dataset_dir, tmp_path / "run", TINY, small_config(steps=2), content_loss=loss)
    entries = read_losses(tmp_path / "run")
    assert result.step == 2 and all(np.isfinite(e["content"]) and e["content"] > 0 for e in entries)
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "face ResNet" in run_info["content_loss"]
    # Larger than the substitute alone on the same batch: the face terms are in it.
    plain = train(dataset_dir, tmp_path / "plain", TINY, small_config(steps=2), content_loss=ContentLoss())
    assert entries[0]["content"] > read_losses(plain.run_dir)[0]["content"]


def test_training_writes_losses_checkpoints_and_samples(dataset_dir, tmp_path):
    run = tmp_path / "run"
    done = []
    result = train(dataset_dir, run, TINY, small_config(holdout=1), content_loss=ContentLoss(),
                   progress=done.append)
    assert result.step == 4 and sum(done) == 4
    entries = read_losses(run)
    assert [e["step"] for e in entries] == [1, 2, 3, 4]
    for entry in entries:
        assert {"loss_g", "content", "adversarial", "feature_matching", "match", "loss_d", "seconds"} <= set(entry)
        assert all(np.isfinite(v) for v in entry.values())
    assert os.readlink(run / "last") == "checkpoints/step-000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    model = TalkingHeadModel.from_pretrained(run / "last")
    assert model.config.num_videos == 2                        # one W column per training video
    saved = json.loads((run / "last" / "config.json").read_text())["training"]
    assert saved["step"] == 4 and saved["heldout_people"] == result.heldout_people
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["heldout_people"] == result.heldout_people and len(run_info["videos"]) == 2
    assert result.heldout_people[0] not in {v.split("/")[0] for v in run_info["videos"]}
    grid = np.asarray(Image.open(run / "samples" / "step-000004.png"))
    # rows: 2 episodes; columns: 2 shots | landmarks | generated | target
    assert grid.shape == (2 * 32, 5 * 32, 3)
    assert grid[:, 2 * 32:3 * 32].mean() < 60                  # the landmark image is mostly black
    with pytest.raises(UsageError, match="already holds a training run"):
        train(dataset_dir, run, TINY, small_config(), content_loss=ContentLoss())


def test_resume_reproduces_an_uninterrupted_run(dataset_dir, tmp_path):
    warp = TINY.replace(guidance="warp")
    straight = train(dataset_dir, tmp_path / "straight", warp, small_config(steps=6, checkpoint_every=3),
                     content_loss=ContentLoss())
    # --resume on a folder with no run yet starts one (restartable jobs can always pass it).
    first = train(dataset_dir, tmp_path / "split", warp, small_config(steps=3, checkpoint_every=3),
                  resume=True, content_loss=ContentLoss())
    assert (first.start_step, first.step) == (0, 3)
    resumed = train(dataset_dir, tmp_path / "split", warp, small_config(steps=6, checkpoint_every=3),
                    resume=True, content_loss=ContentLoss())
    assert resumed.start_step == 3 and resumed.step == 6
    a, b = read_losses(tmp_path / "straight"), read_losses(tmp_path / "split")
    assert [e["step"] for e in b] == [1, 2, 3, 4, 5, 6]
    # Warp guidance: rows of 2 shots | landmarks | warped | unblended | generated | target.
    assert np.asarray(Image.open(tmp_path / "split" / "samples" / "step-000006.png")).shape == (2 * 32, 7 * 32, 3)
    for x, y in zip(a, b):
        for key in x:
            if key != "seconds":
                assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    for name, tensor in straight.model.state_dict().items():
        assert torch.allclose(tensor, resumed.model.state_dict()[name], atol=1e-6), name
    with pytest.raises(UsageError, match="different settings.*batch_size"):
        train(dataset_dir, tmp_path / "split", warp, small_config(steps=8, batch_size=1), resume=True,
              content_loss=ContentLoss())


class NaNAtStep(ContentLoss):
    """The substitute content loss, NaN from call ``at`` on (a diverging run)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, generated, target, points=None):
        self.calls += 1
        loss = super().forward(generated, target, points)
        return loss * float("nan") if self.calls >= self.at else loss


def test_guard_stops_on_nan_and_keeps_last_good_checkpoint(dataset_dir, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"diverged at step 3: loss_g is nan; the last good checkpoint is .*"
                                              r"step-000002") as caught:
        train(dataset_dir, run, TINY, small_config(steps=6), content_loss=NaNAtStep(3))
    assert "\n" not in str(caught.value)
    assert os.readlink(run / "last") == "checkpoints/step-000002"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]
    assert [e["step"] for e in read_losses(run)] == [1, 2]


def test_guard_stops_on_one_colour_frames(dataset_dir, tmp_path, monkeypatch):
    original = Generator.forward_parts
    calls = []

    def collapsing(self, landmark_images, psi, warped=None, region=None):
        calls.append(1)
        out, mask, raw = original(self, landmark_images, psi, warped, region)
        # From the 3rd step on: a flat dark red, still attached to the graph.
        if len(calls) >= 3:
            out = out * 0 + torch.tensor([0.5, -0.8, -0.8]).view(1, 3, 1, 1)
        return out, mask, raw

    monkeypatch.setattr(Generator, "forward_parts", collapsing)
    run = tmp_path / "run"
    with pytest.raises(DivergenceError, match="step 5: generated frames collapsed to a single colour"):
        train(dataset_dir, run, TINY, small_config(steps=10), content_loss=ContentLoss())
    # The step-4 checkpoint fell inside the collapse and was postponed, never written.
    assert os.readlink(run / "last") == "checkpoints/step-000002"
    assert not (run / "checkpoints" / "step-000004").exists()


def test_guard_unit_explosion_nan_and_collapse():
    guard = DivergenceGuard(explode_factor=50, collapse_std=0.02, collapse_patience=2)
    losses = {"loss_g": 2.0, "content": 0.5, "loss_d": 1.5}
    for _ in range(12):
        assert guard.check(losses, image_std=0.3) is None
    # A one-step spike is tolerated; three in a row stop the run.
    assert guard.check({**losses, "loss_g": 500.0}, image_std=0.3) is None and guard.unsettled
    assert guard.check(losses, image_std=0.3) is None and not guard.unsettled
    assert guard.check({**losses, "loss_g": 500.0}, image_std=0.3) is None
    assert guard.check({**losses, "loss_d": 900.0}, image_std=0.3) is None
    assert "loss_g exploded to 500 (50x above its running median 2) for 3 steps" in guard.check(
        {**losses, "loss_g": 500.0}, image_std=0.3)
    assert guard.check({**losses, "loss_d": float("inf")}, 0.3) == "loss_d is inf"
    assert guard.check(losses, 0.001) is None                 # one step: patience
    assert "single colour" in guard.check(losses, 0.001)
    restored = DivergenceGuard()
    restored.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert restored.history == guard.history and restored.collapsed_steps == 2
    flat = torch.zeros(2, 3, 8, 8) + torch.tensor([1.0, -1.0, 0.2]).view(1, 3, 1, 1)
    assert colour_spread(flat).tolist() == [0.0, 0.0]          # one colour, however saturated
    assert colour_spread(torch.rand(1, 3, 8, 8) * 2 - 1).item() > 0.3


def test_video_columns_start_at_the_first_embedding():
    from animate_cli.models.discriminator import Discriminator
    from animate_cli.train.loop import DistributedContext, VideoColumns

    discriminator = Discriminator(TINY.replace(num_videos=3))
    before = discriminator.W.detach().clone()
    columns = VideoColumns(discriminator, DistributedContext(0, 1, 0, torch.device("cpu"), False))
    embeddings = torch.arange(3 * 32, dtype=torch.float32).view(3, 32)
    assert columns.update(torch.tensor([1, 1, 2]), embeddings) == 2
    assert torch.equal(discriminator.W[:, 1], embeddings[0]) and torch.equal(discriminator.W[:, 2], embeddings[2])
    assert torch.equal(discriminator.W[:, 0], before[:, 0])
    assert columns.update(torch.tensor([1, 0]), embeddings + 100) == 1        # only video 0 is new
    assert torch.equal(discriminator.W[:, 1], embeddings[0]) and torch.equal(discriminator.W[:, 0], embeddings[1] + 100)


def test_cli_prepare_and_train(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from animate_cli.commands.train import register_training_commands

    app = typer.Typer()
    register_training_commands(app)
    runner = CliRunner()
    source = write_photos(tmp_path / "photos", {"Alice": 2, "Bob": 1})
    result = runner.invoke(app, ["prepare", str(source), "--out", str(tmp_path / "ds"), "--size", "32",
                                 "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())               # Rich wraps long lines
    assert "3 frames of 2 people" in output and "1 files skipped" in output
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
            "--shots", "2", "--batch-size", "1", "--offline", "--quiet", "--guidance", "warp"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained to step 2" in " ".join(result.output.split())
    assert TalkingHeadModel.from_pretrained(tmp_path / "run" / "last").config.guidance == "warp"
    result = runner.invoke(app, args)                          # the run exists: usage error
    assert result.exit_code == 2 and "pass --resume" in " ".join(result.output.split())
    result = runner.invoke(app, [*args[:-1], "none", "--resume", "--steps", "3"])
    assert result.exit_code == 2 and "different settings (model guidance)" in " ".join(result.output.split())
    result = runner.invoke(app, [*args[:2], "--out", str(tmp_path / "region"), *args[4:], "--blend-region",
                                 "mouth_border"])
    assert result.exit_code == 0, result.output
    assert TalkingHeadModel.from_pretrained(tmp_path / "region" / "last").config.blend_region == "mouth_border"
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run2"), "--quiet"])
    assert result.exit_code == 3 and "not a prepared dataset" in " ".join(result.output.split())
