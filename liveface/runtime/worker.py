"""The EngineWorker: owns an engine on its own thread and runs batches of many sessions' chunks.

The asyncio loop never runs model code: sessions ``submit`` chunks (cheap, under a lock) and get
results back through their :class:`WorkerSink`, whose methods are called on the worker thread and
must hand over to the session's loop themselves (``call_soon_threadsafe``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from liveface.engines.base import AudioChunk, Engine, EngineState, VideoChunk
from liveface.errors import EngineError
from liveface.runtime.degrade import DegradeConfig, DegradePolicy
from liveface.runtime.metrics import DropReason, Metrics, Reading
from liveface.runtime.scheduler import Dropped, Pending, Scheduler

log = logging.getLogger(__name__)


class WorkerSink(Protocol):
    """Where a session receives its results; called on the worker thread."""

    def deliver(self, chunk: VideoChunk) -> None: ...

    def skipped(self, chunk: AudioChunk, reason: DropReason) -> None: ...

    def failed(self, error: BaseException) -> None: ...


class EngineWorker:
    """One per device: a thread, an engine, a scheduler.

    Args:
        engine: the generator; only this thread calls its ``generate``.
        metrics: where batch sizes, engine time and drops are counted.
        max_queued: chunks a session may have waiting (beyond that the oldest is dropped).
        name: the thread's name.
        degrade: the degradation policy's thresholds (see :mod:`liveface.runtime.degrade`).
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        max_queued: int = 4,
        degrade: DegradeConfig | None = None,
        name: str = "engine-worker",
    ) -> None:
        self.engine = engine
        self.name = name
        self.metrics = metrics
        spec = engine.spec
        self._frame_s = 1.0 / spec.fps
        self._expected_s = 0.0  # moving average of one generate call, for the late check
        self._scheduler = Scheduler(spec.max_batch, max_queued)
        self._cond = threading.Condition()
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._sessions: dict[Hashable, tuple[EngineState, WorkerSink]] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self.levels = engine.quality_levels()
        self.policy = DegradePolicy(len(self.levels), degrade)
        metrics.read(Reading.QUALITY_LEVEL, lambda: float(self.policy.level))
        metrics.read(Reading.QUALITY_CHANGES, lambda: float(self.policy.changes))
        metrics.read(Reading.ENGINE_UTILISATION, lambda: self.policy.utilisation(time.monotonic()))

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        """The thread runs (and the engine too, for an engine that can stop on its own)."""
        engine_alive = getattr(self.engine, "alive", True)
        return self._thread is not None and self._thread.is_alive() and bool(engine_alive)

    @property
    def sessions(self) -> int:
        """Sessions registered on this worker (for picking the least loaded one)."""
        with self._cond:
            return len(self._sessions)

    # -- sessions (any thread) -----------------------------------------------------------------

    def register(self, key: Hashable, state: EngineState, sink: WorkerSink) -> None:
        with self._cond:
            self._sessions[key] = (state, sink)
            self._scheduler.add_session(key)

    def unregister(self, key: Hashable) -> concurrent.futures.Future[Any]:
        """Forget the session's queued work and close its engine state on the worker thread."""
        with self._cond:
            entry = self._sessions.pop(key, None)
            self._scheduler.remove_session(key)
        if entry is None:
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            done.set_result(None)
            return done
        return self.call(lambda: self.engine.close(entry[0]))

    def submit(self, key: Hashable, chunk: AudioChunk, deadline: float) -> None:
        with self._cond:
            dropped = self._scheduler.submit(Pending(key, chunk, deadline))
            self._cond.notify()
        self._report(dropped)

    def interrupt(self, key: Hashable, epoch: int) -> None:
        """Drop the session's queued chunks older than ``epoch`` and reset its engine state."""
        with self._cond:
            dropped = self._scheduler.set_epoch(key, epoch)
            entry = self._sessions.get(key)
        self._report(dropped)
        if entry is not None:
            self.call(lambda: self.engine.interrupt(entry[0]))

    def queued(self, key: Hashable) -> int:
        with self._cond:
            return self._scheduler.queued(key)

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on the worker thread between batches; the future holds its result."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            if self._stop or self._thread is None:
                # Worker not running (start-up or shutdown): run inline, nothing else is using it.
                try:
                    fut.set_result(fn())
                except BaseException as e:
                    fut.set_exception(e)
                return fut
            self._calls.append((fn, fut))
            self._cond.notify()
        return fut

    # -- the thread ----------------------------------------------------------------------------

    def _report(self, dropped: list[Dropped]) -> None:
        late = sum(d.reason is DropReason.LATE for d in dropped)
        if late and threading.current_thread() is self._thread:
            self._apply(self.policy.observe_late(time.monotonic(), late))
        for d in dropped:
            self.metrics.dropped(d.reason)
            entry = self._sessions.get(d.pending.session)
            if entry is not None:
                entry[1].skipped(d.pending.chunk, d.reason)

    def _frame_time(self, p: Pending) -> float:
        return p.chunk.num_frames * self._frame_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._calls or self._scheduler.has_work()):
                    self._cond.wait(0.5)
                if self._stop:
                    calls = list(self._calls)
                    self._calls.clear()
                    break
                calls = list(self._calls)
                self._calls.clear()
                batch, dropped = self._scheduler.schedule(
                    time.monotonic(), self._frame_time, self._expected_s
                )
                if not batch and any(d.reason is DropReason.LATE for d in dropped):
                    # Everything was judged too late for the expected engine time, so nothing
                    # runs to correct that estimate: let it fall, or one slow call (a first
                    # chunk, a stall) would starve every session for good.
                    self._expected_s *= 0.5
                items = [(p, self._sessions[p.session]) for p in batch]
            for fn, fut in calls:
                self._run_call(fn, fut)
            self._report(dropped)
            if items:
                try:
                    self._run_batch(items)
                finally:
                    with self._cond:
                        self._scheduler.done(batch)
        for fn, fut in calls:
            self._run_call(fn, fut)

    @staticmethod
    def _run_call(fn: Callable[[], Any], fut: concurrent.futures.Future[Any]) -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    def _apply(self, level: int | None) -> None:
        """Switch the engine's quality (we are on the worker thread, between batches)."""
        if level is None:
            return
        log.warning(
            "engine quality level now %d (%s), utilisation %.2f",
            level,
            self.levels[level],
            self.policy.utilisation(time.monotonic()),
        )
        self.engine.set_quality(level)

    def _run_batch(self, items: list[tuple[Pending, tuple[EngineState, WorkerSink]]]) -> None:
        t0 = time.perf_counter()
        try:
            results = self.engine.generate([(state, p.chunk) for p, (state, _) in items])
        except Exception as e:
            self.metrics.engine_errors.inc()
            if len(items) == 1:
                log.exception("engine failed on a chunk of session %s", items[0][0].session)
                # An EngineError already says what happened (e.g. which pipeline rank died).
                error = e if isinstance(e, EngineError) else None
                items[0][1][1].failed(
                    error or EngineError("the engine failed on this session's audio")
                )
                return
            # Find the culprit(s): run each chunk alone so one session cannot end the others.
            for item in items:
                self._run_batch([item])
            return
        dt = time.perf_counter() - t0
        self._apply(self.policy.observe_batch(time.monotonic(), dt))
        self.metrics.engine_batch_seconds.observe(dt)
        self._expected_s += 0.2 * (dt - self._expected_s)
        self.metrics.engine_batch_size.observe(len(items))
        self.metrics.chunks_rendered.inc(len(items))
        for (_, (_, sink)), result in zip(items, results, strict=True):
            if result.info.engine_ms is None:
                result.info.engine_ms = dt * 1000.0
            sink.deliver(result)
