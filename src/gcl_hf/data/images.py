"""Turn any image reference a dataset may hold into an RGB ``PIL.Image``.

Training and evaluation data keep images lazy (file paths, encoded bytes, or the
``datasets.Image(decode=False)`` dicts ``{"bytes": ..., "path": ...}``) so that decoding
happens in dataloader workers. :func:`open_image` is the one place that decodes them, and
:class:`ImageLoadError` is the one error a bad image raises: it names the row, the column and
the file, so a corrupt file among millions is found at once.

Every mode comes out as 8-bit RGB the way the pixels mean it: 16-bit ("I;16") divided by 257, 32-bit
integer ("I") by its depth, float ("F") from ``[0, 1]`` or ``[0, 255]`` (Pillow's own conversion clips
these at 255); transparent pixels (RGBA, LA, PA, palette or tRNS transparency) on white; CMYK, 1-bit
and palette images through Pillow. The EXIF orientation is applied (as ``transformers`` and
``datasets`` do), a multi-frame file gives its first frame, and an image whose header claims more than
``PIL.Image.MAX_IMAGE_PIXELS`` is refused before decoding.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gcl_hf.errors import RecordError

__all__ = ["IMAGE_SUFFIXES", "ImageLoadError", "open_image", "resolve_image_path"]

#: File suffixes read as images where a path could be either (folders of documents, strings given to encode).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageLoadError(RecordError):
    """An image could not be read or decoded.

    ``row`` (a record index, or a string locating the record such as ``"x.json: record 3"``), ``column`` and
    ``path`` are kept as attributes and named in the message, e.g.
    ``cannot load image (row 3, column 'image', path '/d/x.png'): file not found``.
    """

    def __init__(self, reason: str, *, row: Any = None, column: str | None = None, path: str | None = None,
                 **details: Any) -> None:
        super().__init__(reason, row=row, field=column, path=path, **details)

    @property
    def column(self) -> str | None:
        return self.field

    def _message(self) -> str:
        where = [self.location] if self.location else []
        if self.field is not None:
            where.append(f"column {self.field!r}")
        if self.path is not None:
            where.append(f"path {self.path!r}")
        suffix = f" ({', '.join(where)})" if where else ""
        return f"cannot load image{suffix}: {self.reason}"


def resolve_image_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``path`` joined to ``root`` when it is relative (``~`` expanded); unchanged otherwise."""
    path = os.path.expanduser(os.fspath(path))
    if root is not None and not os.path.isabs(path):
        return os.path.join(os.fspath(root), path)
    return path


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112  # the EXIF tag cameras set instead of rotating the pixels


def _int32_to_uint8(array: np.ndarray) -> np.ndarray:
    """A 32-bit integer ("I") image in 8 bits, its depth read from its values: ``[0, 255]`` as is, ``[0, 65535]``
    (16-bit data, as 16-bit PGMs and older Pillows' 16-bit PNGs decode) divided by 257, larger by ``2**31 - 1``."""
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise ValueError(f"32-bit integer image has negative values (min {low}); cannot map it to 8 bits")
    if high <= 255:
        return array.astype(np.uint8)
    scale = 257.0 if high <= 65535 else (2**31 - 1) / 255.0
    return np.round(array / scale).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels: high-depth modes scaled (Pillow's own ``convert`` clips them at 255), transparent pixels on
    white, everything else through Pillow's conversion (palette, 1-bit, CMYK, YCbCr...)."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return _from_array(np.asarray(image))
    if image.mode == "I":
        return _from_array(_int32_to_uint8(np.asarray(image)))
    if image.has_transparency_data:  # RGBA, LA, PA, or a palette / gray / RGB image with a transparent value
        # Composite on white rather than dropping alpha, whose hidden pixels are often black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, as ``transformers.image_utils.load_image`` and ``datasets.Image`` do."""
    if image.getexif().get(_ORIENTATION, 1) in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _from_array(array: np.ndarray) -> Image.Image:
    """HWC / HW / CHW arrays: uint8, uint16 (16-bit, divided by 257), other integers in ``[0, 255]``, floats in
    ``[0, 1]`` or ``[0, 255]``, bool; 1, 3 or 4 channels."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"array of shape {tuple(array.shape)} is not an image (expected HxW, HxWx3 or HxWx4)")
    if array.size == 0:
        raise ValueError(f"array of shape {tuple(array.shape)} is empty")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("float image array contains NaN or inf")
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            array = array * 255.0
        elif low < 0.0 or high > 255.0:
            raise ValueError(f"float image values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
        array = np.round(array).astype(np.uint8)
    elif array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit, as Pillow's "I;16" images
        array = np.round(array / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"integer image values outside [0, 255] (dtype {array.dtype})")
        array = array.astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported image array dtype {array.dtype}")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _check_pixels(image: Image.Image) -> None:
    """Refuse an image whose header claims more than ``PIL.Image.MAX_IMAGE_PIXELS`` before decoding it (Pillow
    itself only warns up to twice that limit, then decodes: gigabytes from a few hundred bytes)."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise ValueError(f"{width}x{height} = {width * height:,} pixels, over the decompression bomb limit "
                         f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,}; {_BOMB_HINT}")


