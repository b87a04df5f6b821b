"""Audio to mouth shape: loudness and the sound's cues per frame, smoothed with attack/release.

Per frame the driver measures the level (RMS in dBFS, relative to a slowly adapting speech peak,
so quiet and loud talkers both animate) and asks ``visemes`` what the sound says about the mouth:
how open the jaw is for it (F1), spread or rounded lips (F2 with F1), lips closed on a murmur
("m"), fricative noise. They make the targets of three mouth shapes (jaw opening, lip spread, lip
rounding); each target is followed by a one-pole filter that rises with the attack time constant
and falls with the release one, except that the jaw shuts within about a frame when the lips close
(a murmur, or sound stopping dead as for "p"), so bilabials are seen to close.
"""

from __future__ import annotations

import math

import numpy as np

from liveface.engines.warp.visemes import SpectralAnalyzer

#: Below this level (dBFS) a frame is silence whatever the voice flag says.
SILENCE_DB = -55.0
#: The level range (dB) from closed to fully open, ending a little under the running speech peak.
OPEN_RANGE_DB = 30.0
PEAK_HEADROOM_DB = 4.0
#: The running speech peak falls by this much per second between loud syllables.
PEAK_DECAY_DB_S = 4.0
#: Starting estimate of a talker's peak level (typical close-mic speech).
INITIAL_PEAK_DB = -14.0
MIN_PEAK_DB = -40.0
#: Jaw opening, as a share of what the level allows, for the closest sounds ("ee", "oo").
JAW_FLOOR = 0.25
#: The lip shapes follow the level's square root: lips hold their shape on quiet sounds too.
LIP_LEVEL_POWER = 0.5
#: Closure cue over which, or level under which, the jaw shuts fast (see :meth:`MouthDriver.step`).
FAST_CLOSE_CUE = 0.5
FAST_CLOSE_LEVEL = 0.05
#: Shortest analysis window (s): at high frame rates a frame's own samples hold too few pitch
#: periods for the formants, so the samples before it are added.
MIN_ANALYSIS_S = 0.025
#: Time constant (s) of the slow "is talking" level that livens the head motion.
TALK_TAU_S = 0.6
#: How far speech heard only in the lookahead pre-opens the mouth of a silent frame.
ANTICIPATION = 0.5
#: Lip-shape time constants relative to the jaw's.
LIP_SLOWDOWN = 2.0
#: Peak amplitude above which audio is treated as clipped (it is clamped to this).
CLIP = 1.0


def sanitize(samples: np.ndarray) -> np.ndarray:
    """Mono float32 ``(n,)`` with NaN/inf replaced by silence and peaks clamped to [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size and not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, np.float32(0.0))
    return np.clip(x, -CLIP, CLIP)


class MouthDriver:
    """Per-session mouth state: running level statistics and the smoothed shape amplitudes.

    Args:
        sample_rate: audio rate (Hz).
        fps: video frame rate (one :meth:`step` per frame).
        attack_ms, release_ms: opening and closing time constants.
        gain: multiplies the jaw opening target.
    """

    def __init__(
        self, sample_rate: int, fps: int, attack_ms: float, release_ms: float, gain: float
    ) -> None:
        self._sr = sample_rate
        dt = 1.0 / fps
        # Lip shape (spread, round) follows the slower articulators: twice the jaw's time constants,
        # which also keeps its frame-to-frame spectral noise from showing.
        slow = np.array([1.0, LIP_SLOWDOWN, LIP_SLOWDOWN])
        self._attack = (1.0 - np.exp(-dt / (attack_ms / 1000.0 * slow))).astype(np.float32)
        self._release = (1.0 - np.exp(-dt / (release_ms / 1000.0 * slow))).astype(np.float32)
        self._talk_k = 1.0 - math.exp(-dt / TALK_TAU_S)
        self._peak_decay = PEAK_DECAY_DB_S * dt
        self._gain = gain
        self._peak = INITIAL_PEAK_DB
        self._analyzer = SpectralAnalyzer(sample_rate)
        self._history = np.zeros(0, np.float32)
        self._min_analysis = int(MIN_ANALYSIS_S * sample_rate)
        self.shape = np.zeros(3, np.float32)  # jaw, spread, round
        self.talk = 0.0

    def reset(self) -> None:
        """Back to a closed mouth at rest (barge-in); the talker's level estimate is kept."""
        self.shape[:] = 0.0
        self.talk = 0.0
        self._history = np.zeros(0, np.float32)

    def targets(self, samples: np.ndarray, voiced: bool, lookahead: int = 0) -> np.ndarray:
        """Targets ``(4,)`` in [0, 1] for one frame: jaw, spread, round, and the closure cue.

        Args:
            samples: the frame's audio followed by ``lookahead`` samples after it, ``(n,)``.
            voiced: the voice flag of the frame's chunk. An unvoiced frame keeps the mouth shut,
                except that speech already audible in the lookahead pre-opens it (half-way).
            lookahead: how many of ``samples`` lie after the frame.
        """
        x = sanitize(samples)
        own = x[: max(0, x.size - max(0, lookahead))]
        context = self._history
        self._history = np.concatenate([context, own])[-self._min_analysis :]
        scale = 1.0
        if not voiced:
            if lookahead <= 0:
                return np.zeros(4, np.float32)
            x, scale = x[-lookahead:], ANTICIPATION
        if x.size == 0:
            return np.zeros(4, np.float32)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        db = 20.0 * math.log10(rms + 1e-9)
        if db <= SILENCE_DB:
            return np.array([0.0, 0.0, 0.0, 1.0], np.float32)
        if voiced:
            self._peak = max(self._peak - self._peak_decay, db, MIN_PEAK_DB)
        top = self._peak - PEAK_HEADROOM_DB
        level = min(1.0, max(0.0, (db - (top - OPEN_RANGE_DB)) / OPEN_RANGE_DB))
        level = scale * level**1.3  # soft start: breath and reverb barely move the lips
        if x.size < self._min_analysis and voiced:
            x = np.concatenate([context[-(self._min_analysis - x.size) :], x])
        cue = self._analyzer.cues(x, self._peak)
        open_ = 1.0 - cue.closure
        lips = level**LIP_LEVEL_POWER * open_ * (1.0 - cue.high)
        jaw = self._gain * level * (JAW_FLOOR + (1.0 - JAW_FLOOR) * cue.openness)
        jaw *= (1.0 - 0.6 * cue.high) * open_
        spread = max(lips * cue.spread, 0.6 * level * cue.high)
        rnd = lips * cue.rounding
        closing = max(cue.closure, 1.0 if level < FAST_CLOSE_LEVEL else 0.0)
        return np.clip(np.array([jaw, spread, rnd, closing], np.float32), 0.0, 1.0)

    def step(self, target: np.ndarray) -> np.ndarray:
        """Advance one frame towards ``target (4,)`` (see :meth:`targets`); returns ``(3,)``.

        A 3-element target (no closure cue) is followed with the plain attack/release rates.
        """
        goal = target[:3]
        rate = np.where(goal > self.shape, self._attack, self._release)
        if target.size > 3 and target[3] >= FAST_CLOSE_CUE and goal[0] < self.shape[0]:
            # Lips shut in a few tens of milliseconds, about a frame: follow the cue's certainty.
            rate[0] = max(float(self._attack[0]), float(target[3]))
        self.shape += rate * (goal - self.shape)
        self.talk += self._talk_k * (float(self.shape[0] > 0.1) - self.talk)
        return self.shape.copy()
