"""Process metrics in the Prometheus text format (no dependency), plus per-session summaries.

Counters only go up; gauges are read at scrape time from callables; summaries keep a bounded
reservoir of recent observations and report quantiles. Wall-clock time is used here and only here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import numpy as np


class Summary:
    """Recent observations (bounded) with quantiles; thread-safe."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._values.append(value)
            self._count += 1
            self._sum += value

    def quantile(self, q: float) -> float:
        with self._lock:
            if not self._values:
                return float("nan")
            return float(np.quantile(np.fromiter(self._values, float), q))

    @property
    def count(self) -> int:
        return self._count

    @property
    def total(self) -> float:
        return self._sum


class Metrics:
    """A registry of named counters, gauges and summaries.

    Names follow Prometheus conventions (``liveface_frames_repeated_total``); each has a help text.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._summaries: dict[str, Summary] = {}
        self._help: dict[str, str] = {}

    def counter(self, name: str, help: str) -> None:
        with self._lock:
            self._counters.setdefault(name, 0.0)
            self._help[name] = help

    def inc(self, name: str, value: float = 1.0) -> None:
        if value:
            with self._lock:
                self._counters[name] = self._counters.get(name, 0.0) + value

    def value(self, name: str) -> float:
        with self._lock:
            return self._counters.get(name, 0.0)

    def gauge(self, name: str, help: str, read: Callable[[], float], kind: str = "gauge") -> None:
        """A value read at scrape time; ``kind="counter"`` for a total computed on read."""
        with self._lock:
            self._gauges[name] = (kind, read)
            self._help[name] = help

    def summary(self, name: str, help: str) -> Summary:
        with self._lock:
            if name not in self._summaries:
                self._summaries[name] = Summary()
                self._help[name] = help
            return self._summaries[name]

    def render(self) -> str:
        """The Prometheus text exposition of everything registered."""
        lines: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            summaries = dict(self._summaries)
            helps = dict(self._help)
        for name, value in sorted(counters.items()):
            lines += [f"# HELP {name} {helps.get(name, name)}", f"# TYPE {name} counter"]
            lines.append(f"{name} {value:g}")
        for name, (kind, read) in sorted(gauges.items()):
            lines += [f"# HELP {name} {helps[name]}", f"# TYPE {name} {kind}"]
            lines.append(f"{name} {read():g}")
        for name, s in sorted(summaries.items()):
            lines += [f"# HELP {name} {helps[name]}", f"# TYPE {name} summary"]
            for q in (0.5, 0.95, 0.99):
                lines.append(f'{name}{{quantile="{q}"}} {s.quantile(q):g}')
            lines.append(f"{name}_sum {s.total:g}")
            lines.append(f"{name}_count {s.count}")
        return "\n".join(lines) + "\n"
