"""Process metrics through ``prometheus_client``: every metric is declared here, once, as an object.

Code never names a metric with a string: it increments :class:`Metrics` attributes
(``metrics.chunks_rendered.inc()``), drops by :class:`DropReason`, and registers scrape-time
readers by :class:`Reading`, so a misspelt name fails at import or in mypy. Wall-clock time is used
for metrics and nowhere else.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class DropReason(enum.Enum):
    """Why a chunk was not rendered (its audio still plays)."""

    FULL = "full"  # the session's queue was full: the oldest chunk made room
    LATE = "late"  # its frames would have been due before the engine could finish them
    STALE = "stale"  # it belonged to speech cleared by a barge-in


class Kind(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"  # a total computed when read (e.g. live sessions plus closed ones)


class Combine(enum.Enum):
    """How the values of several owners of one reading (e.g. engine workers) combine."""

    SUM = "sum"
    MAX = "max"
    MEAN = "mean"


class Reading(enum.Enum):
    """Values read from their owners when scraped: (name, help, kind, how owners combine)."""

    SESSIONS = ("liveface_sessions", "Live sessions", Kind.GAUGE, Combine.SUM)
    SESSIONS_MAX = ("liveface_sessions_max", "Configured session limit", Kind.GAUGE, Combine.SUM)
    QUALITY_LEVEL = (
        "liveface_quality_level",
        "Engine quality level in use, worst over engine workers (0 is the best; higher means "
        "degraded to keep real time)",
        Kind.GAUGE,
        Combine.MAX,
    )
    QUALITY_CHANGES = (
        "liveface_quality_changes", "Quality level changes", Kind.COUNTER, Combine.SUM,
    )  # fmt: skip
    ENGINE_UTILISATION = (
        "liveface_engine_utilisation",
        "Fraction of recent wall time the engines spent generating (mean over engine workers)",
        Kind.GAUGE,
        Combine.MEAN,
    )
    ZMQ_CLIENTS = ("liveface_zmq_clients", "ZeroMQ clients seen recently", Kind.GAUGE, Combine.SUM)
    ZMQ_FRAMES_DROPPED = (
        "liveface_zmq_frames_dropped",
        "Frames dropped because a ZeroMQ client read too slowly",
        Kind.COUNTER,
        Combine.SUM,
    )

    def __init__(self, metric: str, help: str, kind: Kind, combine: Combine) -> None:
        self.metric = metric
        self.help = help
        self.kind = kind
        self.combine = combine

    def reduce(self, values: list[float]) -> float:
        if self.combine is Combine.MAX:
            return max(values)
        total = float(sum(values))
        return total / len(values) if self.combine is Combine.MEAN else total


class SessionCounter(enum.Enum):
    """Per-session counters, exported as process totals (live sessions plus closed ones)."""

    FRAMES_OUT = ("liveface_frames_out", "Frames played on time")
    FRAMES_REPEATED = (
        "liveface_frames_repeated",
        "Frames due but not ready: the last frame was shown again",
    )
    FRAMES_LATE = (
        "liveface_frames_late",
        "Frames that arrived after their due time and were dropped",
    )
    FRAMES_OVERFLOW = (
        "liveface_frames_overflow",
        "Frames dropped because a session's output buffer was full",
    )
    AUDIO_UNDERRUN_SAMPLES = (
        "liveface_audio_underrun_samples",
        "Output audio samples due but not ready (played as silence)",
    )
    INPUT_SAMPLES = ("liveface_input_samples", "Input audio samples received")
    INPUT_DROPPED_SAMPLES = (
        "liveface_input_dropped_samples",
        "Input samples dropped (stale live audio after a stall, duplicates, over a client's queue "
        "limit)",
    )
    INPUT_CONCEALED_SAMPLES = (
        "liveface_input_concealed_samples",
        "Input samples concealed with silence where timestamps showed lost packets",
    )
    SILENCE_FILLED_SAMPLES = (
        "liveface_silence_filled_samples",
        "Silence inserted while no audio arrived (the avatar idles)",
    )
    CHUNKS_SKIPPED = (
        "liveface_session_chunks_skipped",
        "Chunks a session did not get rendered (dropped by the scheduler)",
    )

    def __init__(self, metric: str, help: str) -> None:
        self.metric = metric
        self.help = help


class _Readers(Collector):
    """Scrape-time values from their owners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.readers: dict[Reading, list[Callable[[], float]]] = {}
        self.sessions: Callable[[], dict[SessionCounter, float]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            readers = {r: list(fns) for r, fns in self.readers.items()}
            sessions = self.sessions
        for reading, reads in readers.items():
            family = GaugeMetricFamily if reading.kind is Kind.GAUGE else CounterMetricFamily
            value = reading.reduce([float(read()) for read in reads])
            yield family(reading.metric, reading.help, value=value)
        if sessions is not None:
            totals = sessions()
            for counter in SessionCounter:
                yield CounterMetricFamily(counter.metric, counter.help, value=totals[counter])

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are known up front; nothing to read at registration


class Metrics:
    """The process's metrics registry (one per :class:`~liveface.runtime.runtime.Runtime`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.chunks_rendered = Counter(
            "liveface_chunks_rendered", "Chunks rendered by the engine", registry=r
        )
        self.chunks_dropped = Counter(
            "liveface_chunks_dropped",
            "Chunks not rendered (their audio still plays), by reason",
            ["reason"],
            registry=r,
        )
        for reason in DropReason:
            self.chunks_dropped.labels(reason.value)
        self.engine_errors = Counter(
            "liveface_engine_errors", "Engine calls that raised", registry=r
        )
        self.engine_batch_seconds = Histogram(
            "liveface_engine_batch_seconds",
            "Wall time of one engine generate call",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
            registry=r,
        )
        self.engine_batch_size = Histogram(
            "liveface_engine_batch_size",
            "Chunks per engine call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16),
            registry=r,
        )
        self.sessions_opened = Counter("liveface_sessions_opened", "Sessions opened", registry=r)
        self.sessions_refused = Counter(
            "liveface_sessions_refused", "Offers refused at capacity", registry=r
        )
        self.zmq_messages = Counter("liveface_zmq_messages", "ZeroMQ messages received", registry=r)
        self.zmq_bad_messages = Counter(
            "liveface_zmq_bad_messages", "ZeroMQ messages refused as malformed", registry=r
        )
        self.zmq_clients_timed_out = Counter(
            "liveface_zmq_clients_timed_out", "ZeroMQ clients gone silent", registry=r
        )
        self._readers = _Readers()
        r.register(self._readers)

    def dropped(self, reason: DropReason, count: int = 1) -> None:
        self.chunks_dropped.labels(reason.value).inc(count)

    def read(self, reading: Reading, read: Callable[[], float]) -> None:
        """Report ``read()`` as ``reading`` at every scrape (the owner keeps the value); several
        owners of one reading combine as the reading says."""
        with self._readers._lock:
            self._readers.readers.setdefault(reading, []).append(read)

    def read_sessions(self, totals: Callable[[], dict[SessionCounter, float]]) -> None:
        """Report the per-session counters' process totals at every scrape."""
        with self._readers._lock:
            self._readers.sessions = totals

    def sample(self, name: str, **labels: str) -> float:
        """The current value of one exposed sample (``..._total`` for counters); 0 if absent."""
        value = self.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else float(value)

    def render(self) -> str:
        """The Prometheus text exposition."""
        return generate_latest(self.registry).decode()