_BOMB_HINT = "raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine"


def _decode(data: bytes | str) -> Image.Image:
    image = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data)
    try:
        _check_pixels(image)
        image.load()  # force the full decode now: truncated files fail here, not in the processor
        rgb = _to_rgb(_upright(image))
        if rgb is image:
            if getattr(image, "fp", None) is None:
                return image  # single-frame file: load() already closed it
            rgb = image.copy()  # multi-frame files keep their file open; detach the pixels
    except BaseException:
        image.close()
        raise
    image.close()
    return rgb


def open_image(
    source: Any,
    *,
    row: Any = None,
    path: str | None = None,
    column: str | None = None,
    root: str | os.PathLike | None = None,
) -> Image.Image:
    """Decode ``source`` into an RGB ``PIL.Image``.

    ``source`` may be a ``PIL.Image``, a numpy array (or anything ``np.asarray`` accepts,
    e.g. a torch tensor), encoded bytes, a ``datasets.Image`` dict ``{"bytes", "path"}`` or a
    file path (relative paths resolve against ``root``). ``row``, ``column`` and ``path``
    only label the :class:`ImageLoadError` raised for a missing, corrupt or unsupported image
    (``path`` defaults to the file being read).
    """
    label_path = path
    try:
        if isinstance(source, Image.Image):
            if source.mode != "RGB":
                source.load()
            return _to_rgb(_upright(source))
        if isinstance(source, dict):
            data, file = source.get("bytes"), source.get("path")
            if label_path is None and file:
                label_path = str(file)
            if data is not None:
                return _decode(data)
            if not file:
                raise ValueError("image dict has neither 'bytes' nor 'path'")
            source = file
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ValueError("empty image bytes")
            return _decode(source)
        if isinstance(source, (str, os.PathLike)):
            if not os.fspath(source):
                raise ValueError("empty image path")
            if "\x00" in os.fspath(source):
                raise ValueError("the image path contains a NUL byte")
            file = resolve_image_path(source, root)
            if label_path is None:
                label_path = file
            if not os.path.exists(file):
                url = os.fspath(source).startswith(("http://", "https://"))
                raise FileNotFoundError("file not found" + (" (URLs are not downloaded: fetch the images and pass "
                                                            "their local paths)" if url else ""))
            if os.path.isdir(file):
                raise IsADirectoryError("is a directory")
            if os.path.getsize(file) == 0:
                raise ValueError("empty file (0 bytes)")
            return _decode(file)
        if source is None:
            raise ValueError("image is missing (None)")
        if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
            return _from_array(np.asarray(source))
        raise TypeError(f"unsupported image type {type(source).__name__}")
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("not a readable image (corrupt file or unknown format)", row=row, column=column,
                             path=label_path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning, when made an error
        raise ImageLoadError(f"{str(exc).rstrip('.')}; {_BOMB_HINT}", row=row, column=column, path=label_path) from None
    except (OSError, ValueError, TypeError, SyntaxError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ImageLoadError(reason, row=row, column=column, path=label_path) from exc
