"""Graceful degradation: when the engine cannot keep real time, lower its quality instead of
stalling; raise it again when there is room. Plain Python, no model (CONVENTIONS #5).

The signal is the EngineWorker's utilisation: the fraction of wall time spent inside
``engine.generate`` over a sliding window, plus chunks dropped for lateness. Utilisation above
``high`` (a real-time factor above 1 once scheduling overhead is counted) or any late drop steps one
level down ``engine.quality_levels()``; utilisation below ``low`` for a whole window steps one level
back up. A change is held for ``hold_s`` before the next one, so the policy does not oscillate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class DegradeConfig:
    high: float = 0.9
    low: float = 0.55
    window_s: float = 2.0
    hold_s: float = 3.0
    retry_s: float = 30.0


class DegradePolicy:
    """Decides the quality level from engine busy time; ``level`` 0 is the best."""

    def __init__(self, levels: int, config: DegradeConfig | None = None) -> None:
        if levels < 1:
            raise ValueError("an engine has at least one quality level")
        self.levels = levels
        self.config = config or DegradeConfig()
        self.level = 0
        self._busy: deque[tuple[float, float]] = deque()  # (end time, busy seconds)
        self._late: deque[float] = deque()
        self._changed_at: float | None = None
        self._started: float | None = None
        self._retry_at: dict[int, float] = {}  # level -> time before which it is not retried
        self._backoff: dict[int, float] = {}
        self.changes = 0

    def utilisation(self, now: float) -> float:
        """Busy fraction of the last window (of the time since the first observation if less)."""
        self._trim(now)
        if self._started is None:
            return 0.0
        span = min(self.config.window_s, max(now - self._started, 1e-6))
        return min(1.0, sum(b for _, b in self._busy) / span)

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._busy and self._busy[0][0] < horizon:
            self._busy.popleft()
        while self._late and self._late[0] < horizon:
            self._late.popleft()

    def observe_batch(self, now: float, busy_s: float) -> int | None:
        """A generate call ending at ``now`` took ``busy_s``; returns a new level or None."""
        if self._started is None:
            self._started = now - busy_s
        self._busy.append((now, busy_s))
        return self._decide(now)

    def observe_late(self, now: float, count: int = 1) -> int | None:
        """``count`` chunks were dropped because they would have been late."""
        self._late.extend([now] * count)
        return self._decide(now)

    def _decide(self, now: float) -> int | None:
        if self._changed_at is not None and now - self._changed_at < self.config.hold_s:
            return None
        if self._started is None or now - self._started < self.config.window_s:
            return None  # not enough history yet
        u = self.utilisation(now)
        if (u > self.config.high or self._late) and self.level < self.levels - 1:
            backoff = self._backoff.get(self.level, self.config.retry_s / 2) * 2
            self._backoff[self.level] = backoff
            self._retry_at[self.level] = now + backoff
            return self._set(self.level + 1, now)
        better = self.level - 1
        if (
            u < self.config.low
            and not self._late
            and better >= 0
            and now >= self._retry_at.get(better, 0.0)
        ):
            return self._set(better, now)
        return None

    def _set(self, level: int, now: float) -> int:
        self.level = level
        self._changed_at = now
        # The window described the old level; start measuring the new one afresh.
        self._busy.clear()
        self._late.clear()
        self._started = now
        self.changes += 1
        return level
