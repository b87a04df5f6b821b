"""A Session: one conversation, from open to aclose, independent of the transport.

The transport pushes audio (already mono float at the engine's rate) and pulls frames and audio
from ``session.stream.output`` on the media clock; the session cuts chunks, hands them to the
EngineWorker and stores what comes back. Everything here runs on the asyncio loop except the sink
methods, which the worker thread calls and which hop to the loop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liveface.engines.base import AudioChunk, EngineState, VideoChunk
from liveface.errors import SessionClosedError
from liveface.pipeline.segments import PlaybackEvent
from liveface.pipeline.stream import StreamConfig, StreamPipeline
from liveface.runtime.tasks import TaskSet
from liveface.runtime.worker import EngineWorker

log = logging.getLogger(__name__)

_ids = itertools.count(1)
#: How often a session looks at the clock when no audio arrives (silence fill, paced release).
TICK_S = 0.02


@dataclass
class SessionOptions:
    """What a client asks for when it opens a session."""

    portrait: np.ndarray | None = None
    prompt: str | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SessionEvent:
    """Something the transport may forward: playback events, errors, the end."""

    kind: str  # "playback_started" | "playback_finished" | "error" | "closed"
    data: dict[str, Any] = field(default_factory=dict)


class Session:
    """One conversation. Create, ``await start(options)``, push audio, ``await aclose()``.

    Args:
        worker: the EngineWorker that owns the engine.
        stream_config: pipeline settings of this transport (live microphone or pushed audio).
        on_event: called on the loop with :class:`SessionEvent` s.
    """

    def __init__(
        self,
        worker: EngineWorker,
        stream_config: StreamConfig,
        on_event: Callable[[SessionEvent], None] | None = None,
    ) -> None:
        self.id = f"s{next(_ids)}"
        self.worker = worker
        self.spec = worker.engine.spec
        self.stream = StreamPipeline(self.spec, stream_config)
        self._on_event = on_event
        self._state: EngineState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks = TaskSet()
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self.closing = False
        self.created = time.monotonic()
        self.first_frame_at: float | None = None
        self.chunks_skipped = 0
        self.engine_ms: list[float] = []  # recent engine times, bounded
        self.new_result = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, options: SessionOptions) -> None:
        """Open the engine state (in a thread) and start the session's clock task.

        Raises:
            BadInputError: the engine refused the portrait or options (nothing is left behind).
        """
        self._loop = asyncio.get_running_loop()
        engine = self.worker.engine
        opening = self._loop.run_in_executor(
            None, engine.open, options.portrait, options.prompt, dict(options.engine_options)
        )
        try:
            self._state = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The client left while the portrait was being prepared: free it once it is ready.
            opening.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else engine.close(f.result())
            )
            raise
        self.worker.register(self.id, self._state, self)
        self._tasks.spawn(self._tick_loop())

    def describe(self) -> dict[str, Any]:
        """The engine's facts about this session's avatar (see ``Engine.describe``)."""
        return self.worker.engine.describe(self._state) if self._state is not None else {}

    def start_clock(self) -> None:
        """Start the media clock now (pushed-audio transports: the avatar idles from here)."""
        self.stream.start(time.monotonic())
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self, reason: str = "closed") -> None:
        """End the session: stop tasks, drop queued work, free the engine state. Idempotent."""
        if self.closing:
            await self._closed.wait()
            return
        self.closing = True
        await self._tasks.aclose()
        if self._state is not None:
            fut = self.worker.unregister(self.id)
            try:
                await asyncio.wrap_future(fut)
            except Exception:
                log.exception("engine close failed for session %s", self.id)
            self._state = None
        self._emit(SessionEvent("closed", {"reason": reason}))
        self._closed.set()

    # -- input (loop thread) -------------------------------------------------------------------

    def push(self, audio: np.ndarray) -> int:
        """Append mono float32 audio at the engine's rate; returns samples accepted."""
        if self.closing:
            raise SessionClosedError(f"session {self.id} has ended")
        n = self.stream.push(audio, time.monotonic())
        self._wake.set()
        return n

    def end_segment(self) -> int | None:
        return self.stream.end_segment()

    def clear(self) -> None:
        """Barge-in: drop queued speech, in-flight chunks and pending frames; back to idle."""
        epoch, events = self.stream.clear()
        self.worker.interrupt(self.id, epoch)
        self._emit_playback(events)
        self._wake.set()

    # -- the clock task ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        stream = self.stream
        while True:
            now = time.monotonic()
            for chunk in stream.tick(now):
                self.worker.submit(self.id, chunk, stream.frame_due(chunk.first_frame))
            if stream.started:
                self._emit_playback(stream.playback_events())
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # arrives just as the event is set (cpython#86296), and aclose() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()

    # -- results (worker thread -> loop) -------------------------------------------------------

    def _hop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shut down between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    def deliver(self, chunk: VideoChunk) -> None:
        self._hop(self._on_result, chunk)

    def skipped(self, chunk: AudioChunk, reason: str) -> None:
        self._hop(self._on_skip, chunk)

    def failed(self, error: BaseException) -> None:
        self._hop(self._on_failure, error)

    def _on_result(self, chunk: VideoChunk) -> None:
        if self.closing:
            return
        if self.stream.accept(chunk):
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()
            ms = chunk.info.get("engine_ms")
            if ms is not None:
                self.engine_ms.append(ms)
                del self.engine_ms[:-256]
            self.new_result.set()

    def _on_skip(self, chunk: AudioChunk) -> None:
        if not self.closing:
            self.chunks_skipped += 1
            self.stream.skip(chunk)

    def _on_failure(self, error: BaseException) -> None:
        self._emit(SessionEvent("error", {"code": "engine_failed", "message": str(error)}))
        if not self.closing:
            self._tasks.spawn(self.aclose("engine_failed"))

    # -- events --------------------------------------------------------------------------------

    def _emit_playback(self, events: list[PlaybackEvent]) -> None:
        for e in events:
            self._emit(
                SessionEvent(
                    e.kind.value,
                    {"segment": e.segment, "position": e.position, "interrupted": e.interrupted},
                )
            )

    def _emit(self, event: SessionEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("session %s event handler failed", self.id)
