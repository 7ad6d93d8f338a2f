"""Every output frame is the photo resampled once, at the photo's own resolution.

Everything that moves pixels of the photo is one backward map over the output frame, composed in
coordinates rather than by chaining images:

- the head's motion (``HeadMotion.backward_map``: the head's similarity with the neck's fall-off, solved on
  a coarse grid where it is smooth);
- inside the face, the renderer's face motion (``FaceLayer.source_map``, made at the working size where
  it is smooth: piecewise affine), reached through the crop that follows the head, and blended with the
  head's map by the face mask: the two agree at the mask's edge, so there is no seam and no double image.

The photo is then sampled once through that map with a sharp kernel, and what the photo lacks is laid
over it with soft edges: the generator's change (added, so the photo's detail stays under it), the
mouth's interior and teeth, and redrawn eyes (their lids keep the photo's fine detail when the photo is
larger than the working size). Where the moved head's soft edge lies over the background plate, the
photo's own background behind the moved pixel is swapped for the plate's at its new place, so hair strands
over a wall keep their detail instead of being blended into the plate. A still driver gives the photo back,
and a large photo costs little more than a small one: only the region that can move is computed, and where
the plate alone shows (the background beside a moved head) the photo is not resampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ..person import Shot
from .composite import _mask_support, compose_affine, crop_mask, face_mask, mapped_box
from .head3d import Head3D, RigidMotion
from .head_motion import PHOTO_BORDER, HeadMotion, enlarge, invert_affine, lattice_nodes, row_runs
from .renderers import FaceLayer

# The photo is resampled with bicubic (4x4 taps) from the photo enlarged twice once per photo with Lanczos
# (``fine_photo``): as sharp as Lanczos on the photo itself (8x8 taps, about 5x bicubic's cost), at bicubic's
# cost. Measured on a classical warp, bilinear keeps 0.58 of the detail, bicubic 0.81, Lanczos 0.85.
# The enlarged photo covers the pixels that can move (the head's support, grown by FINE_MARGIN of its size and
# FINE_PAD pixels) where that is at most FINE_MAX_PIXELS (its enlargement then holds at most 4x that, 48 MB); a
# frame whose map reaches beyond it samples the photo itself, with Lanczos where its moving region is at most
# SHARP_KERNEL_MAX_PIXELS, else with bicubic.
FINE_MAX_PIXELS = 4_000_000
SHARP_KERNEL_MAX_PIXELS = 600_000
FINE_MARGIN = 0.5
FINE_PAD = 16
# ... and past the photo's edge by at most FINE_BEYOND of the head's size (a head moved towards an edge samples the
# photo's reflection there).
FINE_BEYOND = 0.1
# The face mask is made at 1/MASK_REDUCTION of the working size and enlarged (it is smooth).
MASK_REDUCTION = 4
# Under redrawn skin (lids) the photo's detail is kept when one working-size pixel covers more than this
# many output pixels; the detail is the photo minus its blur at about half that footprint.
DETAIL_UPSCALE = 1.2

# The background plate shows only where the head's field moves a pixel this far (output pixels) or more.
STILL_PIXELS = 1.0
# ... computed on a lattice of this step (output pixels) and enlarged: it follows the matte's soft edge.
PLATE_STEP = 4
# The photo's background behind a moved pixel is swapped for the plate's (``_over_plate``) in full where the matte
# is this or more, less below it: where the matte calls it background the plate's blend is kept.
SWAP_MATTE = 0.25
# Beside the person, where the plate's weight is this or more, the photo is not resampled (the plate shows);
# which columns need it, where the plate shows and where the swap is made, is decided per strip of about this
# many rows.
PLATE_ONLY = 0.9999
RESAMPLE_ROWS = 32
# The swap is made where its weight is more than this (less changes a pixel by under a grey level).
SWAP_MIN = 0.004

# The backward map is made on a lattice of at most this step (output pixels) and enlarged: about a node per
# working-size pixel, rounded up to whole output pixels (a face shown 1.2x the working size: every 2 px; the
# face's map is piecewise affine, which a bilinear lattice reproduces but along its triangles' edges), and never
# coarser than the head field's own grid (``head_motion.GRID_STEP``). A face shown within LATTICE_SLACK of the
# working size keeps a node per pixel.
MAX_LATTICE = 4
LATTICE_SLACK = 0.05

# What is painted is averaged down first where one output pixel covers more than this many crop pixels.
SHRINK_FIRST = 1.5

_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
# A node and its neighbours right and below: the four that reach a cell.
_CELL = np.ones((2, 2), np.uint8)


def _affine_grid(matrix: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of ``box`` (x0, y0, x1, y1), its image under the 2x3 ``matrix`` (float32 x, y)."""
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    m = matrix.astype(np.float32)
    return m[0, 0] * xs + (m[0, 1] * ys + m[0, 2]), m[1, 0] * xs + (m[1, 1] * ys + m[1, 2])


