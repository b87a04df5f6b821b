"""Framing a clip like the engine's portraits: one fixed face crop per clip, or a centre crop.

``face``: the CPU engine's MediaPipe landmarks
(:func:`liveface.engines.warp.face.detect_landmarks`) on a few probe frames of the clip, averaged;
the crop levels the eyes, scales the forehead-to-chin distance to ``face_height`` of the frame
and puts the face centre at ``center_y``. One transform per clip, so the crop never jitters.

``center``: the diffusion engine's own portrait framing
(:func:`liveface.engines.diffusion.portrait.fit_portrait`), for footage that is framed already.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.diffusion.portrait import fit_portrait
from liveface.engines.warp import landmarks as L
from liveface.engines.warp.face import detect_landmarks
from liveface.errors import ConfigError

CROP_MODES = ("face", "center")
#: Frames larger than this are shrunk before face detection (it needs no more than ~1 Mpx).
DETECT_MAX_SIDE = 1280


@dataclass(frozen=True)
class CropConfig:
    """How clips are framed.

    Attributes:
        mode: ``face`` or ``center``.
        face_height: forehead-to-chin height as a fraction of the frame height (``face``).
        center_y: vertical position of the face centre as a fraction of the height (``face``).
        min_face_px: faces smaller than this (forehead to chin, source pixels) are refused.
        probes: frames of a clip the landmarks are detected on (spread evenly).
    """

    mode: str = "face"
    face_height: float = 0.45
    center_y: float = 0.45
    min_face_px: int = 48
    probes: int = 3

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in CROP_MODES:
            problems.append(f"mode must be one of {', '.join(CROP_MODES)}")
        if not 0 < self.face_height <= 1 or not 0 < self.center_y < 1:
            problems.append("face_height must be in (0, 1] and center_y in (0, 1)")
        if self.min_face_px < 1 or self.probes < 1:
            problems.append("min_face_px and probes must be positive")
        if problems:
            raise ConfigError("invalid crop config: " + "; ".join(problems))


def face_transform(
    lm: np.ndarray, width: int, height: int, face_height: float, center_y: float
) -> np.ndarray:
    """The 2x3 similarity that levels the eyes and frames the face (landmarks ``(478, 2)``)."""
    size = float(np.linalg.norm(lm[L.FOREHEAD] - lm[L.CHIN]))
    scale = face_height * height / size
    left, right = L.eye_centers(lm)
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    center = (lm[L.FOREHEAD] + lm[L.CHIN]) / 2
    m = np.asarray(
        cv2.getRotationMatrix2D((float(center[0]), float(center[1])), roll, scale), np.float64
    )
    m[:, 2] += np.array([width / 2, center_y * height]) - center
    return m


class Cropper:
    """Computes one crop per clip and applies it to every frame.

    Args:
        config: the framing.
        width, height: output size in pixels.
    """

    def __init__(self, config: CropConfig, width: int, height: int) -> None:
        self.config = config
        self.width = width
        self.height = height

    def probe_indices(self, frames: int) -> list[int]:
        """Which frames of a clip of ``frames`` frames the landmarks are detected on."""
        k = min(self.config.probes, frames)
        return sorted({round(i * (frames - 1) / max(1, k - 1)) for i in range(k)})

    def transform(self, probes: Sequence[np.ndarray]) -> np.ndarray | None:
        """The clip's 2x3 transform from its probe frames (None in ``center`` mode).

        Raises:
            NoFaceError: a probe frame has no face, several, or a face that is too small.
        """
        c = self.config
        if c.mode == "center":
            return None
        lms = [detect_landmarks(f, c.min_face_px, DETECT_MAX_SIDE) for f in probes]
        lm = np.mean(np.stack(lms), axis=0)
        return face_transform(lm, self.width, self.height, c.face_height, c.center_y)

    def apply(self, frame: np.ndarray, m: np.ndarray | None) -> np.ndarray:
        """Crop one uint8 RGB frame ``(h, w, 3)`` to ``(height, width, 3)``."""
        if m is None:
            return fit_portrait(frame, self.width, self.height)
        scale = math.hypot(m[0, 0], m[0, 1])
        src = frame
        if scale < 0.5:  # strong downscale: area-average first so the crop is not aliased
            k = 2 ** int(math.log2(1 / scale))
            src = cv2.resize(
                frame, (frame.shape[1] // k, frame.shape[0] // k), interpolation=cv2.INTER_AREA
            )
            m = m.copy()
            m[:, :2] *= frame.shape[1] / src.shape[1]
        return np.ascontiguousarray(
            cv2.warpAffine(
                src,
                m,
                (self.width, self.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
