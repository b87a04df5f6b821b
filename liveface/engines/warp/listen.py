"""Listening behaviour: small nods of a character while another one speaks.

Like blinks, nods are a function of media time and of a few random draws per character: once a
character starts listening, its first nod comes after a short while, then more at irregular
intervals until it stops listening; a nod that has begun finishes. A nod lowers the head a little
and brings it back (the 2-D picture of a pitch nod), sometimes twice in a row.
"""

from __future__ import annotations

import math

import numpy as np

#: Nod depth relative to the forehead-to-chin height, and its duration (seconds).
NOD_DEPTH = 0.018
NOD_S = 0.55
#: Share of nods that are double nods, and the spacing of a double nod's second dip (seconds).
DOUBLE_NOD_P = 0.3
DOUBLE_NOD_GAP_S = 0.45
#: First nod this long after listening began (seconds, uniform), then a nod every so often.
FIRST_NOD_S = (0.6, 1.6)
NOD_GAP_S = (1.8, 4.5)


def nod_profile(tau: float) -> float:
    """Head lowering in [0, 1] at ``tau`` seconds after a nod began (a smooth dip)."""
    if tau < 0.0 or tau >= NOD_S:
        return 0.0
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * tau / NOD_S)


class ListenerNods:
    """Nods while a character listens; ``offset(t, listening)`` is the head's downward shift in
    pixels at media time ``t`` (called with increasing ``t``).

    Args:
        face_height: the character's forehead-to-chin height in pixels.
        scale: scales the depth (the engine's ``motion_scale``).
        rng: the character's random draws.
    """

    def __init__(self, face_height: float, scale: float, rng: np.random.Generator) -> None:
        self._depth = NOD_DEPTH * face_height * scale
        self._rng = rng
        self._next: float | None = None  # start of the next nod while listening
        self._starts: list[float] = []  # nods begun (recent ones only)

    def offset(self, t: float, listening: bool) -> float:
        if listening:
            if self._next is None:
                self._next = t + float(self._rng.uniform(*FIRST_NOD_S))
            while self._next <= t:
                self._starts.append(self._next)
                if self._rng.random() < DOUBLE_NOD_P:
                    self._starts.append(self._next + DOUBLE_NOD_GAP_S)
                self._next += float(self._rng.uniform(*NOD_GAP_S))
        else:
            self._next = None  # nods not begun are forgotten; one under way finishes
        self._starts = [s for s in self._starts if t - s < NOD_S]
        return self._depth * max((nod_profile(t - s) for s in self._starts), default=0.0)
