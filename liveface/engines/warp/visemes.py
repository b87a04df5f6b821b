"""Mouth shapes from the sound of one video frame: formants, band shares, lip closure.

Per frame, one FFT of the frame's samples gives the power spectrum. From it:

* the formants F1 and F2, read as the first two peaks of an LPC envelope. The autocorrelation of
  the spectrum limited to 0-4 kHz, taken at every other lag, is that of the same sound sampled at
  8 kHz, where an order-10 all-pole model resolves the first three or four formants;
* the share of energy under 400 Hz (a nasal murmur or the voice bar of a closed "b" has almost
  nothing above it) and over 3 kHz (fricatives).

Phonetics then maps them to mouth shapes: F1 rises with the jaw's opening (about 300 Hz for
"ee"/"oo", 750 Hz and more for "ah"); a high F2 means a front, spread vowel ("ee", "ay"), a low F2
with a low F1 a rounded one ("oo", "oh"); a frame that is mostly murmur under 400 Hz, with a low F1
and clearly quieter than the talker's recent vowels, is the lips closed on "m" or the voice bar of
"b"; 10 ms of near silence inside the frame is the closure of a stop ("p", "b", also "t", "k":
without lookahead the burst that tells them apart has not been heard yet, and the jaw is nearly
closed for all of them), which lasts a frame or less and would be lost in the frame's mean level.
The thresholds are set for an adult male voice; a running mean of the talker's F3 rescales F1 and
F2 first, since all formants rise together in a shorter vocal tract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Order of the all-pole model at the 8 kHz analysis rate (2 + rate in kHz, the usual choice).
LPC_ORDER = 10
#: Pre-emphasis at the 8 kHz rate, so the model does not spend its poles on the spectral tilt.
PRE_EMPHASIS = 0.9
#: Gaussian lag window (Hz): widens the model's peaks a little so that a high voice's harmonics
#: are not taken for formants.
LAG_WINDOW_HZ = 50.0
#: Where F1 and F2 are looked for (Hz), and how far above F1 F2 must lie.
F1_RANGE = (180.0, 1100.0)
F2_MAX = 3200.0
F2_MIN_SEPARATION = 150.0
#: Typical F3 (Hz) of the adult male voice the thresholds below are set for; a talker's own F3,
#: followed by a slow running mean over voiced frames (this share per frame), rescales the
#: formants within these bounds.
REFERENCE_F3 = 2450.0
F3_RANGE = (1800.0, 3900.0)
F3_RATE = 0.03
#: Only frames this close to the talker's peak (dB), not murmurs, teach the talker's F3.
F3_MAX_DIP_DB = 15.0
MIN_SCALE, MAX_SCALE = 0.8, 1.15
#: F1 of a closed and of a fully open jaw (Hz), for an adult male vocal tract.
F1_CLOSED, F1_OPEN = 300.0, 750.0
#: F2 over which a vowel is spread, and its span to fully spread (Hz).
F2_SPREAD, F2_SPREAD_SPAN = 1750.0, 400.0
#: F2 under which, and F1 under which, a vowel is rounded (Hz), with their spans.
F2_ROUND, F2_ROUND_SPAN = 1850.0, 450.0
F1_ROUND, F1_ROUND_SPAN = 650.0, 250.0
#: Closure cues: energy share under 400 Hz, F1 ceiling (Hz) and level under the talker's peak (dB).
MURMUR_SHARE, MURMUR_SHARE_SPAN = 0.6, 0.12
MURMUR_F1, MURMUR_F1_SPAN = 380.0, 80.0
MURMUR_DIP_DB, MURMUR_DIP_SPAN_DB = 5.0, 5.0
#: A stop's closure: some 10 ms of the frame this far under the talker's peak (dB) is silence.
STOP_BLOCK_S = 0.01
STOP_DIP_DB, STOP_DIP_SPAN_DB = 25.0, 10.0
#: ...unless the frame ends within this much of the peak (dB): then the silence was an onset's.
ONSET_DIP_DB, ONSET_DIP_SPAN_DB = 12.0, 8.0
#: Share of energy over 3 kHz from which a frame is a fricative, and its span to fully one.
HIGH_SHARE, HIGH_SHARE_SPAN = 0.2, 0.5


@dataclass(frozen=True)
class Cues:
    """What the sound of one frame says about the mouth, each in [0, 1].

    Attributes:
        openness: how far the jaw is open for this sound (from F1).
        spread: lips spread ("ee").
        rounding: lips rounded and pushed forward ("oo").
        closure: lips closed: a bilabial murmur ("m", the voice bar of "b") or a stop's silence.
        high: share of fricative noise (teeth close, lips a little spread).
    """

    openness: float
    spread: float
    rounding: float
    closure: float
    high: float


def _ramp(x: float, start: float, span: float) -> float:
    """0 at ``start``, 1 at ``start + span`` (a negative span ramps down), clipped."""
    return min(1.0, max(0.0, (x - start) / span))


class SpectralAnalyzer:
    """Formants and band shares of one talker's frames (keeps the talker's F3; one per session).

    Args:
        sample_rate: audio rate (Hz), at least 8 kHz.
    """

    def __init__(self, sample_rate: int) -> None:
        self._sr = sample_rate
        lag = 2.0 * np.pi * LAG_WINDOW_HZ * np.arange(LPC_ORDER + 1) / 8000.0
        self._lag_window = np.exp(-0.5 * lag**2)
        self._f3_log = math.log(REFERENCE_F3)
        self._plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._env_freqs = np.arange(257) * (4000.0 / 256)  # bins of a 512-point rfft at 8 kHz

    def _plan(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Window ``(n,)``, LPC weights, low- and high-band masks of the ``(nfft/2 + 1,)`` bins."""
        plan = self._plans.get(n)
        if plan is None:
            nfft = 1 << max(8, (n - 1).bit_length())
            freqs = np.arange(nfft // 2 + 1) * (self._sr / nfft)
            w = np.abs(1.0 - PRE_EMPHASIS * np.exp(-2j * np.pi * freqs / 8000.0)) ** 2
            w[freqs > 4000.0] = 0.0
            plan = (
                np.hanning(n).astype(np.float32),
                w.astype(np.float64),
                (freqs >= 80.0) & (freqs < 400.0),
                freqs >= 3000.0,
            )
            if len(self._plans) < 16:  # a few frame lengths occur; keep the cache bounded
                self._plans[n] = plan
        return plan

    def cues(self, x: np.ndarray, peak_db: float) -> Cues:
        """Mouth cues of one frame's samples ``x (n,)``; ``peak_db``: the talker's peak level."""
        n = x.size
        if n < 32:
            return Cues(0.5, 0.0, 0.0, 0.0, 0.0)
        window, lpc_weight, low_band, high_band = self._plan(n)
        nfft = 2 * (lpc_weight.size - 1)
        power = np.abs(np.fft.rfft(x * window, nfft)) ** 2
        total = float(power[1:].sum())
        if total <= 0.0:
            return Cues(0.5, 0.0, 0.0, 0.0, 0.0)
        low = float(power[low_band].sum()) / total
        high = float(power[high_band].sum()) / total
        db = 10.0 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-12)
        f1, f2, f3 = self._formants(power * lpc_weight)
        voiced = low < MURMUR_SHARE and peak_db - db < F3_MAX_DIP_DB
        if voiced and F3_RANGE[0] <= f3 <= F3_RANGE[1]:
            self._f3_log += F3_RATE * (math.log(f3) - self._f3_log)
        # Formants scale with the length of the vocal tract: a voice whose F3 runs high (a woman's,
        # a child's) has every formant higher for the same mouth.
        scale = min(MAX_SCALE, max(MIN_SCALE, math.exp(math.log(REFERENCE_F3) - self._f3_log)))
        f1, f2 = f1 * scale, f2 * scale
        openness = 0.5 if math.isnan(f1) else _ramp(f1, F1_CLOSED, F1_OPEN - F1_CLOSED)
        spread = rounding = 0.0
        if not math.isnan(f2):
            spread = _ramp(f2, F2_SPREAD, F2_SPREAD_SPAN) * (1.0 - 0.5 * openness)
            rounding = _ramp(f2, F2_ROUND, -F2_ROUND_SPAN) * _ramp(f1, F1_ROUND, -F1_ROUND_SPAN)
        closure = self._stop(x, peak_db)
        if not math.isnan(f1):
            murmur = (
                _ramp(low, MURMUR_SHARE, MURMUR_SHARE_SPAN)
                * _ramp(f1, MURMUR_F1, -MURMUR_F1_SPAN)
                * _ramp(peak_db - db, MURMUR_DIP_DB, MURMUR_DIP_SPAN_DB)
            )
            closure = max(closure, murmur)
        return Cues(openness, spread, rounding, closure, _ramp(high, HIGH_SHARE, HIGH_SHARE_SPAN))

    def _stop(self, x: np.ndarray, peak_db: float) -> float:
        """How surely ``x (n,)`` holds a stop's silent closure: its quietest 10 ms against the peak.

        Silence early in a frame that ends loud is an onset, the mouth opening, not a closure.
        """
        block = max(1, int(STOP_BLOCK_S * self._sr))
        k = x.size // block
        if k < 2:
            return 0.0
        energy = np.square(x[-k * block :].reshape(k, block), dtype=np.float64).mean(axis=1)
        level = 10.0 * np.log10(energy + 1e-12)
        quietest = int(np.argmin(level))
        cue = _ramp(peak_db - float(level[quietest]), STOP_DIP_DB, STOP_DIP_SPAN_DB)
        if quietest < k // 2:
            cue *= _ramp(peak_db - float(level[-1]), ONSET_DIP_DB, ONSET_DIP_SPAN_DB)
        return cue

    def _formants(self, weighted: np.ndarray) -> tuple[float, float, float]:
        """F1, F2, F3 (Hz, NaN when absent) from a pre-emphasised, 0-4 kHz power spectrum."""
        nan = math.nan
        # Autocorrelation of the band-limited sound; every other lag is that of the 8 kHz sound.
        r = np.fft.irfft(weighted)[: 2 * LPC_ORDER + 1 : 2]
        if r[0] <= 0.0:
            return nan, nan, nan
        a = _levinson(r * self._lag_window, LPC_ORDER)
        envelope = -np.abs(np.fft.rfft(a, 512))  # peaks of 1/|A| are minima of |A|
        f = self._env_freqs
        peak = (envelope[1:-1] > envelope[:-2]) & (envelope[1:-1] >= envelope[2:])
        peaks = f[1:-1][peak]
        f1s = peaks[(peaks >= F1_RANGE[0]) & (peaks <= F1_RANGE[1])]
        if f1s.size == 0:
            return nan, nan, nan
        f1 = float(f1s[0])
        f2s = peaks[(peaks >= f1 + F2_MIN_SEPARATION) & (peaks <= F2_MAX)]
        if f2s.size == 0:
            return f1, nan, nan
        f3s = peaks[peaks >= f2s[0] + F2_MIN_SEPARATION]
        return f1, float(f2s[0]), float(f3s[0]) if f3s.size else nan


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """Prediction polynomial ``(order + 1,)`` (``a[0] = 1``) from autocorrelation ``r``."""
    a = np.zeros(order + 1)
    a[0] = 1.0
    err = float(r[0]) * (1.0 + 1e-9)
    for i in range(1, order + 1):
        k = -float(r[i] + a[1:i] @ r[i - 1 : 0 : -1]) / err
        a[1 : i + 1] = a[1 : i + 1] + k * a[i - 1 :: -1][:i]
        err *= 1.0 - k * k
        if err <= 0.0:
            break
    return a
