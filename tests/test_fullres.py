"""The full-resolution renderer: the photo resampled once at its own size, what it lacks laid over it in
its own colours; a still driver gives the photo back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from animate_cli.config import FinetuneConfig, RenderConfig
from animate_cli.eval.metrics import detail_ratio
from animate_cli.io.images import save_image
from animate_cli.jobs import build_engine
from animate_cli.landmarks import LandmarkTrack, track_video
from animate_cli.landmarks.retarget import hold_still
from animate_cli.render.palette import PhotoPalette, chroma
from animate_cli.render.pipeline import Driver, render_frames

SIZE = 768


@pytest.fixture(scope="module")
def large_photo(tmp_path_factory) -> tuple[np.ndarray, object]:
    """The astronaut photo enlarged to 768 px (larger than the warp's 512 px working crop)."""
    image = cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    save_image(path, image)
    return image, path


@pytest.fixture(scope="module")
def warp_engine():
    return build_engine(None, landmarks="dlib", device="cpu", renderer="warp")


def _frames(renderer, person, targets: np.ndarray, frame_size: tuple[int, int] = (SIZE, SIZE),
            **config) -> list[np.ndarray]:
    """Every frame ``renderer`` makes of ``person`` driven by ``targets`` (landmarks in a driving frame of
    ``frame_size``), the first of them the reference."""
    track = LandmarkTrack(np.asarray(targets, np.float32), np.ones(len(targets), bool), 25.0, frame_size)
    stream = render_frames(renderer, person, Driver(path=None, track=track, video=None),
                           RenderConfig(audio=False, reference="first", **config))
    try:
        return list(stream.frames)
    finally:
        stream.frames.close()


def _render(engine, photo_path, targets: np.ndarray, **config) -> tuple[list[np.ndarray], object]:
    person = engine.make_person([photo_path], FinetuneConfig(steps=0))
    return _frames(engine.frame_renderer(person), person, targets, **config), person


def _open_mouth(points: np.ndarray, amount: float) -> np.ndarray:
    """The landmarks with the jaw and lower lip lowered by ``amount`` x the face size."""
    moved = np.array(points, np.float64)
    size = float(np.ptp(points[:, 1]))
    lower = [5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67]
    moved[lower, 1] += amount * size
    return moved


@pytest.mark.parametrize("head_motion", [True, False])
def test_a_still_driver_gives_the_photo_back(large_photo, warp_engine, head_motion):
    image, path = large_photo
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    still = np.repeat(person.photo.points[None], 3, axis=0)
    frames, _ = _render(warp_engine, path, still, head_motion=head_motion)
    for frame in frames:
        assert frame.shape == image.shape
        assert np.abs(frame.astype(int) - image.astype(int)).max() <= 1


def test_an_odd_sized_photo_is_not_resampled_to_an_even_size(tmp_path, warp_engine):
    # The encoder needs even sizes: a 577 px wide photo's frames lose their last column. Resizing them to 576 px
    # instead blurred every frame to under half the photo's detail.
    image = cv2.resize(data.astronaut(), (577, 601), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "odd.png"
    save_image(path, image)
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    still = np.repeat(person.photo.points[None], 2, axis=0)
    frames = _frames(warp_engine.frame_renderer(person), person, still, (577, 601))
    assert frames[0].shape == (600, 576, 3)
    assert np.abs(frames[0].astype(int) - image[:600, :576].astype(int)).max() <= 1


def test_a_still_neural_driver_gives_the_photo_back(large_photo):
    # The bundled generator's correction is left out where nothing moves.
    image, path = large_photo
    engine = build_engine(None, landmarks="dlib", device="cpu", backend="torch")
    person = engine.make_person([path], FinetuneConfig(steps=0))
    frames, _ = _render(engine, path, np.repeat(person.photo.points[None], 2, axis=0))
    assert np.abs(frames[1].astype(int) - image.astype(int)).max() <= 1


def test_motion_keeps_the_photos_detail(large_photo, warp_engine):
    image, path = large_photo
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    points = person.photo.points.astype(np.float64)
    angle = np.radians(3.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = points.mean(axis=0)
    turned = (points - centre) @ rotation.T + centre + (4.0, -3.0)
    frames, _ = _render(warp_engine, path, np.stack([points, turned, _open_mouth(turned, 0.03)]))
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    for frame in frames[1:]:
        # The face moved (it is not the photo) and kept nearly all of the photo's fine detail; the
        # renderer before this one (a 512 px crop resampled three times) kept 0.49-0.56 here.
        assert np.abs(frame.astype(int) - image.astype(int)).max() > 20
        assert detail_ratio(frame[y0:y1, x0:x1], image[y0:y1, x0:x1]) > 0.85


def test_a_moved_heads_soft_edge_keeps_the_photos_detail(large_photo, warp_engine, tmp_path):
    # Where the moved head's soft edge (hair over the background) lies over the background plate, the photo's
    # own background behind it is swapped for the plate's instead of the edge being blended into the plate:
    # the edge keeps its fine detail (0.89 of it here, 1.05 above the brows). Blending it in kept 0.41 (0.48).
    from animate_cli.render.head_motion import segment_person

    # The photo with a margin: the head moves rigidly by ``shift`` away from the photo's edges (which stay put).
    image = cv2.copyMakeBorder(large_photo[0], 160, 0, 160, 160, cv2.BORDER_REFLECT_101)
    path = tmp_path / "margin.png"
    save_image(path, image)
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    points = person.photo.points.astype(np.float64)
    shift = np.array([9, -6])
    frames, _ = _render(warp_engine, path, np.stack([points, points + shift]))
    matte = segment_person(image, points)
    rows, cols = np.nonzero((matte > 0.2) & (matte < 0.95))
    inside = (rows + shift[1] >= 0) & (cols + shift[0] < image.shape[1])
    rows, cols = rows[inside], cols[inside]
    above = rows < points[:, 1].min()
    assert len(rows) > 2000 and above.sum() > 500

    def laplacian(picture: np.ndarray) -> np.ndarray:
        return cv2.Laplacian(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)

    before, after = laplacian(image)[rows, cols], laplacian(frames[1])[rows + shift[1], cols + shift[0]]
    assert after.var() / before.var() > 0.6
    assert after[above].var() / before[above].var() > 0.85


def test_a_grey_photo_stays_grey_with_an_open_mouth(tmp_path, warp_engine):
    grey = cv2.cvtColor(cv2.cvtColor(cv2.resize(data.astronaut(), (SIZE, SIZE)), cv2.COLOR_RGB2GRAY),
                        cv2.COLOR_GRAY2RGB)
    path = tmp_path / "grey.png"
    save_image(path, grey)
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    points = person.photo.points
    frames, _ = _render(warp_engine, path, np.stack([points, _open_mouth(points, 0.12)]))
    x0, y0 = np.floor(points[48:68].min(axis=0)).astype(int) - 10
    x1, y1 = np.ceil(points[48:68].max(axis=0)).astype(int) + 60
    mouth = frames[1][y0:y1, x0:x1]
    assert np.abs(mouth.astype(int) - grey[y0:y1, x0:x1].astype(int)).max() > 40   # the mouth opened
    assert np.percentile(np.linalg.norm(chroma(mouth), axis=-1), 99.9) <= 4.0


def test_the_palette_keeps_a_colour_photos_colours_and_greys_a_grey_one():
    image = data.astronaut()
    backend = build_engine(None, landmarks="dlib", device="cpu", renderer="warp").backend
    faces = backend.detect_faces(image)
    points = backend.landmarks(image, faces[0].box)
    colour = PhotoPalette.from_photo(image, points)
    teeth, interior = np.array([226.0, 220.0, 204.0]), np.array([96.0, 40.0, 38.0])
    # A colour photo's own range holds natural teeth and a red interior: they are kept.
    np.testing.assert_allclose(colour.apply(np.stack([teeth, interior])), np.stack([teeth, interior]), atol=1.0)
    grey_image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    grey = PhotoPalette.from_photo(grey_image, points)
    out = grey.apply(np.stack([teeth, interior, [40.0, 200.0, 60.0]]))
    assert np.abs(chroma(out)).max() < 1e-3
    # Luma is kept: bright teeth stay bright, the interior dark.
    np.testing.assert_allclose(out @ [0.299, 0.587, 0.114], np.stack([teeth, interior, [40.0, 200.0, 60.0]])
                               @ [0.299, 0.587, 0.114], atol=1e-3)
    # A sepia-like print: painted colours take its tone, within its range.
    sepia = np.clip(grey_image.astype(np.float32) * [1.07, 0.95, 0.78], 0, 255).astype(np.uint8)
    tone = PhotoPalette.from_photo(sepia, points)
    toned = chroma(tone.apply(np.stack([teeth, interior])))
    assert np.all(np.linalg.norm(toned - tone.mean, axis=1) <= tone.radius + 1e-3)


def test_hold_still_takes_out_only_a_nearly_still_frames_motion():
    rng = np.random.default_rng(0)
    source = rng.uniform(100, 300, (68, 2)).astype(np.float32)
    jitter = source + rng.normal(0, 0.2, source.shape)          # 0.1 % of a 200 px face
    moved = source + (6.0, 0.0)                                 # 3 %
    held = hold_still(source, np.stack([jitter, moved]))
    np.testing.assert_array_equal(held[0], source)
    np.testing.assert_allclose(held[1], moved, atol=1e-4)


def test_tracking_a_still_video_gives_the_same_landmarks_in_every_frame(warp_engine):
    image = data.astronaut()
    track = track_video(warp_engine.backend, [image] * 5, 25.0, redetect_every=2)   # re-detections too
    assert np.abs(track.points - track.points[0]).max() < 1e-3


def test_paint_is_laid_over_the_photo_with_its_soft_edge_once():
    # A crop whose hole was painted black at half strength over its own warp must come out half black over
    # the full-size photo too (blending the already blended crop again gave three quarters of the photo).
    from animate_cli.landmarks.crop import FaceCrop
    from animate_cli.person import Shot
    from animate_cli.render.fullres import FullResCompositor
    from animate_cli.render.renderers import FaceLayer

    size = 64
    image = np.full((128, 128, 3), 100, np.uint8)
    points = np.stack(np.meshgrid(np.linspace(40, 88, 17), np.linspace(40, 88, 4)), axis=-1).reshape(-1, 2)[:68]
    shot = Shot.from_photo("photo.png", image, points.astype(np.float32), FaceCrop((64.0, 64.0), 96.0, size))
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    alpha[24:40, 24:40] = 0.5
    unpainted = np.full((size, size, 3), 100, np.uint8)
    painted = (unpainted * (1 - alpha[..., None])).astype(np.uint8)           # black at alpha over the warp
    layer = FaceLayer((grid_x, grid_y), painted, alpha, None, None, unpainted)
    frame = FullResCompositor(shot, size, whole_crop=True).compose(layer, shot.crop_points)
    centre = frame[60:68, 60:68].astype(int)
    assert np.abs(centre - 50).max() <= 1
    assert np.abs(frame[:20].astype(int) - 100).max() == 0       # untouched outside


def test_a_redrawn_lid_keeps_a_larger_photos_fine_detail():
    # A lid painted flat in the working-size crop, over a photo shown 3x larger: where the paint is skin the
    # photo's fine detail goes back on, in full where the paint is, so the lid is no soft patch; where the
    # paint is not skin (a mouth's interior) the paint alone shows.
    from animate_cli.landmarks.crop import FaceCrop
    from animate_cli.person import Shot
    from animate_cli.render.fullres import FullResCompositor
    from animate_cli.render.renderers import FaceLayer

    size, scale = 64, 3
    rng = np.random.default_rng(5)
    image = np.clip(120 + rng.normal(0, 25, (size * scale, size * scale, 1)), 0, 255).astype(np.uint8).repeat(3, 2)
    points = np.stack(np.meshgrid(np.linspace(40, 150, 17), np.linspace(40, 150, 4)), axis=-1).reshape(-1, 2)[:68]
    centre = size * scale / 2.0
    shot = Shot.from_photo("photo.png", image, points.astype(np.float32),
                           FaceCrop((centre, centre), float(size * scale), size))
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    alpha[20:44, 20:44] = 1.0
    unpainted = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    painted = unpainted.copy()
    painted[alpha > 0] = 150                                            # the lid, drawn flat
    inside = (slice(25 * scale, 39 * scale), slice(25 * scale, 39 * scale))
    for skin, kept in ((alpha, True), (None, False)):
        layer = FaceLayer((grid_x, grid_y), painted, alpha, skin, None, unpainted)
        frame = FullResCompositor(shot, size, whole_crop=True).compose(layer, shot.crop_points)
        lid = frame[inside]
        assert abs(float(lid.mean()) - 150) < 3                         # the paint's tone
        ratio = detail_ratio(lid, image[inside])
        assert (ratio > 0.6) if kept else (ratio < 0.05), (skin is not None, ratio)


def test_eval_still_reports_the_photo_given_back(tmp_path, short_driver, portrait_path):
    import json

    from typer.testing import CliRunner

    from animate_cli.cli import app

    report = tmp_path / "still.json"
    result = CliRunner().invoke(app, ["eval", str(short_driver), "--full-frame", "--methods", "warp",
                                      "--max-frames", "4", "--stride", "2", "--still", str(portrait_path),
                                      "--json", str(report), "-q"])
    assert result.exit_code == 0, result.output
    assert "still driver" in result.output
    (row,) = json.loads(report.read_text())["still_driver"]
    assert row["photo"] == portrait_path.name and row["method"] == "warp" and row["frames"] == 20
    # Within 1 dB of the photo encoded once at the same crf, and as sharp.
    assert row["box_psnr"] >= row["ceiling_box_psnr"] - 1.0
    assert row["detail"] >= 0.9 * row["ceiling_detail"]


def test_a_lattice_map_gives_the_per_pixel_frames(tmp_path, warp_engine, monkeypatch):
    # Where the output shows the face at twice the working size or more (a large photo), the backward map is
    # made on a lattice and enlarged: the frames are those of the map made at every pixel.
    from animate_cli.render import fullres

    side = 3072
    path = tmp_path / "large.png"
    save_image(path, cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC))
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    points = person.photo.points.astype(np.float64)
    moved = _open_mouth(points, 0.08) + np.array([12.0, -8.0])
    targets = np.stack([points, moved])
    lattices = []
    nodes = fullres.lattice_nodes

    def spy(roi, lattice):
        lattices.append(lattice)
        return nodes(roi, lattice)

    monkeypatch.setattr(fullres, "lattice_nodes", spy)

    def render() -> np.ndarray:
        return _frames(warp_engine.frame_renderer(person), person, targets, (side, side))[1]

    coarse = render()
    assert max(lattices) > 1
    monkeypatch.setattr(fullres, "MAX_LATTICE", 1)
    fine = render()
    difference = np.abs(coarse.astype(int) - fine.astype(int))
    assert np.abs(fine.astype(int) - cv2.resize(data.astronaut(), (side, side)).astype(int)).mean() > 1.0
    assert difference.mean() < 0.2 and np.percentile(difference, 99.9) <= 8


@pytest.mark.parametrize("step, rows, beyond", [(4, 32, (3, 1)), (3, 30, (3, 3))])
def test_the_plates_cells_reach_every_pixel_where_it_shows_or_the_photo_does(step, rows, beyond):
    # The plate's weight lives on nodes every few pixels; the photo is resampled, the plate blended and the swap
    # made only in the runs of cells that need it. Every pixel whose enlarged weight calls for one of them lies
    # in those runs, and a pixel left out of the photo's runs is one the plate alone shows. The last nodes may lie
    # past the ROI's edge (a lattice of 3 px): no run is empty or outside it.
    from animate_cli.render import fullres

    rng = np.random.default_rng(3)
    # The person (0) on the left, a soft edge wandering down the middle, the background beside it (1) on the right.
    edge = 12 + rng.integers(-3, 4, size=(21, 1))
    nodes = np.clip((np.arange(31)[None, :] - edge) / 6.0 + rng.normal(0, 0.05, (21, 31)), 0, 1).astype(np.float32)
    size = (31 * step - beyond[0], 21 * step - beyond[1])
    photo_cells = fullres._cells(nodes, rows // step, largest=False) < fullres.PLATE_ONLY
    plate = fullres._Plate(nodes, None, step, rows, photo_cells)
    weight = plate.at(nodes, (0, size[1], 0, size[0]))

    def covered(spans) -> np.ndarray:
        mask = np.zeros(weight.shape, bool)
        for r0, r1, c0, c1 in spans:
            assert 0 <= r0 < r1 <= size[1] and 0 <= c0 < c1 <= size[0]
            mask[r0:r1, c0:c1] = True
        return mask

    photo = covered(plate.spans(plate.photo, size))
    assert photo[weight < fullres.PLATE_ONLY].all()
    assert not photo.all()
    shows = covered(plate.spans(plate.cells(nodes, largest=True) > 0, size))
    assert shows[weight > 0].all()
    assert not shows.all()


def test_the_enlarged_photo_samples_as_sharply_as_lanczos_at_bicubics_cost():
    # The photo is enlarged twice once (Lanczos, its even pixels the photo's own) and each frame samples that with
    # bicubic: a still map gives the photo back exactly, and a moved one matches Lanczos on the photo itself
    # within a few grey levels and keeps at least its detail (plain bicubic keeps less).
    from animate_cli.render import fullres

    image = np.ascontiguousarray(data.astronaut()[40:260, 120:340])
    box = (30, 20, 200, 210)
    fine = fullres.fine_photo(image, box, pad=16)
    ox, oy = box[0] - 16, box[1] - 16
    assert np.array_equal(fine[0::2, 0::2][20 - oy:210 - oy, 30 - ox:200 - ox], image[20:210, 30:200])

    ys, xs = np.mgrid[60:170, 70:160].astype(np.float32)
    still = cv2.remap(fine, 2 * (xs - ox), 2 * (ys - oy), cv2.INTER_CUBIC, borderMode=fullres.PHOTO_BORDER)
    assert np.array_equal(still, image[60:170, 70:160])

    angle, centre = np.radians(4.0), (115.0, 115.0)
    map_x = (centre[0] + np.cos(angle) * (xs - centre[0]) - np.sin(angle) * (ys - centre[1]) + 0.37).astype(np.float32)
    map_y = (centre[1] + np.sin(angle) * (xs - centre[0]) + np.cos(angle) * (ys - centre[1]) - 0.21).astype(np.float32)
    enlarged = cv2.remap(fine, 2 * (map_x - ox), 2 * (map_y - oy), cv2.INTER_CUBIC, borderMode=fullres.PHOTO_BORDER)
    lanczos = cv2.remap(image, map_x, map_y, cv2.INTER_LANCZOS4, borderMode=fullres.PHOTO_BORDER)
    bicubic = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=fullres.PHOTO_BORDER)
    difference = np.abs(enlarged.astype(int) - lanczos.astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 6
    assert detail_ratio(enlarged, lanczos) >= 0.98
    assert detail_ratio(bicubic, lanczos) < detail_ratio(enlarged, lanczos)


def test_the_learned_teeth_show_only_where_the_output_shows_them_at_about_their_size(tmp_path, warp_engine):
    """The mouth model draws at its crop's size (96 px): on a small face its teeth are drawn over the synthetic
    interior; on a large face, which would show that drawing enlarged to a soft smear, the synthetic interior's
    crisp teeth alone (the frame is then the one ``--mouth synthetic`` makes)."""
    synthetic_engine = build_engine(None, landmarks="dlib", device="cpu", renderer="warp", mouth="synthetic")
    made = {}
    face = data.astronaut()[:300, 100:400]      # the face fills about a third of it
    for size in (300, 900):
        image = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        path = tmp_path / f"astronaut{size}.png"
        save_image(path, image)
        person = warp_engine.make_person([path], FinetuneConfig(steps=0))
        targets = np.stack([person.photo.points, _open_mouth(person.photo.points, 0.12)])
        made[size] = {name: _frames(engine.frame_renderer(engine.make_person([path], FinetuneConfig(steps=0))),
                                    person, targets, (size, size))[1]
                      for name, engine in (("teeth", warp_engine), ("synthetic", synthetic_engine))}
    assert not np.array_equal(made[300]["teeth"], made[300]["synthetic"])
    assert np.array_equal(made[900]["teeth"], made[900]["synthetic"])


def test_a_large_photo_is_sampled_from_its_enlargement_even_where_the_head_nears_its_edge(tmp_path, warp_engine,
                                                                                          monkeypatch):
    """A photo of about a megapixel or more (its moving region past 0.6 Mpx) is sampled from its enlargement, as a
    small one is: sharper than bicubic on the photo and cheaper than Lanczos. A head moved down towards the
    photo's top edge samples the photo's reflection above it, which the enlargement holds too."""
    from animate_cli.render import fullres

    side = 1200
    rng = np.random.default_rng(5)
    image = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    image = np.clip(image + rng.normal(0.0, 6.0, image.shape), 0, 255).astype(np.uint8)  # a photo's grain
    path = tmp_path / "large.png"
    save_image(path, image)
    person = warp_engine.make_person([path], FinetuneConfig(steps=0))
    points = person.photo.points.astype(np.float64)
    targets = np.stack([points, points + np.array([6.0, 40.0])])
    sampled = []
    covers = fullres.FullResCompositor._fine_covers

    def spy(self, backward):
        sampled.append((self._fine is not None and covers(self, backward), float(backward.y.min())))
        return sampled[-1][0]

    monkeypatch.setattr(fullres.FullResCompositor, "_fine_covers", spy)

    def render() -> np.ndarray:
        return _frames(warp_engine.frame_renderer(person), person, targets, (side, side))[1]

    enlarged = render()
    assert all(fine for fine, _ in sampled) and min(top for _, top in sampled) < 0   # it reached past the top
    monkeypatch.setattr(fullres, "FINE_MAX_PIXELS", 0)
    monkeypatch.setattr(fullres, "SHARP_KERNEL_MAX_PIXELS", 10 ** 8)
    lanczos = render()
    difference = np.abs(enlarged.astype(int) - lanczos.astype(int))
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 8
    moved = np.abs(enlarged.astype(int) - image.astype(int)).max(axis=2) > 20
    assert moved[:120].mean() > 0.05     # the head moved near the top edge
    assert detail_ratio(enlarged, lanczos) >= 0.98
