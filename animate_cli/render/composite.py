"""Paste a generated or warped face crop back into the full photo with no visible seam.

Only the crop's footprint in the photo (its region of interest, ROI) is ever warped or blended,
so a 8000x6000 photo costs about as much as a small one (plus one copy of the output).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..landmarks.crop import FaceCrop, face_size

logger = logging.getLogger(__name__)

# The forehead is the brows raised by this fraction of the face size.
FOREHEAD_RAISE = 0.35
# Default mask blur (Gaussian sigma) as a fraction of the crop size.
DEFAULT_FEATHER = 0.04


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def border_ramp(size: int, width: float) -> np.ndarray:
    """(size,) float32 weights: 0 on the outermost pixels, rising smoothly to 1 over ``width`` pixels."""
    return _smoothstep(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(width, 1e-6)).astype(np.float32)


def crop_mask(size: int, margin: float = 0.1) -> np.ndarray:
    """A (size, size) mask that keeps the whole crop and fades out over ``margin`` x size at its border.

    For renderers whose crops match the photo at the crop's border (the warp keeps its border fixed),
    pasting the whole crop moves the head, hair and neck together: a face-shaped mask would leave the
    photo's own head visible beside a moved one.
    """
    ramp = border_ramp(size, margin * size)
    return ramp[:, None] * ramp[None, :]


def face_mask(points: np.ndarray, size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """A soft (size, size) float32 mask in [0, 1] covering the face and forehead.

    ``points`` (68, 2) are in crop coordinates. The mask is the convex hull of the jaw and of the
    brows raised by 0.35 x the face size (the forehead), grown by one blur radius so the face
    itself stays at ~1, blurred with sigma ``feather`` x ``size``, and faded to exactly 0 towards
    the crop's border so the crop's edge can never show.
    """
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"points must be finite (68, 2), got shape {points.shape}")
    if size < 8:
        raise ValueError(f"mask size must be at least 8, got {size}")
    sigma = max(feather * size, 0.5)
    axis = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    up = np.array([axis[1], -axis[0]])
    forehead = points[17:27] + up * FOREHEAD_RAISE * face_size(points)
    outline = np.vstack([points[0:17], points[17:27], forehead])
    hull = cv2.convexHull(np.round(outline * 16).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    # Grow by about one sigma first: blurring alone would put the jaw line at 0.5.
    grow = int(round(sigma))
    if grow > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    # Fade to 0 at the crop border over a few sigmas (exactly 0 on the outermost pixels).
    ramp = border_ramp(size, 2.5 * sigma)
    soft *= ramp[:, None]
    soft *= ramp[None, :]
    return np.clip(soft, 0.0, 1.0)


def mapped_box(image_shape: tuple[int, ...], matrix: np.ndarray, support: tuple[int, int, int, int],
               before: int = 1, after: int = 2) -> tuple[int, int, int, int] | None:
    """The image pixels (x0, y0, x1, y1) covering the box ``support`` mapped by the 2x3 affine ``matrix``,
    grown by ``before`` pixels on the low sides and ``after`` on the high ones, clipped to an image of
    ``image_shape`` (None if nothing is left)."""
    sx0, sy0, sx1, sy1 = support
    corners = np.array([[sx0, sy0], [sx1, sy0], [sx0, sy1], [sx1, sy1]], np.float64)
    affine = np.asarray(matrix, np.float64)
    mapped = corners @ affine[:, :2].T + affine[:, 2]
    height, width = image_shape[:2]
    x0 = max(int(np.floor(mapped[:, 0].min())) - before, 0)
    y0 = max(int(np.floor(mapped[:, 1].min())) - before, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + after, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + after, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _roi_and_matrix(image_shape: tuple[int, ...], crop_to_image: np.ndarray, support: tuple[int, int, int, int]
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Image-space ROI (x0, y0, x1, y1) covering the crop's ``support`` box under the 2x3 affine
    ``crop_to_image``, and the crop -> ROI affine."""
    roi = mapped_box(image_shape, crop_to_image, support)
    if roi is None:
        return None
    matrix = np.asarray(crop_to_image, np.float64).copy()
    matrix[:, 2] -= roi[:2]
    return roi, matrix