def _half_pixel_kernel(taps: int = 4) -> np.ndarray:
    """Lanczos (``taps`` lobes) weights of the 2 ``taps`` pixels around a point half a pixel past a pixel."""
    offsets = np.arange(-taps + 0.5, taps, 1.0)
    weights = np.sinc(offsets) * np.sinc(offsets / taps)
    return (weights / weights.sum()).astype(np.float32)


def fine_photo(image: np.ndarray, box: tuple[int, int, int, int], pad: int = FINE_PAD) -> np.ndarray:
    """The photo's ``box`` (x0, y0, x1, y1), grown by ``pad`` pixels (beyond the photo: PHOTO_BORDER), enlarged
    twice with Lanczos so that its even pixels are the photo's: pixel (2 (x - x0 + pad), 2 (y - y0 + pad)) is photo
    pixel (x, y), the odd ones lie half a pixel between (the filter is separable, so three 1D passes)."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    grown = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    inner = (max(grown[0], 0), max(grown[1], 0), min(grown[2], width), min(grown[3], height))
    part = cv2.copyMakeBorder(image[inner[1]:inner[3], inner[0]:inner[2]], inner[1] - grown[1], grown[3] - inner[3],
                              inner[0] - grown[0], grown[2] - inner[2], PHOTO_BORDER)
    kernel, one = _half_pixel_kernel(), np.ones(1, np.float32)
    half = len(kernel) // 2 - 1
    rows, columns = part.shape[:2]
    fine = np.empty((2 * rows, 2 * columns) + part.shape[2:], part.dtype)
    fine[0::2, 0::2] = part
    fine[0::2, 1::2] = cv2.sepFilter2D(part, -1, kernel, one, anchor=(half, 0), borderType=PHOTO_BORDER)
    fine[1::2, 0::2] = cv2.sepFilter2D(part, -1, one, kernel, anchor=(0, half), borderType=PHOTO_BORDER)
    fine[1::2, 1::2] = cv2.sepFilter2D(part, -1, kernel, kernel, anchor=(half, half), borderType=PHOTO_BORDER)
    return fine


def _box_union(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None):
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _node_matrix(matrix: np.ndarray, roi: tuple[int, int, int, int], lattice: int) -> np.ndarray:
    """``matrix`` (2x3) acting on the lattice's node indices: node (i, j) is pixel roi's corner + lattice (i, j)."""
    return compose_affine(np.asarray(matrix, np.float64),
                          np.array([[lattice, 0.0, roi[0]], [0.0, lattice, roi[1]]]))


def _nodes_within(box: tuple[int, int, int, int], roi: tuple[int, int, int, int], lattice: int):
    """The lattice nodes (i0, j0, i1, j1), ends excluded, whose cells cover the pixels of ``box`` (inside
    ``roi``); None if none."""
    columns, rows = lattice_nodes(roi, lattice)
    i0, j0 = (box[0] - roi[0]) // lattice, (box[1] - roi[1]) // lattice
    i1 = min(-(-(box[2] - 1 - roi[0]) // lattice) + 1, columns)
    j1 = min(-(-(box[3] - 1 - roi[1]) // lattice) + 1, rows)
    return (i0, j0, i1, j1) if i1 > i0 and j1 > j0 else None


def _node_pixels(nodes: tuple[int, int, int, int], roi: tuple[int, int, int, int],
                 step: int) -> tuple[int, int, int, int]:
    """The output pixels (x0, y0, x1, y1) from the first to the last of lattice ``nodes`` (i0, j0, i1, j1; ends
    excluded) of ``roi`` every ``step`` pixels, clipped to ``roi``."""
    i0, j0, i1, j1 = nodes
    x0, y0, x1, y1 = roi
    return x0 + step * i0, y0 + step * j0, min(x0 + step * (i1 - 1) + 1, x1), min(y0 + step * (j1 - 1) + 1, y1)


def _at_pixels(nodes: np.ndarray, span: tuple[int, int, int, int], step: int) -> np.ndarray:
    """Lattice ``nodes`` (node (i, j) at pixel (step i, step j)) at every pixel of ``span`` (r0, r1, c0, c1):
    sliced where the lattice is the pixels, else enlarged bilinearly (edges repeated)."""
    r0, r1, c0, c1 = span
    if step == 1:
        return nodes[r0:r1, c0:c1]
    ratio = 1.0 / step
    return enlarge(nodes, (c1 - c0, r1 - r0), ratio, (c0 * ratio, r0 * ratio))


def _cells(nodes: np.ndarray, per_strip: int, largest: bool) -> np.ndarray:
    """Per strip of ``per_strip`` rows of cells and per column of cells, the largest (or smallest) of the nodes
    that reach the cell (a cell: the pixels between a node and its neighbours right and below)."""
    cell = (cv2.dilate if largest else cv2.erode)(nodes, _CELL, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    strips = -(-cell.shape[0] // per_strip)
    # The last strip's missing rows repeat its last row (no change to a largest or a smallest).
    stacked = np.pad(cell, ((0, strips * per_strip - cell.shape[0]), (0, 0)), mode="edge").reshape(
        strips, per_strip, -1)
    return stacked.max(axis=1) if largest else stacked.min(axis=1)


def _shrunk_part(images: tuple[np.ndarray, ...], px: np.ndarray, py: np.ndarray, factor: float):
    """The part of the (equally sized) crop ``images`` that pixels (``px``, ``py``) of the crop sample bilinearly,
    each averaged down by about ``factor`` (INTER_AREA), and (px, py) in the shrunk part's pixels. Only that part is
    averaged, not the whole crop (docs/findings.md, "2026-12-07 (last)"); its width and height are whole shrunk
    pixels, so its scale differs from ``factor`` by under half a pixel over it."""
    height, width = images[0].shape[:2]
    # Grown by what one shrunk pixel and its bilinear neighbour cover.
    margin = int(np.ceil(2.0 / factor)) + 1
    x0, x1 = max(int(np.floor(px.min())) - margin, 0), min(int(np.ceil(px.max())) + margin + 1, width)
    y0, y1 = max(int(np.floor(py.min())) - margin, 0), min(int(np.ceil(py.max())) + margin + 1, height)
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = 0, 0, width, height
    size = (max(1, int(round((x1 - x0) * factor))), max(1, int(round((y1 - y0) * factor))))
    scale_x, scale_y = size[0] / (x1 - x0), size[1] / (y1 - y0)
    shrunk = tuple(cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA) for image in images)
    return shrunk, (px - x0 + 0.5) * scale_x - 0.5, (py - y0 + 0.5) * scale_y - 0.5


class _Plate(NamedTuple):
    """How the background plate shows in a frame (``FullResCompositor._plate_weight``), on nodes every ``step``
    output pixels from the ROI's corner (enlarged bilinearly where a pixel needs it, edges repeated): its
    weight, the swap's weight (``_over_plate``, None where there is none), and the cells where the photo shows
    at all (``photo``: not every node reaching it has the weight PLATE_ONLY). The ROI is handled in strips of
    ``rows`` pixels, each made of whole cells (a cell: the pixels between four nodes, which only they reach):
    cell arrays are (strips, columns)."""

    weight: np.ndarray
    swap: np.ndarray | None
    step: int
    rows: int
    photo: np.ndarray

    def cells(self, nodes: np.ndarray, largest: bool) -> np.ndarray:
        """Per strip and column of cells, the largest (or smallest) of the nodes that reach it."""
        return _cells(nodes, self.rows // self.step, largest)

    def spans(self, touched: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """(r0, r1, c0, c1): the runs of cells ``touched`` as pixels of a ROI of ``size`` (width, height); the
        last nodes may lie beyond the ROI, and their cells' pixels are left out."""
        width, height = size
        strips, firsts, ends = row_runs(touched)
        spans = []
        for strip, first, end in zip(strips.tolist(), firsts.tolist(), ends.tolist()):
            r0, c0 = strip * self.rows, first * self.step
            if r0 < height and c0 < width:
                spans.append((r0, min(r0 + self.rows, height), c0, min(end * self.step, width)))
        return spans

    def at(self, nodes: np.ndarray, span: tuple[int, int, int, int]) -> np.ndarray:
        """``nodes`` enlarged to the pixels of ``span`` (r0, r1, c0, c1)."""
        return _at_pixels(nodes, span, self.step)


