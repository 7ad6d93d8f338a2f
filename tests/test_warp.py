"""Warp renderer geometry (render/warp.py) and paste-back compositing (render/composite.py)."""

from __future__ import annotations

import importlib.util
import os
import tracemalloc

import cv2
import numpy as np
import pytest

from animate_cli.landmarks.crop import FaceCrop, crop_from_landmarks, face_size
from animate_cli.landmarks.regions import blend_regions, mouth_border_region
from animate_cli.render.composite import Compositor, face_mask, paste_back
from animate_cli.render.warp import (INNER_LIPS, LEFT_EYE, OUTER_LIPS, RIGHT_EYE, FaceWarper,
                                     fill_mouth_interior, mouth_opening, warp_face)

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
CROP_SIZE = 256


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut photo, its dlib 68 landmarks, and its 256 px face crop with crop points."""
    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        pytest.skip("face_recognition_models is not installed")
    model = os.path.join(os.path.dirname(spec.origin), "models", "shape_predictor_68_face_landmarks.dat")
    from skimage import data
    photo = data.astronaut()
    detections = dlib.get_frontal_face_detector()(photo, 1)
    face = min(detections, key=lambda r: r.top())   # the other detection is on the suit patch
    points = np.array([(p.x, p.y) for p in dlib.shape_predictor(model)(photo, face).parts()], np.float32)
    crop = crop_from_landmarks(points, CROP_SIZE)
    return photo, points, crop, crop.crop_image(photo), crop.points_to_crop(points)


def open_mouth(points: np.ndarray, amount: float) -> np.ndarray:
    """Drop the lower lip by ``amount`` x face size (and the chin with it)."""
    size = face_size(points)
    target = points.copy()
    target[[55, 56, 57, 58, 59, 65, 66, 67]] += np.float32([0, amount * size])
    target[5:12] += np.float32([0, 0.8 * amount * size])
    return target


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray, erode: int = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, shift=4)
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask > 0


def test_identity_warp_returns_source(astronaut):
    _, _, _, image, points = astronaut
    out = FaceWarper(image, points).warp(points)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - image).mean() < 1.5
    np.testing.assert_array_equal(out[[0, -1]], image[[0, -1]])
    np.testing.assert_array_equal(out[:, [0, -1]], image[:, [0, -1]])


def test_mesh_keeps_lip_and_eye_outlines_as_edges(astronaut):
    _, _, _, image, points = astronaut
    warper = FaceWarper(image, points)
    edges = {frozenset((int(t[i]), int(t[(i + 1) % 3]))) for t in warper.triangles for i in range(3)}
    for group in (OUTER_LIPS, INNER_LIPS, RIGHT_EYE, LEFT_EYE):
        for i, a in enumerate(group):
            assert frozenset((a, group[(i + 1) % len(group)])) in edges
    # Triangles inside the mouth opening only join inner-lip points: none reaches the lips' outside.
    mouth = warper.triangles[warper.mouth_triangles]
    assert len(mouth) == 6 and set(mouth.ravel()) <= set(INNER_LIPS)
    # Anchors: the four corners are mesh vertices, plus a moving ring around the face.
    corners = {(0.0, 0.0), (255.0, 0.0), (0.0, 255.0), (255.0, 255.0)}
    assert corners <= {tuple(v) for v in warper.source_vertices[68:]}
    assert len(warper.source_vertices) > 68 + 8 + 8


def test_translation_moves_face_pixels(astronaut):
    _, _, _, image, points = astronaut
    out = FaceWarper(image, points).warp(points + np.float32([3, 2]))
    # A window on the face, well inside the moving region.
    x0, y0 = np.floor(points[[36, 19]].min(axis=0)).astype(int)
    x1, y1 = np.ceil(points[[45, 57]].max(axis=0)).astype(int)
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1].astype(np.float32) for im in (image, out)]
    window = cv2.createHanningWindow((x1 - x0, y1 - y0), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(gray[0], gray[1], window)
    assert abs(dx - 3) < 0.3 and abs(dy - 2) < 0.3
    # The frame's corners are fixed anchors: they do not move.
    np.testing.assert_array_equal(out[[0, 0, -1, -1], [0, -1, 0, -1]], image[[0, 0, -1, -1], [0, -1, 0, -1]])


def test_opened_mouth_shows_dark_interior_without_holes(astronaut):
    _, _, _, image, points = astronaut
    target = open_mouth(points, 0.15)
    warper = FaceWarper(image, points)
    map_x, map_y = warper.backward_map(target)
    assert np.isfinite(map_x).all() and np.isfinite(map_y).all()
    out = warper.warp(target)
    inside = polygon_mask(out.shape[:2], target[60:68], erode=1)
    opening = polygon_mask(out.shape[:2], target[60:68])
    lips = polygon_mask(out.shape[:2], target[48:60], erode=1)
    lips &= ~cv2.dilate(opening.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    inside_luma = (out[inside].astype(np.float32) @ LUMA).mean()
    lips_luma = (out[lips].astype(np.float32) @ LUMA).mean()
    assert inside.sum() > 150 and lips.sum() > 150
    assert inside_luma < lips_luma, (inside_luma, lips_luma)
    # Real open mouths show teeth over most of the opening (docs/findings.md, "2026-12-08"): the upper teeth
    # under the upper lip and, this wide open, the lower teeth above the lower lip, both brighter than the dark
    # gap between them, which is darker than half the lips.
    centre = target[[62, 66]].mean(axis=0).round().astype(int)
    top = int(np.ceil(target[62, 1])) + 2
    bottom = int(np.floor(target[66, 1])) - 2
    gap = out[centre[1], centre[0]] @ LUMA
    assert gap < 0.5 * lips_luma
    assert out[top, centre[0]] @ LUMA > 1.5 * gap and out[bottom, centre[0]] @ LUMA > 1.5 * gap
    # No holes: pure black only where the source itself is pure black (the suit), none on the face.
    black = (out == 0).all(axis=2)
    face = polygon_mask(out.shape[:2], cv2.convexHull(target[:27]).reshape(-1, 2))
    assert not (black & face).any()


def test_fill_mouth_interior_only_when_target_opens_more(astronaut):
    _, _, _, _, points = astronaut
    skin = np.full((CROP_SIZE, CROP_SIZE, 3), (200, 150, 140), np.uint8)
    target = open_mouth(points, 0.12)
    filled = fill_mouth_interior(skin, target, points)
    assert filled is not skin and (skin == (200, 150, 140)).all()   # the input is not modified
    inside = polygon_mask(skin.shape[:2], target[60:68], erode=2)
    luma = filled.astype(np.float32) @ LUMA
    skin_luma = np.float32([200, 150, 140]) @ LUMA
    assert luma[inside].min() < 0.3 * skin_luma    # the dark gap between the teeth
    assert luma[inside].max() > 180         # teeth
    # Outside the opening (beyond the 1 px feather) nothing changes.
    outside = ~polygon_mask(skin.shape[:2], target[60:68])
    outside &= ~cv2.dilate((~outside).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    np.testing.assert_array_equal(filled[outside], skin[outside])
    # A target no more open than the source keeps the (warped) source interior.
    np.testing.assert_array_equal(fill_mouth_interior(skin, points, points), skin)
    np.testing.assert_array_equal(fill_mouth_interior(skin, points, target), skin)
    # The teeth band grows with the opening.
    wider = fill_mouth_interior(skin, open_mouth(points, 0.2), points)

    # Through the middle of a central incisor (the mouth's midline is the gap between the two).
    incisor_x = int(round((points[62, 0] + points[63, 0]) / 2))

    def teeth_rows(image: np.ndarray) -> int:
        column = image[:, incisor_x].astype(np.float32) @ LUMA
        return int((column > 180).sum())
    assert teeth_rows(wider) > teeth_rows(filled) > 0
    # Single teeth, not a flat band: across the band the midline gap is darker than the incisors.
    rows = np.flatnonzero(wider[:, incisor_x].astype(np.float32) @ LUMA > 180)
    across = wider[int(rows.mean())].astype(np.float32) @ LUMA
    midline = int(round(points[62, 0]))
    mirrored = 2 * midline - incisor_x
    assert across[midline] < min(across[incisor_x], across[mirrored]) - 25
    assert mouth_opening(open_mouth(points, 0.2)) > mouth_opening(points) + 0.12


def test_blink_closes_the_eye(astronaut):
    _, _, _, image, points = astronaut
    target = points.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        target[upper] = target[lower] - np.float32([0, 0.5])
    out = FaceWarper(image, points).warp(target)
    for eye, lid, brow in ((slice(36, 42), [37, 38], [19, 20]), (slice(42, 48), [43, 44], [23, 24])):
        region = polygon_mask(image.shape[:2], points[eye])
        # Lid skin: a patch of the source between the upper lid and the brow.
        x, y = (points[lid].mean(axis=0) + 0.35 * (points[brow].mean(axis=0) - points[lid].mean(axis=0))
                ).round().astype(int)
        skin = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(np.float32).mean(axis=0)
        before = np.linalg.norm(image[region].astype(np.float32) - skin, axis=1).mean()
        after = np.linalg.norm(out[region].astype(np.float32) - skin, axis=1).mean()
        assert after < 0.85 * before, (before, after)
        # The dark iris and pupil are gone from the closed eye's region.
        assert (out[region] @ LUMA < 70).mean() < 0.4 * (image[region] @ LUMA < 70).mean()
    # The brows keep their place (the lid creases absorb the lid's motion).
    brow_change = [np.abs(out[y - 2:y + 3, x - 2:x + 3].astype(np.int16) - image[y - 2:y + 3, x - 2:x + 3]).mean()
                   for x, y in points[17:27].round().astype(int)]
    assert np.mean(brow_change) < 3.5, brow_change


def test_lids_closing_slide_over_the_eye_instead_of_squashing_it(astronaut):
    # A squint: each upper lid comes down and each lower lid up by a quarter of the gap. What still shows between
    # the lids is the photo's eye where it was (the corners stay put), not the eye squashed into the narrower gap.
    _, _, _, image, points = astronaut

    def lids_moved(share: float) -> np.ndarray:
        # Each upper lid down and each lower lid up by ``share`` of the gap (negative: apart).
        moved = points.copy()
        for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
            gap = points[lower] - points[upper]
            moved[upper] += share * gap
            moved[lower] -= share * gap
        return moved

    target = lids_moved(0.25)
    warper = FaceWarper(image, points)
    out = warper.warp(target)
    squashed = FaceWarper(image, points)
    squashed._eyes = []             # the piecewise-affine eye alone: squashed into the gap
    before = squashed.warp(target)
    for eye in (RIGHT_EYE, LEFT_EYE):
        opening = polygon_mask(image.shape[:2], target[list(eye)], erode=1)
        assert opening.sum() > 20
        slid = np.abs(out[opening].astype(np.float32) - image[opening]).mean()
        squash = np.abs(before[opening].astype(np.float32) - image[opening]).mean()
        assert slid < 4.0 and slid < 0.5 * squash, (slid, squash)
    # An eye opening wider than the photo's is stretched as before (the photo's own eye; the eye model opens only an
    # eye the photo shows shut).
    wider = lids_moved(-0.2)
    np.testing.assert_array_equal(warper.warp(wider), squashed.warp(wider))


def test_flipped_triangles_fall_back_without_garbage(astronaut):
    _, _, _, image, points = astronaut
    target = points.copy()
    target[30] = target[36] - np.float32([15, 0])     # nose tip dragged across the right eye
    target[8] = target[57] - np.float32([0, 20])      # chin folded over the mouth
    warper = FaceWarper(image, points)
    map_x, map_y = warper.backward_map(target)
    assert np.isfinite(map_x).all() and np.isfinite(map_y).all()
    assert map_x.min() > -CROP_SIZE and map_x.max() < 2 * CROP_SIZE
    out = warper.warp(target)
    face = polygon_mask(out.shape[:2], cv2.convexHull(points[:27]).reshape(-1, 2))
    assert not ((out == 0).all(axis=2) & face).any()
    # The frame's corners stay fixed.
    np.testing.assert_array_equal(out[[0, 0, -1, -1], [0, -1, 0, -1]], image[[0, 0, -1, -1], [0, -1, 0, -1]])


def test_bad_points_are_rejected(astronaut):
    _, _, _, image, points = astronaut
    with pytest.raises(ValueError, match=r"target_points must be \(68, 2\)"):
        FaceWarper(image, points).warp(points[:60])
    bad = points.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        warp_face(image, points, bad)
    with pytest.raises(ValueError, match="uint8"):
        FaceWarper(image.astype(np.float32), points)


def test_face_mask_shape_and_smoothness(astronaut):
    _, _, _, _, points = astronaut
    mask = face_mask(points, CROP_SIZE)
    assert mask.shape == (CROP_SIZE, CROP_SIZE) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1
    nose = points[30].round().astype(int)
    assert mask[nose[1], nose[0]] > 0.98
    # The forehead above the brows is covered.
    brow = points[[19, 24]].mean(axis=0)
    forehead = (brow - [0, 0.25 * face_size(points)]).round().astype(int)
    assert mask[forehead[1], forehead[0]] > 0.8
    for edge in (mask[0], mask[-1], mask[:, 0], mask[:, -1]):
        assert edge.max() == 0
    assert np.abs(np.diff(mask, axis=0)).max() < 0.06 and np.abs(np.diff(mask, axis=1)).max() < 0.06


def test_paste_back_identity_and_untouched_outside(astronaut):
    photo, _, crop, crop_image, points = astronaut
    mask = face_mask(points, CROP_SIZE)
    before = photo.copy()
    out = paste_back(photo, crop_image, crop, mask)
    np.testing.assert_array_equal(photo, before)            # input not modified
    assert out is not photo
    assert np.abs(out.astype(np.int16) - photo).mean() < 1.0
    # Pixels outside the ROI are bit-identical.
    x0, y0, x1, y1 = Compositor(photo, crop, mask).roi
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert outside.sum() > 0.5 * outside.size
    np.testing.assert_array_equal(out[outside], photo[outside])
    # The ROI is the footprint of the crop in the photo, no larger.
    corners = crop.points_to_image(np.float32([[0, 0], [CROP_SIZE, CROP_SIZE]]))
    assert x0 >= np.floor(corners[0, 0]) - 1 and x1 <= np.ceil(corners[1, 0]) + 2


def test_paste_back_places_a_changed_crop_and_matches_colour(astronaut):
    photo, _, crop, crop_image, points = astronaut
    mask = face_mask(points, CROP_SIZE)
    tinted = np.clip(crop_image.astype(np.int16) + (30, 0, -30), 0, 255).astype(np.uint8)
    plain = paste_back(photo, tinted, crop, mask)
    matched = paste_back(photo, tinted, crop, mask, match_color=True)
    nose = crop.points_to_image(points[30:31])[0].round().astype(int)
    patch = (slice(nose[1] - 5, nose[1] + 5), slice(nose[0] - 5, nose[0] + 5))
    red_shift = plain[patch][..., 0].astype(float).mean() - photo[patch][..., 0].mean()
    assert 25 < red_shift < 31
    matched_shift = matched[patch].astype(float).mean(axis=(0, 1)) - photo[patch].mean(axis=(0, 1))
    assert np.abs(matched_shift).max() < 5
    # A Compositor built once gives the same frames as paste_back, also with a per-frame mask.
    compositor = Compositor(photo, crop, mask)
    np.testing.assert_array_equal(compositor.compose(tinted), plain)
    np.testing.assert_array_equal(Compositor(photo, crop).compose(tinted, mask), plain)
    with pytest.raises(ValueError, match=r"crop_image must be \(256, 256, 3\) uint8"):
        compositor.compose(tinted[:100])


def test_large_photo_pastes_on_the_roi_only():
    tile = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    photo = np.tile(tile, (10, 10, 1))
    crop = FaceCrop(center=(5000.0, 2500.0), side=900.0, size=CROP_SIZE)
    crop_image = np.full((CROP_SIZE, CROP_SIZE, 3), 128, np.uint8)
    mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    mask[64:192, 64:192] = 1.0
    paste_back(photo[:64, :64], crop_image[:, :], FaceCrop((32.0, 32.0), 64.0, CROP_SIZE), mask)  # warm-up
    tracemalloc.start()
    out = paste_back(photo, crop_image, crop, mask)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # (Its speed is benchmarks/'s to measure: a timed assertion fails on a loaded machine.)
    # One output copy plus ROI-sized buffers; a full-size float image alone would be 4x the photo.
    assert peak < 1.3 * photo.nbytes
    centre = out[2500, 5000]
    assert (centre == 128).all()
    x0, y0 = 5000 - 450, 2500 - 450
    # Outside the crop's footprint (side 900 around the centre) every pixel is untouched.
    assert np.array_equal(out[:y0 - 2], photo[:y0 - 2])
    assert np.array_equal(out[:, :x0 - 2], photo[:, :x0 - 2])
    assert np.array_equal(out[y0 + 902:], photo[y0 + 902:])
    assert np.array_equal(out[:, x0 + 902:], photo[:, x0 + 902:])


def test_single_shot_finetuning_learns_from_round_trip_warps(astronaut):
    """One photo, warp guidance: fine-tuning samples are the photo warped to made-up landmarks and
    back (inputs) with the photo itself as the target, not the photo warped onto itself."""
    import torch

    from animate_cli.finetune import ShotBatch
    from animate_cli.person import Shot

    photo, points, _, _, _ = astronaut
    crop = crop_from_landmarks(points, 64)
    shot = Shot.from_photo("astronaut.png", photo, points, crop)
    batch = ShotBatch([shot], 64, torch.device("cpu"), "warp", seed=3)
    assert len(batch) == ShotBatch.ROUND_TRIPS
    assert all(torch.equal(image, batch.images[0]) for image in batch.images)     # the target: the photo
    differences = (batch.warped - batch.images).abs().mean(dim=(1, 2, 3))
    assert (differences > 0.005).all() and (differences < 0.25).all()             # changed, still the face
    assert len({tuple(w.flatten()[:4000].tolist()) for w in batch.warped}) == ShotBatch.ROUND_TRIPS
    again = ShotBatch([shot], 64, torch.device("cpu"), "warp", seed=3)
    assert torch.equal(again.warped, batch.warped)
    # Without warp guidance a single shot is just itself.
    assert len(ShotBatch([shot], 64, torch.device("cpu"), "none")) == 1
    # A generator that blends only in a region also gets each sample's region.
    assert batch.region is None
    limited = ShotBatch([shot], 64, torch.device("cpu"), "warp", seed=3, blend_region="mouth_border")
    assert torch.equal(limited.warped, batch.warped) and limited.region.shape == (ShotBatch.ROUND_TRIPS, 1, 64, 64)
    assert torch.equal(limited.select(torch.tensor([2]))[3][0, 0], torch.from_numpy(
        mouth_border_region(shot.crop_points, 64)))


def test_mouth_border_region_covers_mouth_and_outside_not_the_skin(astronaut):
    _, _, _, _, points = astronaut
    region = mouth_border_region(points, CROP_SIZE)
    assert region.shape == (CROP_SIZE, CROP_SIZE) and region.dtype == np.float32
    assert region.min() >= 0.0 and region.max() <= 1.0

    def at(point):
        x, y = np.round(point).astype(int)
        return region[y, x]

    assert at(points[48:60].mean(axis=0)) > 0.99                      # mouth centre
    assert at(points[48]) > 0.9 and at(points[54]) > 0.9              # lip corners
    for skin in (points[30], (points[31] + points[2]) / 2, (points[35] + points[14]) / 2, points[37:39].mean(0)):
        assert at(skin) < 0.01                                        # nose tip, cheeks, eye: the warp's
    assert at(points[17:27].mean(axis=0) - [0, 0.3 * face_size(points)]) < 0.01   # forehead stays the warp's
    # Below the chin and beside the face is outside (the forehead band may reach the crop's top).
    assert region[-4:].min() > 0.99 and region[:, :4].min() > 0.99 and region[:, -4:].min() > 0.99
    # Soft edges: values between 0 and 1 exist, but only near the region's outline.
    assert 0.01 < ((region > 0.05) & (region < 0.95)).mean() < 0.25
    batch = blend_regions(np.stack([points, points + 3]), CROP_SIZE, "mouth_border")
    assert batch.shape == (2, 1, CROP_SIZE, CROP_SIZE) and np.array_equal(batch[0, 0], region)
    assert np.array_equal(blend_regions(points[None], 32, "all"), np.ones((1, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="shape"):
        mouth_border_region(points[:60], CROP_SIZE)
    with pytest.raises(ValueError, match="unknown blend region"):
        blend_regions(points[None], 32, "eyes")
