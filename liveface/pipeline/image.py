"""Decoding portrait images from uploads and files into uint8 RGB arrays."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from liveface.errors import BadInputError

#: Larger images are refused before decoding (a decompression bomb costs memory, not bytes).
MAX_PIXELS = 40_000_000
#: Smallest portrait side accepted: anything smaller cannot hold a usable face.
MIN_SIDE = 32


#: Grey that transparent pixels of an RGBA portrait are composited onto (neutral for detectors).
ALPHA_BACKGROUND = 180.0


def to_rgb(image: object) -> np.ndarray:
    """Normalise a portrait to contiguous uint8 RGB ``(h, w, 3)``.

    Accepts grayscale ``(h, w)`` or ``(h, w, 1)``, RGB and RGBA (composited onto grey); bool,
    integer and float pixels (floats in [0, 1] are scaled by 255; 16-bit images are scaled down).

    Raises:
        BadInputError: not an image, an unsupported shape, or non-finite pixels.
    """
    try:
        img = np.asarray(image)
    except Exception as e:  # ragged nested lists and other non-arrays
        raise BadInputError("portrait must be an image array (height, width, 3)") from e
    if img.dtype == object or img.dtype.kind not in "biuf":
        raise BadInputError(f"portrait pixels must be numbers, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise BadInputError(
            f"portrait must be an image of shape (height, width), (height, width, 3) or "
            f"(height, width, 4); "
            f"got shape {img.shape}"
        )
    img = _to_uint8(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32)
        img = np.rint(rgb * alpha + ALPHA_BACKGROUND * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Any numeric pixel type to uint8, keeping the array's shape."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    if img.dtype.kind == "f":
        f = img.astype(np.float32)
        if not np.isfinite(f).all():
            raise BadInputError("portrait has non-finite (NaN or infinite) pixels")
        if f.max(initial=0.0) <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    top = int(img.max(initial=0))
    if img.dtype.kind == "u" and img.dtype.itemsize == 2 and top > 255:
        return (img.astype(np.uint32) // 257).astype(np.uint8)  # 16-bit image
    return np.clip(img, 0, 255).astype(np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG/WebP/BMP bytes (or a ``data:`` URL) into RGB uint8 ``(h, w, 3)``.

    Raises:
        BadInputError: empty, not an image, or too many pixels.
    """
    import cv2

    if data[:5] == b"data:":
        try:
            data = base64.b64decode(data.split(b",", 1)[1], validate=True)
        except (IndexError, binascii.Error) as e:
            raise BadInputError("portrait data URL is not valid base64") from e
    if not data:
        raise BadInputError("portrait is empty")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # A 1/8-scale grey decode reads the size cheaply before any full-size allocation.
        header = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if header is None:
            raise BadInputError("portrait is not an image cv2 can read (use PNG, JPEG or WebP)")
        if header.size * 64 > MAX_PIXELS:
            raise BadInputError(f"portrait has more than {MAX_PIXELS} pixels; send a smaller one")
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        # OpenCV cannot shrink an image under 8 pixels a side (a 1x1 PNG): its header says so.
        size = _header_size(data)
        if size is not None and min(size) < MIN_SIDE:
            raise _too_small(size) from e
        raise BadInputError("portrait could not be decoded (use a PNG, JPEG or WebP photo)") from e
    if img is None:
        raise BadInputError("portrait could not be decoded")
    if min(img.shape[:2]) < MIN_SIDE:
        raise _too_small((img.shape[1], img.shape[0]))
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb(img)


def _too_small(size: tuple[int, int]) -> BadInputError:
    return BadInputError(
        f"portrait is {size[0]}x{size[1]} pixels; send at least {MIN_SIDE}x{MIN_SIDE} "
        "(a photo with a face)"
    )


def _header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an image file's header (nothing is decoded), or None."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def load_image(path: str | Path) -> np.ndarray:
    """Read a portrait file into RGB uint8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read portrait {p}: {e}") from e
    return decode_image(data)
