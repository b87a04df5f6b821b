"""Idle life: blink timing, head sway and breathing.

Blinks and sway are functions of media time (seconds since the session's first frame) and of a
few random draws per session: a rewound session replays the same blinks and sway, and sessions with
different seeds do not move in lockstep. The head moves inside a soft mask around the head while
the background and the frame edges stay put.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L

# Blink shape (seconds): the lid closes fast, rests briefly, reopens more slowly.
BLINK_CLOSE_S = 0.08
BLINK_HOLD_S = 0.05
BLINK_OPEN_S = 0.16
BLINK_S = BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S
#: Share of blinks followed by a second one, and the shortest time between two blinks.
DOUBLE_BLINK_P = 0.12
MIN_BLINK_GAP_S = 0.6
#: Blinks older than this are forgotten (bounded state however long the session).
BLINK_MEMORY_S = 10.0

# Head-motion amplitudes (RMS) relative to the forehead-to-chin height, and the roll in radians.
SWAY_X = 0.008
SWAY_Y = 0.006
ROLL = 0.012
ZOOM = 0.004
BREATH = 0.005
#: How much livelier the head moves while the avatar speaks.
TALK_BOOST = 0.6


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def blink_profile(tau: float) -> float:
    """Lid closure in [0, 1] at ``tau`` seconds after a blink began."""
    if tau < 0.0 or tau >= BLINK_S:
        return 0.0
    if tau < BLINK_CLOSE_S:
        return _smoothstep(tau / BLINK_CLOSE_S)
    if tau < BLINK_CLOSE_S + BLINK_HOLD_S:
        return 1.0
    return 1.0 - _smoothstep((tau - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S)


class BlinkClock:
    """Random blink times at a human rate; ``amount(t)`` is the lid closure at media time ``t``."""

    def __init__(self, per_minute: float, rng: np.random.Generator) -> None:
        self._rng = rng
        self._enabled = per_minute > 0.0
        # Double blinks add blinks, so single blinks are spaced to keep the requested mean rate.
        mean = 60.0 / per_minute * (1.0 + DOUBLE_BLINK_P) if self._enabled else math.inf
        self._shape = 2.5  # gamma shape: irregular like real blinking, without long droughts
        self._scale = max(0.1, mean - MIN_BLINK_GAP_S) / self._shape
        self._starts: deque[float] = deque()
        self._next = float(rng.uniform(0.3, min(mean, 4.0))) if self._enabled else math.inf

    def _schedule_until(self, t: float) -> None:
        while self._next <= t:
            self._starts.append(self._next)
            gap = MIN_BLINK_GAP_S + float(self._rng.gamma(self._shape, self._scale))
            if self._rng.random() < DOUBLE_BLINK_P:
                self._starts.append(self._next + float(self._rng.uniform(0.3, 0.45)))
                gap += 0.45
            self._next += gap
        while self._starts and self._starts[0] < t - BLINK_MEMORY_S:
            self._starts.popleft()

    def amount(self, t: float) -> float:
        """Lid closure in [0, 1] at media time ``t`` seconds."""
        if not self._enabled:
            return 0.0
        self._schedule_until(t)
        return max((blink_profile(t - s) for s in self._starts), default=0.0)


@dataclass(frozen=True)
class Pose:
    """Head pose offsets of one frame: shift (pixels), roll (radians), zoom, breath (pixels)."""

    tx: float = 0.0
    ty: float = 0.0
    roll: float = 0.0
    zoom: float = 0.0
    breath: float = 0.0


class HeadSway:
    """Smooth, aperiodic head sway and breathing: sums of slow sines with per-session phases."""

    def __init__(self, face_height: float, scale: float, rng: np.random.Generator) -> None:
        bands = np.array([[0.05, 0.11], [0.11, 0.23], [0.23, 0.42]])
        weights = np.array([1.0, 0.6, 0.3]) / math.sqrt(1.0 + 0.36 + 0.09) * math.sqrt(2.0)
        amps = np.array([SWAY_X * face_height, SWAY_Y * face_height, ROLL, ZOOM]) * scale
        self._freq = rng.uniform(bands[:, 0], bands[:, 1], size=(4, 3))
        self._phase = rng.uniform(0.0, 2.0 * math.pi, size=(4, 3))
        self._amp = amps[:, None] * weights[None, :]  # (channel, component)
        self._breath_f = float(rng.uniform(0.2, 0.3))  # 12-18 breaths a minute
        self._breath_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self._breath_amp = BREATH * face_height * scale

    def pose(self, t: float, talk: float) -> Pose:
        """Pose at media time ``t`` seconds; ``talk`` in [0, 1] livens the sway while speaking."""
        s = np.sum(self._amp * np.sin(2.0 * math.pi * self._freq * t + self._phase), axis=1)
        s *= 1.0 + TALK_BOOST * min(1.0, max(0.0, talk))
        breath = self._breath_amp * (
            0.5 - 0.5 * math.cos(2.0 * math.pi * self._breath_f * t + self._breath_phase)
        )
        return Pose(
            tx=float(s[0]), ty=float(s[1]), roll=float(s[2]), zoom=float(s[3]), breath=breath
        )


#: The head-motion fields are smooth over tens of pixels, so they are built and mixed at this
#: fraction of the frame size and upsampled once per frame.
FIELD_SCALE = 4


@dataclass(frozen=True)
class HeadFields:
    """Per-portrait displacement fields of the head pose.

    The head moves inside a soft elliptic mask around face and hair, the roll pivots at the neck,
    breathing lifts the shoulders and, a little, the head; the frame edges stay pinned.

    Attributes:
        basis: float32 ``(5, h, w, 2)`` forward displacement (dx, dy) per unit of shift x, shift y,
            roll, zoom and breath, at ``1 / FIELD_SCALE`` of the frame size.
        size: ``(height, width)`` of the frame.
    """

    basis: np.ndarray
    size: tuple[int, int]

    def backward_shift(self, pose: Pose, small: np.ndarray) -> np.ndarray:
        """How far from itself each output pixel samples for ``pose``, float32 ``(H, W, 2)``.

        A relative map (``cv2.WARP_RELATIVE_MAP``), which spares adding the pixel grid and is
        faster to remap. ``small`` is a ``(h, w, 2)`` float32 work buffer. For few-pixel,
        sub-degree motion the inverse is the negated forward displacement.
        """
        amounts = (-pose.tx, -pose.ty, -pose.roll, -pose.zoom, -pose.breath)
        np.multiply(self.basis[0], np.float32(amounts[0]), out=small)
        for k in range(1, len(amounts)):
            cv2.scaleAdd(self.basis[k], float(amounts[k]), small, dst=small)
        height, width = self.size
        return np.asarray(
            cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
        )


def build_head_fields(lm: np.ndarray, face_height: float, width: int, height: int) -> HeadFields:
    """Head-motion fields for landmarks ``lm (478, 2)`` in an output frame of ``width x height``."""
    w, h = -(-width // FIELD_SCALE), -(-height // FIELD_SCALE)
    # Evaluate at the exact points cv2.resize interpolates between, so upsampling is unbiased.
    xs = (np.arange(w) + 0.5) * (width / w) - 0.5
    ys = (np.arange(h) + 0.5) * (height / h) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    forehead, chin = lm[L.FOREHEAD], lm[L.CHIN]
    cx = float((forehead[0] + chin[0]) / 2)
    cy = float((forehead[1] + chin[1]) / 2 - 0.1 * face_height)  # lift the centre over the hair
    rho = np.sqrt(((gx - cx) / (0.78 * face_height)) ** 2 + ((gy - cy) / (0.9 * face_height)) ** 2)
    t = np.clip((rho - 1.0) / 0.6, 0.0, 1.0)
    weight = 1.0 - t * t * (3.0 - 2.0 * t)
    # Pin the frame edges: a head touching the border must not pull in pixels from outside it.
    margin = 0.06 * min(width, height)
    edge = np.minimum(np.minimum(gx, width - 1 - gx), np.minimum(gy, height - 1 - gy))
    taper = np.clip(edge / margin, 0.0, 1.0)
    weight = weight * taper * taper * (3.0 - 2.0 * taper)
    px, py = float(chin[0]), float(chin[1] + 0.2 * face_height)  # roll about the neck
    shoulders = np.clip((gy - (chin[1] + 0.15 * face_height)) / (0.35 * face_height), 0.0, 1.0)
    lift = np.maximum(shoulders * taper, 0.35 * weight)
    zero = np.zeros_like(weight)
    basis = np.stack(
        [
            np.stack([weight, zero], axis=-1),  # shift x
            np.stack([zero, weight], axis=-1),  # shift y
            np.stack([-(gy - py) * weight, (gx - px) * weight], axis=-1),  # roll (radians)
            np.stack([(gx - cx) * weight, (gy - cy) * weight], axis=-1),  # zoom
            np.stack([zero, -lift], axis=-1),  # breath: up
        ]
    )
    return HeadFields(basis=np.ascontiguousarray(basis, dtype=np.float32), size=(height, width))
