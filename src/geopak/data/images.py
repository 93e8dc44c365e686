"""One image loader for the whole package: validation, datasets and the predictor all read images here.

:func:`open_image` turns a path, bytes, file object, PIL image or numpy array into an RGB ``PIL.Image``:
EXIF orientation applied, every mode converted (palette, grey with alpha, RGBA composited on white, CMYK,
16-bit and 32-bit grey, float), and huge dimensions refused before any pixel is decoded. Anything it
cannot read raises :class:`ImageReadError`, which names the input and the reason.

:func:`probe_image` reads only the header (format, size, mode) for fast checks over many files, and
:func:`to_tensor` makes the ``(3, size, size)`` float tensor in [0, 1] that the encoders take.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageInfo",
    "ImageReadError",
    "ImageSource",
    "open_image",
    "probe_image",
    "to_tensor",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused (decompression-bomb guard); 100 MP covers real cameras."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
"""Anything :func:`open_image` accepts."""

_BACKGROUND = (255, 255, 255)


class ImageReadError(ValueError):
    """An input could not be read as an image; the message names the input and the reason."""

    def __init__(self, source: str, reason: str, code: str = "unreadable_image") -> None:
        self.source = source
        self.reason = reason
        self.code = code
        """Short reason code: ``missing_file``, ``not_an_image``, ``unreadable_image`` or ``too_large``."""
        super().__init__(f"cannot read image {source}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says, read without decoding pixels."""

    format: str | None
    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return f"<array {src.shape} {src.dtype}>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size}>"
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(src).__name__}>"


def _open_lazy(src: Any, desc: str, max_pixels: int) -> Image.Image:
    """``Image.open`` with our errors and the pixel-count guard; pixels are not decoded yet."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageReadError(desc, "file does not exist", "missing_file")
        if path.is_dir():
            raise ImageReadError(desc, "is a directory, not an image file", "not_an_image")
        if path.stat().st_size == 0:
            raise ImageReadError(desc, "file is empty (0 bytes)", "not_an_image")
        fp: Any = path
    elif isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageReadError(desc, "no data (0 bytes)", "not_an_image")
        fp = io.BytesIO(bytes(src))
    elif hasattr(src, "read"):
        fp = src
    else:
        raise ImageReadError(desc, f"unsupported input type {type(src).__name__}", "not_an_image")
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces PIL's global warning; PIL still raises past 2x its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageReadError(desc, f"dimensions too large (decompression-bomb guard): {e}", "too_large") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(desc, "not a recognised image format", "not_an_image") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(desc, f"unreadable header: {e}", "unreadable_image") from e
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageReadError(desc, f"invalid dimensions {w}x{h}", "unreadable_image")
    if w * h > max_pixels:
        img.close()
        raise ImageReadError(
            desc,
            f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (decompression-bomb guard; "
            "raise max_pixels if the image is genuine)",
            "too_large",
        )
    return img


def probe_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read an image's header only: format, size and mode, without decoding pixels.

    Raises:
        ImageReadError: missing file, not an image, unreadable header or too many pixels.
    """
    desc = _describe(src)
    if isinstance(src, Image.Image):
        return ImageInfo(src.format, src.width, src.height, src.mode)
    if isinstance(src, np.ndarray):
        arr = _check_array(src, desc)
        return ImageInfo(None, int(arr.shape[1]), int(arr.shape[0]), "array")
    img = _open_lazy(src, desc, max_pixels)
    try:
        return ImageInfo(img.format, img.width, img.height, img.mode)
    finally:
        img.close()


def _check_array(arr: np.ndarray, desc: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageReadError(desc, "expected an array of shape (H, W), (H, W, 3|4) or (3|4, H, W)", "not_an_image")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(desc, "array has a zero dimension", "not_an_image")
    return arr


def _array_to_uint8(arr: np.ndarray, desc: str) -> np.ndarray:
    """Scale an integer or float array to uint8 (floats in [0, 1] or [0, 255]; 16-bit ints by 257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageReadError(desc, "array contains NaN or infinite values", "unreadable_image")
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        a = arr.astype(np.int64)
        hi = int(a.max()) if a.size else 0
        if hi <= 255:
            return np.clip(a, 0, 255).astype(np.uint8)
        if hi <= 65535:
            return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
    raise ImageReadError(desc, f"unsupported array dtype {arr.dtype}", "not_an_image")


def _from_array(arr: np.ndarray, desc: str) -> Image.Image:
    arr = _array_to_uint8(_check_array(arr, desc), desc)
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), mode="L").convert("RGB")
    if arr.shape[2] == 4:
        return _composite(Image.fromarray(np.ascontiguousarray(arr), mode="RGBA"))
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def _composite(img: Image.Image) -> Image.Image:
    """Alpha-composite an image with transparency onto white, returning RGB."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image, desc: str) -> Image.Image:
    """Convert any PIL mode to RGB (alpha on white, high bit depths scaled, CMYK/YCbCr/LAB converted)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _composite(img)
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer or float grey: scale to 8 bits instead of letting PIL clip.
        return _from_array(np.asarray(img), desc)
    return img.convert("RGB")


def open_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image as an RGB ``PIL.Image``, fully decoded.

    Args:
        src: a file path, encoded bytes, a binary file object, a PIL image or a numpy array
            (``(H, W)``, ``(H, W, 3|4)`` or ``(3|4, H, W)``; uint8, uint16, bool or float in [0, 1]).
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).

    Returns:
        An RGB image with its EXIF orientation applied and any transparency composited on white.

    Raises:
        ImageReadError: the input is missing, not an image, corrupt or truncated, or too large.
    """
    desc = _describe(src)
    if isinstance(src, np.ndarray):
        arr = _check_array(src, desc)
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageReadError(desc, f"{arr.shape[1]}x{arr.shape[0]} exceeds {max_pixels:,} pixels", "too_large")
        return _from_array(arr, desc)
    if isinstance(src, Image.Image):
        if src.width * src.height > max_pixels:
            raise ImageReadError(desc, f"{src.width}x{src.height} exceeds {max_pixels:,} pixels", "too_large")
        img = src
    else:
        img = _open_lazy(src, desc, max_pixels)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageReadError(desc, f"dimensions too large (decompression-bomb guard): {e}", "too_large") from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageReadError(desc, f"corrupt or truncated image data: {e}", "unreadable_image") from e
    try:
        oriented = ImageOps.exif_transpose(img)
    except Exception as e:  # malformed EXIF must not make a good image unreadable  # noqa: BLE001
        logger.debug("ignoring unreadable EXIF orientation of %s: %s", desc, e)
        oriented = img
    if oriented is None:  # pragma: no cover - only with in_place=True
        oriented = img
    try:
        rgb = _to_rgb(oriented, desc)
    except ImageReadError:
        raise
    except (OSError, ValueError) as e:
        raise ImageReadError(desc, f"cannot convert mode {oriented.mode} to RGB: {e}", "unreadable_image") from e
    if rgb is img and not isinstance(src, Image.Image):
        rgb = img.copy()  # detach from the file handle
    if not isinstance(src, Image.Image) and img is not rgb:
        img.close()
    return rgb


def to_tensor(img: ImageSource, size: int = 224) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bicubic, antialiased), centre-crop to a square, scale to [0, 1].

    Args:
        img: an RGB PIL image or anything :func:`open_image` accepts.
        size: output side in pixels.

    Returns:
        A ``(3, size, size)`` float32 tensor in [0, 1] (not normalised; each encoder normalises itself).
    """
    import torch

    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not (isinstance(img, Image.Image) and img.mode == "RGB"):
        img = open_image(img)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
