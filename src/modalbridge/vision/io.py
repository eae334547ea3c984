"""Safe image loading: any input a user can hand us becomes an RGB ``PIL.Image`` or one clear ``UserError``.

Decisions:
  * A 1x1 image is a valid image and is accepted (encoders resize anyway); pass ``min_size`` to demand more.
  * Pixel cap: images with more than ``max_pixels`` (default 40 MP, about a 7,700 x 5,200 photo) are refused from
    the header, before any pixel is decoded. Pillow's own decompression-bomb checks (warning above 89 MP, error above
    179 MP) also become UserErrors instead of a warning on stderr or a traceback. Datasets pass ``reduce_to``: a
    file over the cap is then decoded at reduced size instead of refused (JPEG through its DCT scaling, ``draft``;
    other formats decoded, then reduced by an integer factor and thumbnailed), so one huge drawing does not fail a
    training run; images under the cap load exactly as without it. Truncated files are refused
    (``LOAD_TRUNCATED_IMAGES`` is never switched on).
  * Modes: transparency (RGBA, LA, PA, P with a transparent index) is composited onto white, which is what a
    viewer shows for clip art; CMYK, YCbCr, 1, L, P convert to RGB; 16-bit (I;16*, and I with values above 255) is
    *scaled* by 255/65535 (Pillow's own conversion clips everything above 255 to white); 32-bit float (F) in
    [0, 1] is scaled by 255, otherwise min-max stretched.
  * Animated GIF/WebP/APNG and multi-page TIFF: the first frame.
  * EXIF orientation is applied (a phone photo shot in portrait comes out upright); a broken EXIF block is ignored.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modalbridge.errors import UserError

DEFAULT_MAX_PIXELS = 40_000_000
_WARNINGS_LOCK = threading.Lock()
ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]


def load_image(
    source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = 1, name: str | None = None,
    reduce_to: int | None = None,
) -> Image.Image:
    """Open ``source`` as an RGB image (see the module docstring for every conversion).

    Args:
        source: a path, raw bytes, a binary file object, a PIL image or a numpy array ``(H, W[, C])``.
        max_pixels: refuse images with more pixels than this (None: only Pillow's own 179 MP limit).
        min_size: refuse images whose width or height is below this.
        name: how to call the input in messages (default: the path, or "image").
        reduce_to: for files and bytes over ``max_pixels``: decode at reduced size, longer side at most this,
            instead of refusing (Pillow's 179 MP decompression-bomb limit still applies).

    Raises:
        UserError: missing/empty/truncated/non-image input, too many pixels, too small, unsupported mode.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, Image.Image):
        _check_size(source.size, label, max_pixels, min_size)
        try:
            source.load()
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise UserError(f"{label}: truncated or corrupt image ({_first_line(e)})") from None
        return _finish(source, label, max_pixels, min_size)
    if isinstance(source, np.ndarray):
        return _finish(_from_array(source, label), label, max_pixels, min_size)
    fp = _open_source(source, label)
    try:
        img, reduce = _open_header(fp, label, max_pixels, min_size, reduce_to)
        with img:
            try:
                img.seek(0)  # first frame of animations / multi-page files
                if reduce and img.format == "JPEG":
                    img.draft("RGB", (reduce_to, reduce_to))  # decode at 1/2, 1/4 or 1/8 scale
                img.load()
            except Image.DecompressionBombError as e:
                raise UserError(f"{label}: refused as a possible decompression bomb ({e})") from None
            except (OSError, ValueError, SyntaxError, EOFError) as e:
                raise UserError(f"{label}: truncated or corrupt image ({_first_line(e)})") from None
            if reduce:
                return _finish(_shrink(img, reduce_to), label, None, min_size)
            return _finish(img, label, max_pixels, min_size)
    finally:
        if isinstance(source, (str, os.PathLike)):
            fp.close()


def _open_header(fp: IO[bytes], label: str, max_pixels: int | None, min_size: int,
                 reduce_to: int | None) -> tuple[Image.Image, bool]:
    """``Image.open`` (header only, nothing decoded) with Pillow's bomb checks and the size checks as UserErrors.
    Returns the opened image and whether it is over ``max_pixels`` and will be decoded reduced (``reduce_to``)."""
    try:
        # Pillow's bomb check runs inside open(); its warning becomes an error here. catch_warnings swaps
        # process-global state, hence the lock (the web app loads images from worker threads).
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{label}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise UserError(f"{label}: not an image, or a format Pillow cannot read{_hint(fp)}") from None
    except (OSError, ValueError, SyntaxError) as e:  # malformed headers
        raise UserError(f"{label}: unreadable image ({_first_line(e)})") from None
    reduce = bool(reduce_to) and max_pixels is not None and img.width * img.height > max_pixels
    try:
        _check_size(img.size, label, None if reduce else max_pixels, min_size)
    except UserError:
        img.close()
        raise
    return img, reduce


def check_image_file(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     reduce_to: int | None = None) -> None:
    """What ``load_image(path, max_pixels, reduce_to=reduce_to)`` checks before decoding (existence, format, header
    size, Pillow's decompression-bomb limits), without decoding: a UserError for a file that cannot be used."""
    label = str(path)
    fp = _open_source(path, label)
    try:
        _open_header(fp, label, max_pixels, 1, reduce_to)[0].close()
    finally:
        fp.close()


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """An image with its longer side at most ``side``: an integer-factor box reduction, then a thumbnail."""
    factor = max(img.size) // side
    small = img.reduce(factor) if factor > 1 and img.mode not in ("P", "1") else img.copy()
    small.thumbnail((side, side))
    return small


def _open_source(source, label: str) -> IO[bytes]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise UserError(f"image not found: {path}")
        if path.is_dir():
            raise UserError(f"{path} is a directory, not an image file")
        try:
            if path.stat().st_size == 0:
                raise UserError(f"{path} is empty (0 bytes)")
            return open(path, "rb")  # noqa: SIM115 - closed by load_image
        except PermissionError:
            raise UserError(f"{path}: permission denied") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise UserError(f"{label} is empty (0 bytes)")
        return io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        return source
    raise UserError(f"cannot load an image from a {type(source).__name__}")


def _hint(fp: IO[bytes]) -> str:
    try:
        fp.seek(0)
        head = fp.read(512).lstrip().lower()
    except (OSError, ValueError):
        return ""
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in head):
        return " (SVG is a vector format: rasterize it first, e.g. rsvg-convert -o out.png in.svg)"
    if head[:4] in (b"\x00\x00\x00\x18", b"\x00\x00\x00\x1c") and b"ftypheic" in head[:32]:
        return " (HEIC needs the pillow-heif plugin)"
    return ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_size(size: tuple[int, int], label: str, max_pixels: int | None, min_size: int) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise UserError(f"{label}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} (max_pixels)")
    if w < min_size or h < min_size:
        raise UserError(f"{label}: {w}x{h} is smaller than the minimum of {min_size} pixels per side")


