"""Evaluation: metrics on known cases, subject selection, and the eval command end to end."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from skimage import data
from typer.testing import CliRunner

from animate_cli.errors import InputError
from animate_cli.eval.crop import Candidate, Frame, Subject, paired_against_warp, read_people_file, select_candidates
from animate_cli.eval.metrics import (at_size, csim, detail_ratio, identity_distance, landmark_error, mouth_correlation,
                                      pearson, psnr, ssim)
from animate_cli.commands.eval import parse_int_list, register_eval_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny networks run 10-40x faster on one thread than on two when the CPU is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def dlib_backend():
    from animate_cli.landmarks import create_backend

    return create_backend("dlib")


@pytest.fixture(scope="module")
def identity():
    from animate_cli.eval.metrics import FaceIdentity

    return FaceIdentity()


# ---------------------------------------------------------------------------------------------
# Image metrics


def test_identical_images_give_ssim_one_and_psnr_inf(astronaut):
    assert ssim(astronaut, astronaut.copy()) == pytest.approx(1.0, abs=1e-9)
    assert psnr(astronaut, astronaut.copy()) == math.inf
    grey = astronaut[:, :, 1]
    assert ssim(grey, grey) == pytest.approx(1.0, abs=1e-9)


def test_shifted_image_scores_lower(astronaut):
    shifted = np.roll(astronaut, 4, axis=1)
    further = np.roll(astronaut, 12, axis=1)
    assert 0.2 < ssim(astronaut, further) < ssim(astronaut, shifted) < 0.95
    assert 10 < psnr(astronaut, further) < psnr(astronaut, shifted) < 30


def test_an_output_that_lost_an_odd_pixel_is_compared_pixel_for_pixel(astronaut):
    # A 577 px photo gives a 576 px video (the encoder's even size): the output is compared with the photo in
    # the photo's pixels, not resized by one pixel (which blurred the whole frame to under half its detail).
    photo = np.ascontiguousarray(astronaut[:301, :211])
    output = photo[:300, :210]
    same = at_size(output, (211, 301))
    assert same.shape == photo.shape and np.array_equal(same[:300, :210], output)
    assert detail_ratio(same, photo) > 0.99 and psnr(same, photo) > 30
    assert detail_ratio(cv2.resize(output, (211, 301), interpolation=cv2.INTER_AREA), photo) < 0.7
    # Any other size is resized.
    assert at_size(photo[::2, ::2], (211, 301)).shape == photo.shape


def test_psnr_known_value_and_shape_check(astronaut):
    brighter = (astronaut.astype(np.int16) + 10).clip(0, 255).astype(np.uint8)
    dim = astronaut // 2  # no pixel clips after +10: a uniform error of 10
    assert psnr(dim, dim + 10) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    assert psnr(astronaut, brighter) > 20 * math.log10(255 / 10) - 1e-9
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(astronaut, astronaut[:-1])


# ---------------------------------------------------------------------------------------------
# Identity


def test_same_face_gives_high_csim(astronaut, dlib_backend, identity):
    altered = cv2.GaussianBlur(astronaut, (5, 5), 1.0)
    altered = np.roll(altered, 6, axis=1)
    altered = np.clip(altered.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    a = identity.photo_descriptor(astronaut, dlib_backend)
    b = identity.photo_descriptor(altered, dlib_backend)
    assert a.shape == (128,)
    assert csim(a, b) > 0.95
    assert identity_distance(a, b) < 0.6
    # samples/portrait.jpg is the same astronaut, cropped differently.
    from animate_cli.io import load_image

    portrait = identity.photo_descriptor(load_image(REPO / "samples" / "portrait.jpg"), dlib_backend)
    assert identity_distance(a, portrait) < 0.6
    assert csim(a, a) == pytest.approx(1.0) and identity_distance(a, a) == 0.0


def test_different_people_give_lower_csim(realdata, astronaut, dlib_backend, identity):
    from animate_cli.io import load_image

    first = identity.photo_descriptor(load_image(realdata / "sadtalker_happy.png"), dlib_backend)
    second = identity.photo_descriptor(load_image(realdata / "tpsmm_source.png"), dlib_backend)
    third = identity.photo_descriptor(astronaut, dlib_backend)
    for x, y in ((first, second), (first, third), (second, third)):
        assert identity_distance(x, y) > 0.6
        # dlib's descriptors share a common direction: different people still have cosine ~0.85.
        assert csim(x, y) < 0.92


def test_descriptor_needs_68_points(astronaut, identity):
    with pytest.raises(ValueError, match="68, 2"):
        identity.descriptor(astronaut, np.zeros((5, 2)))


# ---------------------------------------------------------------------------------------------
# Landmark and motion metrics


def _face_points(mouth_gap: float = 0.0) -> np.ndarray:
    """A synthetic (68, 2) face: outer eye corners 36 and 45 are 100 px apart, inner lips split by ``mouth_gap``."""
    rng = np.random.default_rng(0)
    points = rng.uniform(50, 250, (68, 2)).astype(np.float32)
    points[36], points[45] = (100, 100), (200, 100)
    upper, lower = (61, 62, 63), (67, 66, 65)
    for i, (u, d) in enumerate(zip(upper, lower)):
        points[u] = (130 + 20 * i, 200)
        points[d] = (130 + 20 * i, 200 + mouth_gap)
    return points


def test_landmark_error_is_normalised_by_eye_distance():
    points = _face_points()
    assert landmark_error(points, points) == 0.0
    assert landmark_error(points, points + np.float32([6, 8])) == pytest.approx(0.1)  # 10 px / 100 px
    batch = landmark_error(np.stack([points, points]), np.stack([points, points + np.float32([0, 20])]))
    np.testing.assert_allclose(batch, [0.0, 0.2])
    with pytest.raises(ValueError, match="68, 2"):
        landmark_error(points, points[:10])


def test_mouth_correlation_on_synthetic_sequences():
    t = np.linspace(0, 4 * np.pi, 40)
    gaps = 20 * (1 + np.sin(t))
    driver = np.stack([_face_points(g) for g in gaps])
    follower = np.stack([_face_points(0.5 * g + 3) for g in gaps])       # smaller but in step
    opposite = np.stack([_face_points(40 - g) for g in gaps])
    lagging = np.stack([_face_points(g) for g in 20 * (1 + np.sin(t - np.pi / 2))])
    still = np.stack([_face_points(10.0)] * len(t))
    assert mouth_correlation(driver, follower) == pytest.approx(1.0)
    assert mouth_correlation(driver, opposite) == pytest.approx(-1.0)
    assert abs(mouth_correlation(driver, lagging)) < 0.2
    assert math.isnan(mouth_correlation(driver, still))
    assert math.isnan(pearson([1.0, 2.0], [2.0, 4.0]))  # fewer than 3 pairs


# ---------------------------------------------------------------------------------------------
# Data selection


def test_subject_selection_is_seeded_and_filtered(tmp_path):
    candidates = [Candidate(f"Person_{i}", "photos", tuple(f"{i}_{j}.jpg" for j in range(i))) for i in range(1, 12)]
    candidates.append(Candidate("talk", "video", ("talk.mp4",)))
    first = select_candidates(candidates, min_photos=9, max_subjects=3, seed=1)
    again = select_candidates(list(reversed(candidates)), min_photos=9, max_subjects=3, seed=1)
    assert [c.name for c in first] == [c.name for c in again]
    everyone = select_candidates(candidates, min_photos=9, max_subjects=None, seed=1)
    assert sorted(c.name for c in everyone) == ["Person_10", "Person_11", "Person_9", "talk"]
    listed = tmp_path / "held.txt"
    listed.write_text("Person_10  # held out\n\nPerson_3\n")
    assert read_people_file(listed) == ["Person_10", "Person_3"]
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"heldout_people": ["Person_11", "talk"]}))
    chosen = select_candidates(candidates, 9, None, people=read_people_file(run))
    assert sorted(c.name for c in chosen) == ["Person_11", "talk"]
    checkpoint = tmp_path / "config.json"                     # a checkpoint's training record
    checkpoint.write_text(json.dumps({"model": {}, "training": {"heldout_people": ["Person_9"]}}))
    assert read_people_file(checkpoint) == ["Person_9"]
    checkpoint.write_text(json.dumps({"model": {}, "training": {"kind": "untrained"}}))
    with pytest.raises(InputError, match="heldout_people"):
        read_people_file(checkpoint)
    run.write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        read_people_file(run)


def test_subject_shots_spread_over_the_pool():
    pool = [Frame(str(i), np.zeros((4, 4, 3), np.uint8), np.zeros((68, 2), np.float32)) for i in range(8)]
    subject = Subject("s", "video", pool, pool[:1])
    assert [f.name for f in subject.shots(1)] == ["0"]
    assert [f.name for f in subject.shots(3)] == ["0", "4", "7"]
    assert subject.shot_counts([1, 8, 32]) == [1, 8]
    assert parse_int_list("8, 1,8", "--shots") == (1, 8)


# ---------------------------------------------------------------------------------------------
# The command end to end


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, sample_driver) -> Path:
    """A 30-frame talking video and a photo person (the portrait and its mirror image)."""
    from animate_cli.io.images import load_image, save_image
    from animate_cli.io.video import ffmpeg_exe

    folder = tmp_path_factory.mktemp("evaldata")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(sample_driver), "-frames:v", "30", "-an",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "talk.mp4")], check=True)
    person = folder / "people" / "Astro_Naut"
    person.mkdir(parents=True)
    portrait = load_image(REPO / "samples" / "portrait.jpg")
    save_image(person / "Astro_Naut_0001.png", portrait)
    save_image(person / "Astro_Naut_0002.png", np.ascontiguousarray(portrait[:, ::-1]))
    return folder


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A stand-in for the main app."""

    register_eval_command(app)
    return app


