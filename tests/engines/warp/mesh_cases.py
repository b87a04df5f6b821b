"""Images on which the bundled face models are checked against MediaPipe's own graphs.

Shared by ``tests/engines/warp/test_facemesh.py`` and ``scripts/reference/record_face_mesh.py``
(which records MediaPipe 0.10.21's output on them into ``data/mediapipe_face_mesh.npz``).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data


def _rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _small_in_canvas(img: np.ndarray) -> np.ndarray:
    canvas = np.full((480, 640, 3), 128, np.uint8)
    small = cv2.resize(img, (260, 260), interpolation=cv2.INTER_AREA)
    canvas[150:410, 300:560] = small
    return canvas


def cases() -> dict[str, np.ndarray]:
    """Named uint8 RGB images: one face in several poses and framings, two faces, none."""
    astro = np.ascontiguousarray(data.astronaut())
    face = astro[20:300, 110:330]  # the face filling most of a non-square crop
    return {
        "astronaut": astro,
        "rotated": _rotated(astro, 20.0),
        "small_in_canvas": _small_in_canvas(astro),
        "flipped_dark": np.ascontiguousarray(
            (astro[:, ::-1].astype(np.float32) * 0.6).astype(np.uint8)
        ),
        "face_crop": np.ascontiguousarray(face),
        "two_faces": np.concatenate([astro, astro[:, ::-1]], axis=1),
        "two_face_crops": np.concatenate([face, face[:, ::-1]], axis=1),
        "no_face": np.ascontiguousarray(data.coffee()),
    }
