"""Decoding portrait images from uploads and files into uint8 RGB arrays."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from liveface.errors import BadInputError

#: Larger images are refused before decoding (a decompression bomb costs memory, not bytes).
MAX_PIXELS = 40_000_000


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any of gray ``(h, w)``, gray ``(h, w, 1)``, RGB, or RGBA (composited on white) -> RGB uint8.

    Float images are taken to be in [0, 1]; 16-bit images are scaled down.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise BadInputError(f"portrait must be a gray, RGB or RGBA image (got shape {img.shape})")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype.kind == "f":
        img = (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img)


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
    header = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if header is None:
        raise BadInputError("portrait is not an image cv2 can read (use PNG, JPEG or WebP)")
    if header.size * 64 > MAX_PIXELS:
        raise BadInputError(f"portrait has more than {MAX_PIXELS} pixels; send a smaller image")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInputError("portrait could not be decoded")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb(img)


def load_image(path: str | Path) -> np.ndarray:
    """Read a portrait file into RGB uint8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read portrait {p}: {e}") from e
    return decode_image(data)