class _Map(NamedTuple):
    """The backward map on its lattice (a node every ``lattice`` pixels from the ROI's corner), enlarged to
    the pixels of a span only where a span is resampled."""

    x: np.ndarray
    y: np.ndarray
    lattice: int

    def at(self, span: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y) at every pixel of ``span`` (r0, r1, c0, c1) of the ROI."""
        return _at_pixels(self.x, span, self.lattice), _at_pixels(self.y, span, self.lattice)


@dataclass(frozen=True)
class _FaceNodes:
    """The face's crop coordinates (cx, cy) and mask weight on lattice ``nodes`` of ``roi``, and the output
    pixels they cover (``pixels``), enlarged to any box of those pixels on demand."""

    cx: np.ndarray
    cy: np.ndarray
    weight: np.ndarray
    nodes: tuple[int, int, int, int]
    roi: tuple[int, int, int, int]
    lattice: int

    @property
    def pixels(self) -> tuple[int, int, int, int]:
        return _node_pixels(self.nodes, self.roi, self.lattice)

    def clip(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
        px0, py0, px1, py1 = self.pixels
        x0, y0, x1, y1 = max(box[0], px0), max(box[1], py0), min(box[2], px1), min(box[3], py1)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def fine(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cx, cy, weight) at every output pixel of ``box`` (inside ``pixels``)."""
        px0, py0 = self.pixels[:2]
        span = (box[1] - py0, box[3] - py0, box[0] - px0, box[2] - px0)
        return tuple(_at_pixels(a, span, self.lattice) for a in (self.cx, self.cy, self.weight))


