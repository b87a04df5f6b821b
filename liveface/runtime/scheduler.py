"""Which chunks run now: batching across sessions, deadlines, drops. Plain Python, no model.

The EngineWorker asks :meth:`Scheduler.schedule` for a batch, runs it, and reports back. Rules:
- at most one chunk per session per batch (a session's chunks depend on each other in order);
- earliest deadline first across sessions, up to the engine's ``max_batch``;
- a session's queue is bounded: when it is full the oldest chunk is dropped (its audio still plays);
- a chunk whose deadline has already passed is dropped instead of computed (the pacer would
  discard its frames anyway), so a slow engine degrades to repeated frames, never to lag;
- chunks of an epoch older than the session's current one (after a barge-in) are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from liveface.engines.base import AudioChunk
from liveface.runtime.metrics import DropReason


@dataclass
class Pending:
    """A chunk waiting for the engine. ``deadline`` is the wall time its first frame is due."""

    session: Hashable
    chunk: AudioChunk
    deadline: float


@dataclass
class _Queue:
    items: deque[Pending] = field(default_factory=deque)
    epoch: int = 0


@dataclass
class Dropped:
    """A chunk that will not run, and why."""

    pending: Pending
    reason: DropReason


class Scheduler:
    """Per-session bounded queues and the batch choice. Not thread-safe: the caller locks."""

    def __init__(self, max_batch: int, max_queued: int, late_slack: float = 0.0) -> None:
        if max_batch < 1 or max_queued < 1:
            raise ValueError("max_batch and max_queued must be >= 1")
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.late_slack = late_slack
        self._queues: dict[Hashable, _Queue] = {}
        self._running: set[Hashable] = set()

    def add_session(self, session: Hashable) -> None:
        self._queues.setdefault(session, _Queue())

    def remove_session(self, session: Hashable) -> list[Pending]:
        q = self._queues.pop(session, None)
        return list(q.items) if q else []

    def set_epoch(self, session: Hashable, epoch: int) -> list[Dropped]:
        """Start a new epoch for ``session``; its older queued chunks are dropped as stale."""
        q = self._queues.get(session)
        if q is None:
            return []
        q.epoch = epoch
        stale = [Dropped(p, DropReason.STALE) for p in q.items if p.chunk.epoch < epoch]
        q.items = deque(p for p in q.items if p.chunk.epoch >= epoch)
        return stale

    def submit(self, pending: Pending) -> list[Dropped]:
        """Queue a chunk; returns what had to be dropped to make room (or the chunk itself)."""
        q = self._queues.get(pending.session)
        if q is None or pending.chunk.epoch < q.epoch:
            return [Dropped(pending, DropReason.STALE)]
        q.items.append(pending)
        dropped = []
        while len(q.items) > self.max_queued:
            dropped.append(Dropped(q.items.popleft(), DropReason.FULL))
        return dropped

    def has_work(self) -> bool:
        return any(q.items for s, q in self._queues.items() if s not in self._running)

    def queued(self, session: Hashable) -> int:
        q = self._queues.get(session)
        return len(q.items) if q else 0

    def schedule(
        self, now: float, frame_time: Callable[[Pending], float], expected: float = 0.0
    ) -> tuple[list[Pending], list[Dropped]]:
        """Choose the next batch.

        Args:
            now: wall time.
            frame_time: duration (s) of a chunk's frames; a chunk is late when even its last
                frame would be due before it can be ready, at ``now + expected``.
            expected: how long the engine is expected to take for this batch. Counting it
                keeps an overloaded engine from spending its time on chunks whose frames would
                arrive too late to be shown, which would starve every session at once.

        Returns:
            ``(batch, dropped)``; the batch's sessions are marked running until :meth:`done`.
        """
        dropped: list[Dropped] = []
        heads: list[Pending] = []
        for session, q in self._queues.items():
            if session in self._running:
                continue
            while q.items:
                p = q.items[0]
                if p.deadline + frame_time(p) + self.late_slack < now + expected:
                    dropped.append(Dropped(q.items.popleft(), DropReason.LATE))
                    continue
                heads.append(p)
                break
        heads.sort(key=lambda p: p.deadline)
        batch = heads[: self.max_batch]
        for p in batch:
            self._queues[p.session].items.popleft()
            self._running.add(p.session)
        return batch, dropped

    def done(self, batch: list[Pending]) -> None:
        for p in batch:
            self._running.discard(p.session)