def test_eval_command_end_to_end(eval_data, tiny_weights, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(_app(), [
        "eval", str(eval_data / "talk.mp4"), str(eval_data / "people"), "--weights", str(tiny_weights),
        "--shots", "1", "--finetune-steps", "1", "--max-frames", "3", "--json", str(report_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "self-reenactment" in result.output and "cross-identity" in result.output
    assert "FID: not computed" in result.output
    report = json.loads(report_path.read_text())
    assert {"command", "date", "machine", "weights", "settings", "rows", "records", "subjects", "fid"} <= set(report)
    assert report["weights"]["model"]["image_size"] == 32
    assert sorted(s["name"] for s in report["subjects"]) == ["Astro_Naut", "talk"]
    photo_person = next(s for s in report["subjects"] if s["kind"] == "photos")
    assert len(photo_person["pool"]) == 1 and len(photo_person["targets"]) == 1
    rows = {(r["method"], r["steps"]): r for r in report["rows"]}
    assert set(rows) == {("neural", 0), ("neural", 1), ("warp", None), ("copy", None)}
    for row in rows.values():
        own, cross = row["self"], row["cross"]
        assert own["count"] == 4 and own["subjects"] == 2          # 3 video targets + 1 photo target
        assert 0 < own["ssim"] <= 1 and 0 < own["psnr"] < 100
        assert 0 < own["csim"] <= 1 and own["identity_distance"] >= 0 and own["perceptual"] > 0
        assert 0 <= own["face_found"] <= 1
        assert cross["count"] == 1 and 0 < cross["csim"] <= 1       # the video drives the photo person
    # The copy baseline shows the first shot itself: identity is kept, the mouth never moves.
    assert rows[("copy", None)]["cross"]["identity_distance"] < 0.3
    assert rows[("copy", None)]["cross"]["mouth_corr"] is None
    assert all(-1 <= r["mouth_corr"] <= 1 for r in report["records"]
               if r["protocol"] == "cross" and r["mouth_corr"] is not None)
    # Paired with the warp, per neural variant and metric, over the same 4 targets.
    assert {(p["steps"], p["metric"]) for p in report["paired"]} == {
        (steps, metric) for steps in (0, 1) for metric in ("ssim", "identity_distance", "perceptual")}
    assert all(p["count"] == 4 and 0 <= p["better"] <= 1 for p in report["paired"])
    assert "neural minus warp, same targets" in " ".join(result.output.split())


def test_paired_differences_against_the_warp():
    def record(method, steps, target, ssim, distance):
        return {"protocol": "self", "method": method, "shots": 1, "steps": steps, "subject": "s",
                "target": target, "ssim": ssim, "identity_distance": distance}

    records = [record("warp", None, t, 0.5, 0.40) for t in "abc"]
    records += [record("neural", 0, "a", 0.6, 0.38), record("neural", 0, "b", 0.55, 0.42),
                record("neural", 0, "c", 0.65, 0.36), record("neural", 0, "z", 0.9, 0.0)]  # z: no warp pair
    records.append({"protocol": "cross", "method": "neural", "shots": 1, "steps": 0})
    paired = {p["metric"]: p for p in paired_against_warp(records)}
    assert paired["ssim"]["mean"] == pytest.approx(0.1) and paired["ssim"]["better"] == 1.0
    assert paired["ssim"]["se"] == pytest.approx(np.std([0.1, 0.05, 0.15], ddof=1) / np.sqrt(3))
    distance = paired["identity_distance"]
    assert distance["mean"] == pytest.approx(-0.04 / 3) and distance["better"] == pytest.approx(2 / 3)
    assert distance["count"] == 3
    assert paired_against_warp([r for r in records if r["method"] != "warp"]) == []


def test_eval_command_errors(eval_data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(_app(), ["eval", str(eval_data / "people"), "--methods", "warp", "--shots", "1,x"])
    assert result.exit_code == 2 and "--shots takes comma-separated" in result.output
    result = runner.invoke(_app(), ["eval", str(eval_data / "people"), "--methods", "warp,copy", "--shots", "8"])
    assert result.exit_code == 3 and "no subjects to evaluate" in result.output
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    result = runner.invoke(_app(), ["eval", str(eval_data), "--methods", "copy", "--json", str(existing)])
    assert result.exit_code == 7 and "--overwrite" in result.output
