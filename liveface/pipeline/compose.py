"""Several portraits composed into one scene, side by side, one character each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liveface.engines.base import MAX_CHARACTERS, Box
from liveface.errors import BadInputError
from liveface.pipeline.image import MAX_PIXELS, to_rgb


def compose_portraits(portraits: Sequence[np.ndarray]) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Portraits left to right, each scaled to the smallest one's height.

    Args:
        portraits: images (anything :func:`~liveface.pipeline.image.to_rgb` takes).

    Returns:
        the scene, uint8 RGB ``(height, total_width, 3)``, and each portrait's place in it as
        ``(x0, y0, x1, y1)`` fractions (character ``i`` is portrait ``i``).

    Raises:
        BadInputError: no portrait, more than ``MAX_CHARACTERS``, or a scene too large.
    """
    import cv2

    if not 1 <= len(portraits) <= MAX_CHARACTERS:
        raise BadInputError(f"send 1 to {MAX_CHARACTERS} portraits (got {len(portraits)})")
    images = [to_rgb(p) for p in portraits]
    height = min(img.shape[0] for img in images)
    parts = []
    for img in images:
        h, w = img.shape[:2]
        width = max(1, round(w * height / h))
        if h != height:
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        parts.append(img)
    total = sum(p.shape[1] for p in parts)
    if total * height > MAX_PIXELS:
        raise BadInputError(f"the composed scene has more than {MAX_PIXELS} pixels")
    boxes: list[Box] = []
    x = 0
    for p in parts:
        boxes.append((x / total, 0.0, (x + p.shape[1]) / total, 1.0))
        x += p.shape[1]
    return np.ascontiguousarray(np.concatenate(parts, axis=1)), tuple(boxes)