def _warp_crop(crop_image: np.ndarray, matrix: np.ndarray, roi_size: tuple[int, int], shrink: float) -> np.ndarray:
    """The crop warped into a (width, height) ROI by the crop -> ROI affine ``matrix``; ``shrink`` is
    how many crop pixels fall on one ROI pixel. Large downscales alias with bilinear sampling, so
    beyond 1.5 the crop is first shrunk with area averaging."""
    source = crop_image
    if shrink > 1.5:
        size = crop_image.shape[0]
        side = max(int(round(size / shrink)), 1)
        source = cv2.resize(crop_image, (side, side), interpolation=cv2.INTER_AREA)
        factor = side / size
        # Crop pixel p is small pixel factor * (p + 0.5) - 0.5 (pixel centres align).
        matrix = np.array(matrix, np.float64)
        matrix[:, 2] += matrix[:, :2] @ np.full(2, 0.5 / factor - 0.5)
        matrix[:, :2] /= factor
    return cv2.warpAffine(source, matrix, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _mask_support(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the mask's non-zero pixels, the whole mask if none."""
    rows = np.flatnonzero(mask.max(axis=1) > 0)
    cols = np.flatnonzero(mask.max(axis=0) > 0)
    if len(rows) == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _check_crop_inputs(crop_image: np.ndarray, crop: FaceCrop) -> None:
    if crop_image.dtype != np.uint8 or crop_image.shape != (crop.size, crop.size, 3):
        raise ValueError(f"crop_image must be ({crop.size}, {crop.size}, 3) uint8, "
                         f"got {crop_image.shape} {crop_image.dtype}")


class Compositor:
    """Pastes face crops into one photo, frame after frame.

    Built once per photo: the ROI, the photo's ROI pixels and (when ``mask`` is given) the
    warped mask are cached, so ``compose`` only warps the crop and blends the ROI. A per-frame
    mask may be passed to ``compose`` instead (it is then warped each frame, still ROI only).
    Without any mask the whole crop is blended, its border faded.
    """

    def __init__(self, full_image: np.ndarray, crop: FaceCrop, mask: np.ndarray | None = None,
                 match_color: bool = False):
        full_image = np.asarray(full_image)
        if full_image.ndim != 3 or full_image.shape[2] != 3 or full_image.dtype != np.uint8:
            raise ValueError(f"full_image must be (H, W, 3) uint8, got {full_image.shape} {full_image.dtype}")
        self.full_image = full_image
        self.crop = crop
        self.match_color = match_color
        if mask is not None:
            mask = self._check_mask(mask)
            support = _mask_support(mask)
        else:
            support = (0, 0, crop.size, crop.size)
        placed = (_roi_and_matrix(full_image.shape, crop.inverse_matrix, support) if support[2] > support[0]
                  else None)
        self.roi = None if placed is None else placed[0]
        self._matrix = None if placed is None else placed[1]
        if self.roi is None:
            logger.debug("the crop does not overlap the photo; compose returns the photo unchanged")
            return
        x0, y0, x1, y1 = self.roi
        self._photo_roi = full_image[y0:y1, x0:x1].astype(np.float32)
        self._alpha = None if mask is None else self._warp_mask(mask)

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, np.float32)
        if mask.shape != (self.crop.size, self.crop.size):
            raise ValueError(f"mask must be ({self.crop.size}, {self.crop.size}), got {mask.shape}")
        return np.clip(mask, 0.0, 1.0)

    def _warp_mask(self, mask: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        warped = cv2.warpAffine(mask, self._matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped[..., None]

    def _default_mask(self) -> np.ndarray:
        size = self.crop.size
        ramp = _smoothstep(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(0.04 * size, 1.0))
        return (ramp[:, None] * ramp[None, :]).astype(np.float32)

    def compose_roi(self, crop_image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | None:
        """Only the blended ROI (uint8), to write into a caller's own frame at ``self.roi``."""
        crop_image = np.asarray(crop_image)
        _check_crop_inputs(crop_image, self.crop)
        if self.roi is None:
            return None
        x0, y0, x1, y1 = self.roi
        if mask is not None:
            alpha = self._warp_mask(self._check_mask(mask))
        elif self._alpha is not None:
            alpha = self._alpha
        else:
            self._alpha = alpha = self._warp_mask(self._default_mask())
        warped = _warp_crop(crop_image, self._matrix, (x1 - x0, y1 - y0), self.crop.scale).astype(np.float32)
        if self.match_color:
            weight = float(alpha.sum())
            if weight > 1e-3:
                shift = ((self._photo_roi * alpha).sum(axis=(0, 1)) - (warped * alpha).sum(axis=(0, 1))) / weight
                warped += shift
        blended = self._photo_roi + alpha * (warped - self._photo_roi)
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    def compose(self, crop_image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The photo with ``crop_image`` (size, size, 3) pasted in: a new (H, W, 3) uint8 image."""
        out = self.full_image.copy()
        blended = self.compose_roi(crop_image, mask)
        if blended is not None:
            x0, y0, x1, y1 = self.roi
            out[y0:y1, x0:x1] = blended
        return out


def paste_back(full_image: np.ndarray, crop_image: np.ndarray, crop: FaceCrop, mask: np.ndarray,
               match_color: bool = False) -> np.ndarray:
    """Paste ``crop_image`` into ``full_image`` through ``crop``'s inverse affine, blended by ``mask``.

    Only the ROI (the mask's footprint in the photo, clipped to it) is warped and blended, in
    float32; pixels outside it are bit-identical. ``match_color`` shifts the crop's mean colour
    under the mask to the photo's under the same mask. Returns a new image.
    """
    return Compositor(full_image, crop, mask, match_color=match_color).compose(crop_image)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer(inner(x))``."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


def paste_affine(frame: np.ndarray, crop_image: np.ndarray, crop_to_frame: np.ndarray, mask: np.ndarray) -> None:
    """Blend ``crop_image`` (S, S, 3) into ``frame`` in place through any 2x3 affine (crop -> frame),
    weighted by the (S, S) ``mask``; only the mask's footprint in the frame is touched."""
    size = crop_image.shape[0]
    if crop_image.dtype != np.uint8 or crop_image.shape != (size, size, 3) or mask.shape != (size, size):
        raise ValueError(f"crop_image must be (S, S, 3) uint8 with an (S, S) mask, got {crop_image.shape} "
                         f"{crop_image.dtype} and {mask.shape}")
    support = _mask_support(mask)
    placed = _roi_and_matrix(frame.shape, crop_to_frame, support) if support[2] > support[0] else None
    if placed is None:
        return
    (x0, y0, x1, y1), matrix = placed
    roi = (x1 - x0, y1 - y0)
    shrink = 1.0 / max(float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))), 1e-6)
    warped = _warp_crop(crop_image, matrix, roi, shrink).astype(np.float32)
    alpha = cv2.warpAffine(np.asarray(mask, np.float32), matrix, roi, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region + alpha * (warped - region) + 0.5, 0, 255).astype(np.uint8)
