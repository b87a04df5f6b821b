"""Audio to mouth shape: loudness and spectral shape per video frame, smoothed with attack/release.

Per frame the driver measures the level (RMS in dBFS, relative to a slowly adapting speech peak,
so quiet and loud talkers both animate) and three spectral cues: the centroid of the first-formant
band (open vowels have a high F1), the centroid of the second-formant band (spread vowels such as
"ee" have a high F2, rounded ones such as "oo" a low one) and the share of energy above 3 kHz
(fricatives: teeth close, lips spread); open vowels are not rounded. They map to targets for jaw
opening, lip spread and lip rounding; each target is followed by a one-pole filter that rises with
the attack time constant and falls with the release one.
"""

from __future__ import annotations

import math

import numpy as np

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
#: Analysis bands (Hz).
F1_BAND = (250.0, 1000.0)
F2_BAND = (900.0, 2800.0)
HIGH_BAND = (3000.0, 8000.0)
LOW_BAND = (80.0, 3000.0)
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
        self.shape = np.zeros(3, np.float32)  # jaw, spread, round
        self.talk = 0.0

    def reset(self) -> None:
        """Back to a closed mouth at rest (barge-in); the talker's level estimate is kept."""
        self.shape[:] = 0.0
        self.talk = 0.0

    def targets(self, samples: np.ndarray, voiced: bool, lookahead: int = 0) -> np.ndarray:
        """Target amplitudes ``(3,)`` (jaw, spread, round) in [0, 1] for one frame.

        Args:
            samples: the frame's audio followed by ``lookahead`` samples after it, ``(n,)``.
            voiced: the voice flag of the frame's chunk. An unvoiced frame keeps the mouth shut,
                except that speech already audible in the lookahead pre-opens it (half-way).
            lookahead: how many of ``samples`` lie after the frame.
        """
        x = sanitize(samples)
        scale = 1.0
        if not voiced:
            if lookahead <= 0:
                return np.zeros(3, np.float32)
            x, scale = x[-lookahead:], ANTICIPATION
        if x.size == 0:
            return np.zeros(3, np.float32)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        db = 20.0 * math.log10(rms + 1e-9)
        if db <= SILENCE_DB:
            return np.zeros(3, np.float32)
        if voiced:
            self._peak = max(self._peak - self._peak_decay, db, MIN_PEAK_DB)
        top = self._peak - PEAK_HEADROOM_DB
        level = min(1.0, max(0.0, (db - (top - OPEN_RANGE_DB)) / OPEN_RANGE_DB))
        level = scale * level**1.3  # soft start: breath and reverb barely move the lips
        f1, f2, high = self._spectral_cues(x)
        jaw = self._gain * level * (0.55 + 0.45 * f1) * (1.0 - 0.6 * high)
        spread = level * (max(0.0, 2.0 * f2 - 1.0) * (1.0 - high) + 0.6 * high)
        rnd = level * max(0.0, 1.0 - 2.0 * f2) * (1.0 - f1) * (1.0 - high)
        return np.clip(np.array([jaw, spread, rnd], np.float32), 0.0, 1.0)

    def _spectral_cues(self, x: np.ndarray) -> tuple[float, float, float]:
        """F1 height, F2 height and high-band share, each in [0, 1], of a frame ``(n,)``."""
        n = x.size
        nfft = 1 << max(8, (n - 1).bit_length())
        spec = np.abs(np.fft.rfft(x * np.hanning(n).astype(np.float32), nfft)) ** 2
        freqs = np.arange(spec.size) * (self._sr / nfft)

        def band(lo: float, hi: float) -> np.ndarray:
            return (freqs >= lo) & (freqs < hi)

        def centroid(lo: float, hi: float) -> float:
            m = band(lo, hi)
            e = float(spec[m].sum())
            return float((spec[m] * freqs[m]).sum() / e) if e > 0 else (lo + hi) / 2

        c1 = centroid(*F1_BAND)
        c2 = centroid(*F2_BAND)
        high = float(spec[band(*HIGH_BAND)].sum())
        low = float(spec[band(*LOW_BAND)].sum())
        f1 = min(1.0, max(0.0, (c1 - 400.0) / 350.0))
        f2 = min(1.0, max(0.0, (c2 - 1300.0) / 700.0))
        share = high / (high + low) if high + low > 0 else 0.0
        return f1, f2, min(1.0, max(0.0, (share - 0.2) / 0.5))

    def step(self, target: np.ndarray) -> np.ndarray:
        """Advance one frame towards ``target (3,)``; returns the smoothed amplitudes ``(3,)``."""
        rate = np.where(target > self.shape, self._attack, self._release)
        self.shape += rate * (target - self.shape)
        self.talk += self._talk_k * (float(self.shape[0] > 0.1) - self.talk)
        return self.shape.copy()
