"""Portrait preparation: any image -> the engine's frame size, and light augmentations of it.

The portrait is centre-cropped to the output aspect ratio (never stretched) and resized. An image
so small that it would be upscaled more than :data:`MAX_UPSCALE` times is upscaled that much and
padded to the output size by replicating its border, rather than inventing more detail.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liveface.errors import BadInputError
from liveface.pipeline.image import to_rgb

#: Smallest portrait side accepted, in pixels.
MIN_SIDE = 32
#: Larger upscaling than this is replaced by border padding.
MAX_UPSCALE = 4.0
#: Augmentations for an identity codebook: (shift x, shift y) as fractions of the size, flip,
#: brightness gain. The first entry is the portrait itself.
AUGMENTATIONS: tuple[tuple[float, float, bool, float], ...] = (
    (0.0, 0.0, False, 1.0),
    (0.0, 0.0, True, 1.0),
    (0.03, 0.0, False, 1.0),
    (-0.03, 0.02, False, 1.0),
    (0.0, 0.0, False, 0.9),
    (0.0, 0.0, False, 1.1),
    (0.02, -0.02, True, 0.95),
    (-0.02, 0.0, True, 1.05),
)


def fit_portrait(image: Any, width: int, height: int) -> np.ndarray:
    """Centre-crop to ``width:height`` and resize.

    Args:
        image: gray, RGB or RGBA array (uint8, uint16 or float in [0, 1]).

    Returns:
        uint8 RGB ``(height, width, 3)``.

    Raises:
        BadInputError: not an image, too small, or not finite.
    """
    import cv2

    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise BadInputError(f"portrait of {w}x{h} pixels is too small (at least {MIN_SIDE})")
    # Largest centred crop with the output's aspect ratio.
    crop_w, crop_h = min(w, h * width // height), min(h, w * height // width)
    x0, y0 = (w - crop_w) // 2, (h - crop_h) // 2
    crop = rgb[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if width / crop_w <= MAX_UPSCALE:
        # The crop has the output's aspect ratio up to a pixel: resize straight to the size.
        interp = cv2.INTER_AREA if crop_w > width else cv2.INTER_CUBIC
        return np.ascontiguousarray(cv2.resize(crop, (width, height), interpolation=interp))
    new_w = min(width, round(crop_w * MAX_UPSCALE))
    new_h = min(height, round(crop_h * MAX_UPSCALE))
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    resized = cv2.copyMakeBorder(
        resized, top, height - new_h - top, left, width - new_w - left, cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(resized)


def augmented_views(image: np.ndarray, count: int) -> np.ndarray:
    """The portrait and ``count - 1`` light augmentations of it (shifts, flips, brightness).

    Args:
        image: uint8 ``(height, width, 3)``.

    Returns:
        uint8 ``(count, height, width, 3)``; views repeat when ``count`` exceeds the list.
    """
    import cv2

    h, w = image.shape[:2]
    views = []
    for i in range(count):
        dx, dy, flip, gain = AUGMENTATIONS[i % len(AUGMENTATIONS)]
        view = image[:, ::-1] if flip else image
        if dx or dy:
            shift = np.array([[1, 0, dx * w], [0, 1, dy * h]], dtype=np.float32)
            view = cv2.warpAffine(
                np.ascontiguousarray(view), shift, (w, h), borderMode=cv2.BORDER_REPLICATE
            )
        if gain != 1.0:
            view = np.clip(view.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
        views.append(np.ascontiguousarray(view))
    return np.stack(views)


def default_portrait() -> np.ndarray:
    """A public-domain portrait (scikit-image's astronaut), uint8 ``(512, 512, 3)``."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())
