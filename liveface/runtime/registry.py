"""The session registry: admission control and the totals that outlive sessions."""

from __future__ import annotations

import asyncio

from liveface.errors import CapacityError
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import Metrics, Reading, SessionCounter
from liveface.runtime.session import Session


class SessionRegistry:
    """Holds live sessions up to ``max_sessions``; a reservation is taken before any work.

    ``reserve()`` before opening a session (it raises :class:`CapacityError` when full), then
    ``add`` the session, and ``discard`` it when it ends (``unreserve`` if opening failed).
    """

    def __init__(self, max_sessions: int, metrics: Metrics) -> None:
        self.max_sessions = max_sessions
        self.metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._reserved = 0
        self._closed_totals = dict.fromkeys(SessionCounter, 0.0)
        metrics.read(Reading.SESSIONS, lambda: float(len(self._sessions)))
        metrics.read(Reading.SESSIONS_MAX, lambda: float(max_sessions))
        metrics.read_sessions(self.totals)

    def totals(self) -> dict[SessionCounter, float]:
        """Every per-session counter summed over live and closed sessions."""
        out = dict(self._closed_totals)
        for session in list(self._sessions.values()):
            for counter, value in session.counters().items():
                out[counter] += value
        return out

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def reserve(self) -> None:
        """Take a slot or raise :class:`CapacityError`; pair with ``add`` or ``unreserve``."""
        if len(self._sessions) + self._reserved >= self.max_sessions:
            self.metrics.sessions_refused.inc()
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
        self.metrics.sessions_opened.inc()

    def discard(self, session: Session) -> None:
        """Forget an ended session, keeping its counters in the process totals."""
        if self._sessions.pop(session.id, None) is None:
            return
        for counter, value in session.counters().items():
            self._closed_totals[counter] += value

    async def aclose_all(self) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.aclose(CloseReason.SERVER_STOPPING) for s in sessions))
        for s in sessions:
            self.discard(s)