class FullResCompositor:
    """Lays ``FaceLayer``s over one photo at its own resolution, frame after frame.

    ``photo``: the photo as the output shows it (its crop and landmarks in its pixels); ``crop_size``: the
    renderer's working size; ``head``: the whole head's motion (None: only the face moves, inside a fixed
    crop); ``whole_crop``: without head motion, the face's map holds over the whole crop (a warp keeps the
    crop's border fixed), faded out at its border, instead of over a face mask.
    """

    def __init__(self, photo: Shot, crop_size: int, head: HeadMotion | None = None, whole_crop: bool = False,
                 head3d: Head3D | None = None):
        self.image = np.ascontiguousarray(photo.image)
        self.height, self.width = self.image.shape[:2]
        self.crop_size = crop_size
        self.crop_to_photo = photo.crop.with_size(crop_size).inverse_matrix
        self.photo_to_crop = photo.crop.with_size(crop_size).matrix
        self.head3d = head3d
        self.points_scale = crop_size / photo.crop.size
        self.head = head
        self.whole_crop = whole_crop and head is None
        self._small = max(32, crop_size // MASK_REDUCTION)
        self._photo_mask = None if self.whole_crop else self._face_mask(photo.crop_points)
        self._crop_mask = crop_mask(crop_size) if self.whole_crop else None
        self._fine = self._fine_origin = None
        # What the enlarged photo covers: where the head can move, with a margin (everything without head motion).
        fine_box = (0, 0, self.width, self.height)
        if head is not None and head.layers.support is not None:
            x0, y0, x1, y1 = head.layers.support
            size = max(x1 - x0, y1 - y0)
            margin, beyond = int(FINE_MARGIN * size), int(FINE_BEYOND * size)
            fine_box = (max(x0 - margin, -beyond), max(y0 - margin, -beyond), min(x1 + margin, self.width + beyond),
                        min(y1 + margin, self.height + beyond))
        if (fine_box[2] - fine_box[0]) * (fine_box[3] - fine_box[1]) <= FINE_MAX_PIXELS:
            self._fine = fine_photo(self.image, fine_box)
            self._fine_origin = (fine_box[0] - FINE_PAD, fine_box[1] - FINE_PAD)
        # The photo pixels whose bicubic taps the enlarged photo holds.
        self._fine_reach = (fine_box[0] - FINE_PAD + 1, fine_box[1] - FINE_PAD + 1, fine_box[2] + FINE_PAD - 2,
                            fine_box[3] + FINE_PAD - 2)
        if head is not None:
            self._plate = np.ascontiguousarray(head.layers.plate)
            # Where the plate is filled in (the person's moving part and a margin): there the photo's own
            # background is not the photo, and is estimated by the plate. Elsewhere the plate is the photo.
            # Grown by what a node's cell and the kernel reach, so the nodes see every pixel that needs it.
            reach = 2 * (PLATE_STEP * MAX_LATTICE + 4) + 1
            self._near_fill = cv2.dilate((self._plate != self.image).any(axis=2).astype(np.uint8),
                                         np.ones((reach, reach), np.uint8))

    def _face_mask(self, points: np.ndarray) -> np.ndarray:
        factor = self._small / self.crop_size
        reduced = face_mask((np.asarray(points) * self.points_scale + 0.5) * factor - 0.5, self._small)
        return cv2.resize(reduced, (self.crop_size, self.crop_size), interpolation=cv2.INTER_LINEAR)

    def _turned_box(self, forward, support: tuple[int, int, int, int], samples: int = 24):
        """The output pixels covering the crop's ``support`` box moved by a 3D head's ``forward`` (a lattice
        of its points mapped), clipped to the frame (None if none)."""
        sx0, sy0, sx1, sy1 = support
        cx, cy = np.meshgrid(np.linspace(sx0, sx1, samples), np.linspace(sy0, sy1, samples))
        k = self.crop_to_photo
        fx, fy = forward(k[0, 0] * cx + k[0, 1] * cy + k[0, 2], k[1, 0] * cx + k[1, 1] * cy + k[1, 2])
        pad = 3 + int(np.ceil(max(np.ptp(fx), np.ptp(fy)) / samples))
        x0, y0 = max(int(np.floor(fx.min())) - pad, 0), max(int(np.floor(fy.min())) - pad, 0)
        x1, y1 = min(int(np.ceil(fx.max())) + pad, self.width), min(int(np.ceil(fy.max())) + pad, self.height)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _output_box(self, crop_to_out: np.ndarray, support: tuple[int, int, int, int]):
        """The output pixels covering the crop's ``support`` box, clipped to the frame (None if none)."""
        return mapped_box((self.height, self.width), crop_to_out, support, 2, 3)

    def compose(self, layer: FaceLayer, points: np.ndarray, matrix: np.ndarray | None = None,
                outline: np.ndarray | None = None, rigid: RigidMotion | None = None) -> np.ndarray:
        """One output frame (H, W, 3) uint8: ``layer`` for target ``points`` (in the photo's crop
        coordinates), the crop moved by the head's ``matrix`` (photo -> output similarity) and the head's
        outline by ``outline`` (both None without head motion). With ``rigid`` (and the compositor's 3D
        head) the head turns in 3D instead, ``matrix`` being its nearest similarity, and the face's
        motion (the expression, in the photo's own crop) is reached through the head's map."""
        matrix = _IDENTITY if matrix is None else np.asarray(matrix, np.float64)
        outline = matrix if outline is None else np.asarray(outline, np.float64)
        turning = rigid is not None and self.head3d is not None and self.head is not None
        crop_to_out = compose_affine(matrix, self.crop_to_photo)
        out_to_crop = invert_affine(crop_to_out)
        mask = self._crop_mask if self.whole_crop else np.maximum(self._face_mask(points), self._photo_mask)
        support = _mask_support(mask)
        forward = (lambda x, y: self.head3d.forward(rigid, x, y)) if turning else None
        if support[2] <= support[0]:
            face_box = None
        elif turning:
            face_box = self._turned_box(forward, support)
        else:
            face_box = self._output_box(crop_to_out, support)
        if self.head is None:
            head_box = None
        else:
            head_box = self.head.moved_roi(forward) if turning else self.head.roi(outline)
        roi = _box_union(face_box, head_box)
        if roi is None:
            return self.image.copy()
        x0, y0, x1, y1 = roi
        # The photo around the ROI; the ROI's every pixel is written below (``_resample``).
        frame = np.empty_like(self.image)
        frame[:y0], frame[y1:] = self.image[:y0], self.image[y1:]
        frame[y0:y1, :x0], frame[y0:y1, x1:] = self.image[y0:y1, :x0], self.image[y0:y1, x1:]
        # The map is made on a lattice about as fine as the face's map (MAX_LATTICE) and enlarged once.
        upscale = np.sqrt(abs(np.linalg.det(crop_to_out[:, :2])))
        lattice = int(np.clip(np.ceil(upscale - LATTICE_SLACK), 1, MAX_LATTICE))
        columns, rows = lattice_nodes(roi, lattice)

        # The backward map: the head's field, and inside the face mask the face's own motion.
        if head_box is not None:
            map_x, map_y = self.head.backward_map(outline, roi, forward, lattice)
        else:
            map_x, map_y = _affine_grid(_node_matrix(_IDENTITY, roi, lattice), (0, 0, columns, rows))
        face = None
        if face_box is not None:
            nodes = _nodes_within(face_box, roi, lattice)
        if face_box is not None and nodes is not None:
            inside = (slice(nodes[1], nodes[3]), slice(nodes[0], nodes[2]))
            if turning:
                # The face's crop is the photo's own: reached through the head's (3D) map.
                p = self.photo_to_crop.astype(np.float32)
                head_x, head_y = map_x[inside], map_y[inside]
                cx = p[0, 0] * head_x + p[0, 1] * head_y + p[0, 2]
                cy = p[1, 0] * head_x + p[1, 1] * head_y + p[1, 2]
            else:
                cx, cy = _affine_grid(_node_matrix(out_to_crop, roi, lattice), nodes)
            source_x, source_y = layer.source_map
            sx = cv2.remap(source_x, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            sy = cv2.remap(source_y, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            k = self.crop_to_photo.astype(np.float32)
            weight = cv2.remap(mask, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            map_x[inside] += weight * (k[0, 0] * sx + k[0, 1] * sy + k[0, 2] - map_x[inside])
            map_y[inside] += weight * (k[1, 0] * sx + k[1, 1] * sy + k[1, 2] - map_y[inside])
            face = _FaceNodes(cx, cy, weight, nodes, roi, lattice)
        plate = None if head_box is None else self._plate_weight(map_x, map_y, roi, lattice)
        backward = _Map(map_x, map_y, lattice)

        # The photo, resampled once (not where the plate alone shows).
        out = frame[y0:y1, x0:x1]
        self._resample(out, backward, roi, plate)
        if plate is not None:
            self._over_plate(out, plate, backward, roi)
        if face is not None:
            self._lay_over(out, layer, face, crop_to_out)
        return frame

    def _over_plate(self, out: np.ndarray, plate: _Plate, backward: _Map, roi: tuple[int, int, int, int]) -> None:
        """The resampled photo ``out`` (the ROI, uint8, changed in place) laid over the background plate with
        ``plate``'s weight (``_plate_weight``), where both show.

        On the person's soft edge, where the moved pixel came from the plate's filled part, the photo's own
        background behind it is the fill, not the photo: it is swapped for the plate's at the pixel's new place,
        out = photo(src) + weight (plate(p) - plate(src)), so what lies over it (hair strands) keeps its
        detail. Blending the edge into the plate kept 0.4 of it. Only the cells the soft edge crosses (a ring
        round the head) are computed, the blend and the swap in one pass: out = R + w (P - R) + s (R - B), with R
        the resampled photo, P the plate at the pixel, B the plate behind the pixel's source, w and s the blend's
        and the swap's weights."""
        x0, y0, x1, y1 = roi
        blended = plate.photo & (plate.cells(plate.weight, largest=True) > 0)
        swapped = None if plate.swap is None else blended & (plate.cells(plate.swap, largest=True) > SWAP_MIN)
        for span in plate.spans(blended, (x1 - x0, y1 - y0)):
            r0, r1, c0, c1 = span
            resampled = out[r0:r1, c0:c1]
            backdrop = self._plate[y0 + r0:y0 + r1, x0 + c0:x0 + c1]
            weight = plate.at(plate.weight, span)
            if swapped is None or not swapped[r0 // plate.rows, c0 // plate.step:-(-c1 // plate.step)].any():
                out[r0:r1, c0:c1] = cv2.blendLinear(resampled, backdrop, 1.0 - weight, weight)
                continue
            # The plate behind is its smooth fill there: bilinear (a sharper kernel changed no pixel by more than a
            # grey level).
            behind = cv2.remap(self._plate, *backward.at(span), cv2.INTER_LINEAR, borderMode=PHOTO_BORDER)
            change = weight[..., None] * cv2.subtract(backdrop, resampled, dtype=cv2.CV_32F)
            change += plate.at(plate.swap, span)[..., None] * cv2.subtract(resampled, behind, dtype=cv2.CV_32F)
            out[r0:r1, c0:c1] = cv2.add(change, resampled, dtype=cv2.CV_8U)

    def _resample(self, out: np.ndarray, backward: _Map, roi: tuple[int, int, int, int], plate: _Plate | None) -> None:
        """The photo through the backward map over ``roi``, into ``out`` (its uint8 pixels), except beside the
        person where the plate alone shows (``plate.photo``): there the plate, which the blend would put there.
        Beside a moved head that is about half the region (the background it can move over)."""
        x0, y0, x1, y1 = roi
        source = self.image
        kernel = cv2.INTER_LANCZOS4 if (x1 - x0) * (y1 - y0) <= SHARP_KERNEL_MAX_PIXELS else cv2.INTER_CUBIC
        # The map between its nodes lies within their range (bilinear).
        if self._fine is not None and self._fine_covers(backward):
            # The enlarged photo's pixel of photo pixel (x, y) is (2 (x - origin x), 2 (y - origin y)).
            ox, oy = self._fine_origin
            backward = _Map(2.0 * backward.x - np.float32(2 * ox), 2.0 * backward.y - np.float32(2 * oy),
                            backward.lattice)
            source, kernel = self._fine, cv2.INTER_CUBIC
        if plate is None:
            out[:] = cv2.remap(source, *backward.at((0, y1 - y0, 0, x1 - x0)), kernel, borderMode=PHOTO_BORDER)
            return
        out[:] = self._plate[y0:y1, x0:x1]
        for span in plate.spans(plate.photo, (x1 - x0, y1 - y0)):
            r0, r1, c0, c1 = span
            out[r0:r1, c0:c1] = cv2.remap(source, *backward.at(span), kernel, borderMode=PHOTO_BORDER)

    def _fine_covers(self, backward: _Map) -> bool:
        """Whether every pixel the map samples has its taps inside the enlarged photo."""
        rx0, ry0, rx1, ry1 = self._fine_reach
        return bool(backward.x.min() >= rx0 and backward.x.max() <= rx1 and backward.y.min() >= ry0
                    and backward.y.max() <= ry1)

    def _plate_weight(self, map_x: np.ndarray, map_y: np.ndarray, roi: tuple[int, int, int, int],
                      lattice: int = 1) -> _Plate | None:
        """How much the background plate shows, from the backward map on its ``lattice`` over ``roi``, and the
        swap's weight (see ``_over_plate``), on nodes about every PLATE_STEP pixels; None where the plate shows
        nowhere. The moved person lies over the plate where the head moved, so what it uncovers is the plate's. Within
        the plate's fill, where nothing moved the photo is its own answer (the matte's soft edge would otherwise
        mix the fill into hair that stays put); away from it the plate is the photo itself, shown unmoved."""
        skip = max(1, PLATE_STEP // lattice)
        step = skip * lattice
        coarse_x, coarse_y = map_x[::skip, ::skip], map_y[::skip, ::skip]
        x0, y0, x1, y1 = roi
        grid_x = np.arange(coarse_x.shape[1], dtype=np.float32) * step + x0
        grid_y = (np.arange(coarse_x.shape[0], dtype=np.float32) * step + y0)[:, None]
        moved = np.minimum(np.hypot(coarse_x - grid_x, coarse_y - grid_y) * (1.0 / STILL_PIXELS), 1.0)
        # Away from the plate's fill the plate is the photo: the background shows unmoved there, moved or not.
        near = cv2.remap(self._near_fill, coarse_x, coarse_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
        moved[near == 0] = 1.0
        # The matte where each pixel came from; beyond the photo's edges as ``HeadLayers.matte_at`` continues it.
        alpha = self.head.layers.matte_at(coarse_x, coarse_y)
        coarse = np.ascontiguousarray(moved * (1.0 - alpha), np.float32)
        if not (coarse > 0).any():
            return None
        # The swap (``_over_plate``): on the matte's soft edge, where the source lies in the plate's filled part.
        share = np.ascontiguousarray(coarse * near * np.minimum(alpha * (1.0 / SWAP_MATTE), 1.0), np.float32)
        per_strip = max(1, RESAMPLE_ROWS // step)
        return _Plate(coarse, share if (share > 0).any() else None, step, step * per_strip,
                      _cells(coarse, per_strip, largest=False) < PLATE_ONLY)

    def _lay_over(self, out: np.ndarray, layer: FaceLayer, face: "_FaceNodes", crop_to_out: np.ndarray) -> None:
        """What the photo lacks, over the resampled photo ``out`` (the ROI, uint8) in place: the generator's
        change over the face, the painted parts where something was painted (a mouth, an eye)."""
        if layer.correction is None and layer.painted is None:
            return
        paint_box = None
        if layer.painted is not None:
            rows = np.flatnonzero(layer.painted.any(axis=1))
            cols = np.flatnonzero(layer.painted.any(axis=0))
            if len(rows):
                box = self._output_box(crop_to_out, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
                paint_box = None if box is None else face.clip(box)
        box = face.pixels if layer.correction is not None else paint_box
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        x0, y0 = face.roi[:2]
        where = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
        region = out[where].astype(np.float32)
        if layer.correction is not None:
            cx, cy, weight = face.fine(box)
            change = cv2.remap(layer.correction, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
            region += weight[..., None] * change
        if paint_box is not None:
            px0, py0, px1, py1 = paint_box
            px, py, _ = face.fine(paint_box)
            self._paint(region[py0 - by0:py1 - by0, px0 - bx0:px1 - bx0], layer, px, py, crop_to_out)
        out[where] = np.clip(region + 0.5, 0, 255).astype(np.uint8)

    def _paint(self, under: np.ndarray, layer: FaceLayer, px: np.ndarray, py: np.ndarray,
               crop_to_out: np.ndarray) -> None:
        """The painted parts of ``layer`` over ``under`` (float32 output pixels, a view, changed in place)
        whose crop coordinates are (``px``, ``py``)."""
        upscale = float(np.sqrt(abs(np.linalg.det(crop_to_out[:, :2]))))
        crop, painted, skin = layer.crop, layer.painted, layer.skin
        unpainted = layer.crop if layer.unpainted is None else layer.unpainted
        if upscale < 1.0 / SHRINK_FIRST:
            # The crop is drawn finer than the output shows it: averaged down first, or the teeth's edges
            # and gaps alias into a sharper, noisier mouth than the photo's own.
            (crop, painted, unpainted), px, py = _shrunk_part((crop, painted, unpainted), px, py, upscale)
        alpha = cv2.remap(painted, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        paint = cv2.remap(crop, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        before = cv2.remap(unpainted, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        detail = None
        if skin is not None and upscale > DETAIL_UPSCALE:
            skin = cv2.remap(skin, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            detail = (alpha * skin)[..., None] * (under - cv2.GaussianBlur(np.ascontiguousarray(under), (0, 0),
                                                                            0.5 * upscale))
        # The crop holds the paint already blended over its own warp with ``alpha``: swap that warp for the
        # full-size one under the same alpha, so the paint's soft edge is applied once (blending the blended
        # crop again thinned a mouth's dark rim to alpha squared: it read less open). Where the paint is skin,
        # the detail it covered goes back on.
        under += alpha[..., None] * (before - under) + (paint - before)
        if detail is not None:
            under += detail
