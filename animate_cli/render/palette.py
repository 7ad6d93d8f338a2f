"""The colours a photo allows, for what is painted into it.

What the renderers draw (a mouth's interior and teeth, lids, the generator's correction) comes from
models and palettes made for colour photos of today. Laid into a black-and-white portrait, a sepia
print or a painting, it would bring colours the photo never had (green-grey teeth with a red rim in a
grey photo). ``PhotoPalette`` measures the photo's own chroma around the face once and brings every
painted pixel into it: luma is kept (teeth stay bright, the opening dark), chroma is pulled towards
the face's mean chroma as far as the photo's spread is narrower than a colour photo's, and then held
within the photo's own largest chroma distance from that mean. A grey photo gets grey paint, a sepia
print its tone, a colour photo keeps natural teeth and a red interior.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..landmarks.crop import face_size

# BT.601 luma weights and the chroma scales of 8-bit YCbCr (Cb = 0.564 (B - Y), Cr = 0.713 (R - Y)).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CB_SCALE, _CR_SCALE = 0.564, 0.713
# The chroma spread (root mean square distance from the mean, 8-bit YCbCr units) of the face region of
# an ordinary colour photo: 6.3-16.0 for the 18 colour portraits and paintings in ../shared/realdata and
# the astronaut photo; 0 for a grey one. A photo whose spread is this or more keeps painted chroma as
# drawn (apart from the range clamp); a less colourful one pulls it towards its mean in proportion.
NATURAL_CHROMA_SPREAD = 6.0
# The photo's chroma range: this percentile of the face region's distances from the mean chroma.
RANGE_PERCENTILE = 99.9
# The face region: the landmarks' hull grown by this fraction of the face size (lips, skin, brows, eyes).
REGION_GROW = 0.05


def chroma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 2) chroma (Cb, Cr) about grey, float32 (0 for any grey)."""
    rgb = np.asarray(rgb, np.float32)
    luma = rgb @ _LUMA
    return np.stack([(rgb[..., 2] - luma) * _CB_SCALE, (rgb[..., 0] - luma) * _CR_SCALE], axis=-1)


def _with_chroma(luma: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    red = luma + cr / _CR_SCALE
    blue = luma + cb / _CB_SCALE
    green = (luma - _LUMA[0] * red - _LUMA[2] * blue) / _LUMA[1]
    return np.stack([red, green, blue], axis=-1)


class PhotoPalette:
    """The chroma a photo's face region spans, measured once per photo (see the module doc)."""

    def __init__(self, mean: np.ndarray, radius: float, spread: float):
        self.mean = np.asarray(mean, np.float32)
        self.radius = float(radius)
        self.spread = float(spread)
        # How much of a painted pixel's distance from the mean chroma is kept.
        self.gain = float(np.clip(spread / NATURAL_CHROMA_SPREAD, 0.0, 1.0))

    @classmethod
    def from_photo(cls, image: np.ndarray, points: np.ndarray) -> "PhotoPalette":
        """The palette of the face with (68, 2) ``points`` in the uint8 RGB ``image``."""
        points = np.asarray(points, np.float64)
        grow = max(1, int(round(REGION_GROW * face_size(points))))
        x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int) - grow, 0)
        x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int) + grow + 1, image.shape[1::-1])
        region = np.asarray(image)[y0:y1, x0:x1]
        mask = np.zeros(region.shape[:2], np.uint8)
        if mask.size == 0:
            return cls(np.zeros(2), 0.0, 0.0)
        hull = cv2.convexHull(np.round(points - (x0, y0)).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        values = chroma(region[mask > 0])
        if len(values) == 0:
            return cls(np.zeros(2), 0.0, 0.0)
        mean = values.mean(axis=0)
        distance = np.linalg.norm(values - mean, axis=1)
        return cls(mean, float(np.percentile(distance, RANGE_PERCENTILE)), float(np.sqrt(np.mean(distance ** 2))))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """(..., 3) RGB (uint8 or float) brought into the photo's chroma; float32, luma unchanged."""
        rgb = np.asarray(rgb, np.float32)
        luma = rgb @ _LUMA
        offset = chroma(rgb) - self.mean
        offset *= self.gain
        distance = np.linalg.norm(offset, axis=-1, keepdims=True)
        offset *= np.minimum(1.0, self.radius / np.maximum(distance, 1e-6))
        return _with_chroma(luma, self.mean[0] + offset[..., 0], self.mean[1] + offset[..., 1])

    def paint_into(self, painted: np.ndarray, alpha: np.ndarray) -> None:
        """Bring the uint8 (H, W, 3) ``painted`` crop into the palette in place, where ``alpha`` (H, W) > 0."""
        where = alpha > 0
        if not where.any():
            return
        painted[where] = np.clip(self.apply(painted[where]) + 0.5, 0, 255).astype(np.uint8)
