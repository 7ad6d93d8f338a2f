"""Still images in and out: any common photo becomes a uint8 RGB array (H, W, 3), upright."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from animate_cli.errors import InputError
from animate_cli.io.atomic import atomic_output

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS (about 179 MP by default) as possible
# decompression bombs. Phone and camera photos stay well below, but panoramas and 100 MP sensors
# do not, so loading allows up to 200 MP. The limit is raised only while this module decodes,
# never globally, so other Pillow users in the process keep their own setting.
MAX_MEGAPIXELS = 200
_PIXEL_LIMIT_LOCK = threading.Lock()

NOT_READABLE = "not a readable image (corrupt or unsupported format)"

# Errors Pillow raises for files it cannot decode: unknown format (UnidentifiedImageError is an
# OSError), truncated data (OSError), malformed headers (SyntaxError, ValueError, struct errors
# surface as ValueError or OSError depending on the plugin), and too large (DecompressionBombError).
_PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (by extension, case-insensitive), sorted by name.

    Hidden files (such as partial outputs ``.name.partial-123.png``) are skipped.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("is not a folder", folder)
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )


def check_input_file(path: Path, what: str) -> None:
    """Raise InputError for a missing path, a folder or an empty file (``what``: "an image file")."""
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError(f"is a folder, expected {what}", path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)


@contextlib.contextmanager
def _large_images_allowed() -> Iterator[None]:
    """Let Pillow open images up to MAX_MEGAPIXELS, for the duration of the block only."""
    with _PIXEL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        # Pillow raises above twice the limit and warns above the limit itself.
        Image.MAX_IMAGE_PIXELS = int(MAX_MEGAPIXELS * 1_000_000) // 2
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                _quiet_pillow()
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def load_image(path: str | Path) -> np.ndarray:
    """Read a photo as a uint8 RGB array (H, W, 3).

    The EXIF orientation is applied (a portrait phone photo comes out upright); transparency is
    composited over white; greyscale, palette, CMYK and 16-bit images become 8-bit RGB. Formats
    Pillow cannot decode are retried with OpenCV.

    Raises InputError (with the path) for a missing file, a folder, an empty file or a file that
    is not a readable image.
    """
    path = Path(path).expanduser()
    check_input_file(path, "an image file")
    opened: Image.Image | None = None
    try:
        with _large_images_allowed():
            opened = Image.open(path)
            opened.load()
    except Image.DecompressionBombError as error:
        _close(opened)
        raise InputError(f"image too large (the limit is {MAX_MEGAPIXELS} megapixels)", path) from error
    except _PIL_DECODE_ERRORS as error:
        _close(opened)
        # A truncated file is damaged, not exotic: OpenCV would pad it with grey, so refuse it.
        if str(error).startswith("image file is truncated"):
            raise InputError("image file is truncated", path) from error
        fallback = _load_with_opencv(path)
        if fallback is None:
            raise InputError(NOT_READABLE, path) from error
        logger.debug("Pillow could not read %s (%s); read it with OpenCV", path, error)
        return fallback
    # Only decoding is guarded above: a bug in the conversion below must not pass as a bad file.
    with opened:
        return _to_rgb8(_upright(opened))


def decode_image_bytes(data: bytes, label: str) -> np.ndarray:
    """An image held in memory (a member of a .tar, say) as uint8 RGB, converted like ``load_image``.

    ``label`` names the image in the InputError raised when the bytes are not a readable image.
    """
    opened: Image.Image | None = None
    try:
        with _large_images_allowed():
            opened = Image.open(io.BytesIO(data))
            opened.load()
    except Image.DecompressionBombError as error:
        _close(opened)
        raise InputError(f"image too large (the limit is {MAX_MEGAPIXELS} megapixels)", label) from error
    except _PIL_DECODE_ERRORS as error:
        _close(opened)
        raise InputError(NOT_READABLE, label) from error
    with opened:
        return _to_rgb8(_upright(opened))


def _close(image: Image.Image | None) -> None:
    if image is not None:
        image.close()


def _quiet_pillow() -> None:
    """Inside a ``warnings.catch_warnings()`` block: drop Pillow's own warnings about damaged
    metadata ("Corrupt EXIF data"); they would print source lines around the CLI's one-line
    messages, and the file is either read or refused with an InputError anyway."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block is ignored rather than fatal."""
    try:
        with warnings.catch_warnings():
            _quiet_pillow()
            return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError) as error:
        logger.warning("ignoring malformed EXIF orientation in %s: %s", image.filename or "image", error)
        return image


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> contiguous uint8 RGB (H, W, 3)."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        return _over_white(rgba[..., :3], rgba[..., 3:] / 255.0)
    if mode.startswith("I;16") or mode == "I":
        return _grey_to_rgb(_scale_high_depth(np.asarray(image)))
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        # Float images are either in [0, 1] or already in [0, 255].
        values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
        return _grey_to_rgb(np.clip(np.nan_to_num(values) + 0.5, 0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P without transparency, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _scale_high_depth(values: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer) samples -> uint8, rounding v * 255 / 65535."""
    values = values.astype(np.int64)
    peak = int(values.max(initial=0))
    # 32-bit integer images with values beyond 16 bits: scale by their own peak.
    full_scale = 65535 if peak <= 65535 else peak
    values = np.clip(values, 0, full_scale)
    return ((values * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite float RGB (0..255) with alpha (0..1) over a white background."""
    blended = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def _load_with_opencv(path: Path) -> np.ndarray | None:
    """Fallback decoder for files Pillow rejects (some 16-bit and exotic TIFFs); None if it fails too."""
    import cv2  # deferred: only needed for the rare files Pillow cannot read

    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    if data[:8].tobytes().startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        # A JPEG or PNG that Pillow cannot read is damaged, and OpenCV's libjpeg and libpng would
        # print their complaints about it straight to stderr, around the caller's one-line message.
        return None
    # OpenCV prints its decoders' complaints about a damaged file straight to stderr; the caller
    # reports the failure itself, in one line.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = _scale_high_depth(image)
    elif image.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return _grey_to_rgb(image)
    channels = image.shape[2]
    if channels == 1:
        return _grey_to_rgb(image[..., 0])
    if channels == 4:
        rgba = image[..., [2, 1, 0, 3]].astype(np.float32)
        return _over_white(rgba[..., :3], rgba[..., 3:] / 255.0)
    if channels == 3:
        return np.ascontiguousarray(image[..., ::-1])
    return None


def save_image(path: str | Path, image: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write a uint8 RGB (H, W, 3) or greyscale (H, W) image atomically; the format follows the suffix.

    Replaces an existing file unless ``overwrite`` is false (pass the user's --overwrite for
    user-facing outputs). Raises ValueError for a wrong array and OutputError when the file cannot
    be written (exists without ``overwrite``, folder missing or not writable, disk full).
    """
    path = Path(path).expanduser()
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"save_image expects a uint8 array, got {getattr(image, 'dtype', type(image))}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"save_image expects shape (H, W, 3) or (H, W), got {image.shape}")
    pil_image = Image.fromarray(np.ascontiguousarray(image))
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image format for {path.name}; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    with atomic_output(path, overwrite) as temp:
        pil_image.save(temp, format=fmt, **options)
    return path