def _from_array(a: np.ndarray, label: str) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise UserError(f"{label}: array of shape {a.shape} is not an image (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype == np.uint16:
        a = _scale16(a)
    elif a.dtype.kind == "f":
        a = _scale_float(a)
    elif a.dtype != np.uint8:
        raise UserError(f"{label}: array dtype {a.dtype} is not an image type (uint8, uint16, float)")
    return Image.fromarray(np.ascontiguousarray(a))


def _scale16(a: np.ndarray) -> np.ndarray:
    return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)  # 0..65535 -> 0..255 exactly at both ends


def _scale_float(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if not (lo >= 0.0 and hi <= 1.0):
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.rint(a * 255.0).astype(np.uint8)


def _finish(img: Image.Image, label: str, max_pixels: int | None, min_size: int) -> Image.Image:
    """Orientation, first frame, mode -> RGB. Returns a new image (the file can be closed)."""
    _check_size(img.size, label, max_pixels, min_size)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unusable
        pass
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img)
        if mode == "I" and a.max(initial=0) <= 255 and a.min(initial=0) >= 0:
            gray = a.astype(np.uint8)  # 8-bit data stored as 32-bit ints
        elif a.min(initial=0) >= 0 and a.max(initial=0) <= 65535:
            gray = _scale16(a)
        else:
            gray = _scale_float(a.astype(np.float64))
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        return Image.fromarray(_scale_float(np.asarray(img))).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # a copy even when already RGB
    except (ValueError, OSError) as e:
        raise UserError(f"{label}: colour mode {mode} cannot be converted to RGB ({_first_line(e)})") from None
