"""A streaming polyphase resampler with a short, fixed delay.

General-purpose libraries (soxr in its medium quality, for one) release output in bursts - 0 samples
for one 20 ms packet, twice as many for the next - which adds a packet of latency and jitter to a
live microphone. This one emits, for every input block, every output sample that the input so far
determines, with a group delay of ``taps_per_phase / 2`` input samples (0.3 ms at 48 kHz).

Output sample ``m`` sits at input time ``m * down / up``; with ``p = (m * down) % up`` and
``i = (m * down) // up`` it is ``y[m] = sum_j E[p, j] * x[i - j]`` where ``E[p] = h[p::up]`` is the
polyphase bank of a Kaiser-windowed low-pass ``h`` designed at the up-sampled rate.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from liveface.errors import AudioFormatError

MIN_RATE, MAX_RATE = 8000, 192000


def kaiser_lowpass(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """A windowed-sinc low-pass FIR ``(taps,)`` with unit gain at DC: ``cutoff`` is a fraction of
    the Nyquist frequency, the window a Kaiser window of shape ``beta`` (the classic design, e.g.
    ``scipy.signal.firwin(taps, cutoff, window=("kaiser", beta))``, without importing scipy's
    signal package, which takes seconds to load)."""
    n = np.arange(taps) - (taps - 1) / 2.0
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, beta)
    return h / h.sum()


class StreamingResampler:
    """Mono float32 rate conversion, block by block, with the same output for any block split.

    Args:
        in_rate, out_rate: sample rates (Hz).
        taps_per_phase: filter length per polyphase branch; longer is sharper and later.
    """

    def __init__(self, in_rate: int, out_rate: int, taps_per_phase: int = 16) -> None:
        for name, rate in (("input", in_rate), ("output", out_rate)):
            if not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
                raise AudioFormatError(
                    f"{name} sample rate {rate!r} Hz is out of range {MIN_RATE}..{MAX_RATE}"
                )
        self.in_rate, self.out_rate = in_rate, out_rate
        g = gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        self.taps = taps_per_phase
        self._bank = self._design() if self.up != self.down else None
        self._hist = np.zeros(self.taps - 1, np.float32)  # the last inputs before ``_base``
        self._buf = np.zeros(0, np.float32)
        self._base = 0  # absolute input index of ``_buf[0]``
        self._next_out = 0  # absolute index of the next output sample
        self._total_in = 0

    def _design(self) -> np.ndarray:
        up, down, t = self.up, self.down, self.taps
        cutoff = 0.95 / max(up, down)  # of Nyquist at the up-sampled rate; a little guard band
        h = kaiser_lowpass(up * t, cutoff, beta=7.0) * up
        bank = np.zeros((up, t), np.float32)
        for p in range(up):
            branch = h[p::up]
            bank[p, : branch.shape[0]] = branch
        return bank

    @property
    def delay_in(self) -> float:
        """Group delay in input samples."""
        return 0.0 if self._bank is None else (self.up * self.taps - 1) / (2 * self.up)

    def push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Convert the next block ``(n,)``; returns every output sample it makes available.

        ``last=True`` ends the stream: the filter's tail is flushed so that the total output is
        ``round(total_input * out_rate / in_rate)`` samples.
        """
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        if self._bank is None:
            return x
        self._total_in += x.shape[0]
        if last:
            want = round(self._total_in * self.up / self.down) - self._next_out
            y = self._convert(np.concatenate([x, np.zeros(self.taps, np.float32)]))
            return y[: max(0, want)]
        return self._convert(x)

    def _convert(self, x: np.ndarray) -> np.ndarray:
        assert self._bank is not None
        self._buf = np.concatenate([self._buf, x])
        have = self._base + self._buf.shape[0]  # inputs [0, have) are known
        # Output m needs input i = (m * down) // up, so it is ready while i < have.
        last = (have * self.up - 1) // self.down  # the largest m with m * down < have * up
        m = np.arange(self._next_out, last + 1, dtype=np.int64)
        if m.size == 0:
            return np.zeros(0, np.float32)
        pos = m * self.down
        phase, i = pos % self.up, pos // self.up
        data = np.concatenate([self._hist, self._buf])  # data[k] is input base - (taps-1) + k
        idx = (i - self._base + self.taps - 1)[:, None] - np.arange(self.taps)[None, :]
        y = np.einsum("nt,nt->n", data[idx], self._bank[phase]).astype(np.float32)
        self._next_out = int(last) + 1
        # Keep only what future outputs can still reach.
        keep_from = self._next_out * self.down // self.up  # first input index still needed
        drop = max(0, min(keep_from - self._base, self._buf.shape[0]))
        if drop:
            self._hist = data[drop : drop + self.taps - 1].copy()
            self._buf = self._buf[drop:]
            self._base += drop
        return y
