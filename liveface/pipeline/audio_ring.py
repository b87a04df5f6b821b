"""A bounded buffer of mono float32 audio addressed by media-clock sample index."""

from __future__ import annotations

import numpy as np


class AudioRing:
    """Holds the most recent ``capacity`` samples of a stream, addressed by absolute sample index.

    Samples before index 0 read as silence; samples that were evicted raise, so a caller can never
    silently use audio it no longer has.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._capacity = capacity
        self._end = 0  # absolute index one past the newest sample

    @property
    def capacity(self) -> int:
        """Samples the ring holds at most."""
        return self._capacity

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (the number of samples ever appended)."""
        return self._end

    @property
    def begin(self) -> int:
        """Oldest absolute index still held."""
        return max(0, self._end - self._capacity)

    def append(self, samples: np.ndarray) -> None:
        """Append mono samples ``(n,)``; the oldest are evicted when full."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = x.shape[0]
        if n == 0:
            return
        if n >= self._capacity:
            x = x[-self._capacity :]
            self._end += n - self._capacity
            n = self._capacity
        pos = self._end % self._capacity
        first = min(n, self._capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self._end += n

    def truncate(self, end: int) -> None:
        """Forget samples at and after ``end`` (used when a client clears queued speech)."""
        if end < self.begin:
            raise ValueError(f"cannot truncate to {end}: samples before {self.begin} are gone")
        self._end = min(self._end, end)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Copy of samples ``[start, stop)`` as float32 ``(stop - start,)``; negative indices are 0.

        Raises:
            IndexError: part of the range was evicted or has not arrived yet.
        """
        if stop < start:
            raise ValueError("stop < start")
        if stop > self._end:
            raise IndexError(f"samples up to {stop} requested, only {self._end} arrived")
        out = np.zeros(stop - start, dtype=np.float32)
        lo = max(start, 0)
        if lo >= stop:
            return out
        if lo < self.begin:
            raise IndexError(f"samples from {lo} requested, oldest held is {self.begin}")
        a, b = lo % self._capacity, (stop - 1) % self._capacity + 1
        dst = out[lo - start :]
        if a < b:
            dst[:] = self._buf[a:b]
        else:
            k = self._capacity - a
            dst[:k] = self._buf[a:]
            dst[k:] = self._buf[:b]
        return out
