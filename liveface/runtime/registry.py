"""The session registry: admission control and the totals that outlive sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from liveface.errors import CapacityError
from liveface.pipeline.output import OutputStats
from liveface.pipeline.stream import StreamStats
from liveface.runtime.metrics import Metrics
from liveface.runtime.session import Session

# Per-session counters exported as process totals: (source, field, metric name, help).
_EXPORTED: list[tuple[str, str, str, str]] = [
    ("out", "frames_out", "liveface_frames_out_total", "Frames played on time"),
    (
        "out",
        "frames_repeated",
        "liveface_frames_repeated_total",
        "Frames due but not ready: the last frame was shown again",
    ),
    (
        "out",
        "frames_late",
        "liveface_frames_late_total",
        "Frames that arrived after their due time and were dropped",
    ),
    (
        "out",
        "frames_overflow",
        "liveface_frames_overflow_total",
        "Frames dropped because a session's output buffer was full",
    ),
    (
        "out",
        "audio_underrun_samples",
        "liveface_audio_underrun_samples_total",
        "Output audio samples due but not ready (played as silence)",
    ),
    ("in", "input_samples", "liveface_input_samples_total", "Input audio samples received"),
    (
        "in",
        "input_dropped_samples",
        "liveface_input_dropped_samples_total",
        "Input samples dropped (stale live audio after a stall, or over a client's queue limit)",
    ),
    (
        "in",
        "silence_filled_samples",
        "liveface_silence_filled_samples_total",
        "Silence inserted while no audio arrived (the avatar idles)",
    ),
]


class SessionRegistry:
    """Holds live sessions up to ``max_sessions``; a reservation is taken before any work.

    Use ``reserve()`` before opening a session (it raises :class:`CapacityError` when full), then
    ``add`` the session, and ``release``/``discard`` when it ends.
    """

    def __init__(self, max_sessions: int, metrics: Metrics) -> None:
        self.max_sessions = max_sessions
        self.metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._reserved = 0
        self._closed_totals: dict[str, float] = {}
        metrics.gauge("liveface_sessions", "Live sessions", lambda: float(len(self._sessions)))
        metrics.gauge("liveface_sessions_max", "Configured session limit", lambda: max_sessions)
        metrics.counter("liveface_sessions_refused_total", "Offers refused at capacity")
        metrics.counter("liveface_sessions_opened_total", "Sessions opened")
        for source, name, metric, help in _EXPORTED:
            metrics.gauge(metric, help, self._total_reader(source, name, metric), kind="counter")

    def _total_reader(self, source: str, name: str, metric: str) -> Callable[[], float]:
        def read() -> float:
            live = sum(self._stat(s, source, name) for s in list(self._sessions.values()))
            return self._closed_totals.get(metric, 0.0) + live

        return read

    @staticmethod
    def _stat(session: Session, source: str, name: str) -> float:
        stats: OutputStats | StreamStats = (
            session.stream.output.stats if source == "out" else session.stream.stats
        )
        return float(getattr(stats, name))

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def reserve(self) -> None:
        """Take a slot or raise :class:`CapacityError`; pair with ``add`` or ``unreserve``."""
        if len(self._sessions) + self._reserved >= self.max_sessions:
            self.metrics.inc("liveface_sessions_refused_total")
            raise CapacityError(
                f"the server is at its limit of {self.max_sessions} session(s); try again later"
            )
        self._reserved += 1

    def unreserve(self) -> None:
        self._reserved = max(0, self._reserved - 1)

    def add(self, session: Session) -> None:
        """Turn a reservation into a live session."""
        self.unreserve()
        self._sessions[session.id] = session
        self.metrics.inc("liveface_sessions_opened_total")

    def discard(self, session: Session) -> None:
        """Forget an ended session, keeping its counters in the process totals."""
        if self._sessions.pop(session.id, None) is None:
            return
        for source, name, metric, _ in _EXPORTED:
            self._closed_totals[metric] = self._closed_totals.get(metric, 0.0) + self._stat(
                session, source, name
            )

    async def aclose_all(self) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.aclose("server_stopping") for s in sessions))
        for s in sessions:
            self.discard(s)
