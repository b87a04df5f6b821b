"""A Session: one conversation, from open to aclose, independent of the transport.

A transport hands audio to the session's :attr:`Session.ingest` (any format and rate) and
:meth:`Session.push` es what comes out; it takes frames and audio from a pacer
(:meth:`Session.video_pacer`, :meth:`Session.audio_pacer`) and encodes or sends what it yields.
The session cuts chunks on its media clock, hands them to the EngineWorker and stores what comes
back. Everything here runs on the asyncio loop except the sink methods, which the worker thread
calls and which hop to the loop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liveface.engines.base import (
    AudioChunk,
    Character,
    Engine,
    EngineState,
    SceneEngine,
    SceneRequest,
    VideoChunk,
)
from liveface.errors import BadInputError, EngineError, SessionClosedError, UnknownCharacterError
from liveface.pipeline.ingest import AudioIngest
from liveface.pipeline.pacer import AudioPacer, OutputSignal, PaceTiming, VideoPacer
from liveface.pipeline.scene import ScenePipeline
from liveface.pipeline.stream import StreamConfig, StreamPipeline
from liveface.runtime.events import CloseReason, SessionClosed, SessionError, SessionEvent
from liveface.runtime.metrics import DropReason, SessionCounter
from liveface.runtime.tasks import TaskSet
from liveface.runtime.worker import EngineWorker

log = logging.getLogger(__name__)

#: How often a session looks at the clock when no audio arrives (silence fill, paced release).
TICK_S = 0.02
#: Recent engine times a session keeps for its statistics.
ENGINE_TIMES_KEPT = 256


@dataclass
class SessionOptions:
    """What a client asks for when it opens a session.

    Attributes:
        portrait: uint8 RGB ``(height, width, 3)``, or None for the server's default portrait.
        prompt: optional text prompt (engines that take none ignore it).
        engine_options: engine-specific per-session options.
        scene: several characters in the portrait (None: one avatar).
    """

    portrait: np.ndarray | None = None
    prompt: str | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    scene: SceneRequest | None = None


def _open_state(
    engine: Engine, options: SessionOptions
) -> tuple[EngineState, tuple[Character, ...]]:
    """The engine's state for ``options`` (blocking): one avatar, or a scene and its characters."""
    args = (options.portrait, options.prompt, dict(options.engine_options))
    if options.scene is None:
        return engine.open(*args), ()
    assert isinstance(engine, SceneEngine)  # checked before
    return engine.open_scene(*args, options.scene)


def new_session_id() -> str:
    """An unguessable id: a session is reachable by whoever knows it."""
    return "s" + secrets.token_hex(8)


class Session:
    """One conversation. Create, ``await start(options)``, push audio, ``await aclose()``.

    Args:
        worker: the EngineWorker that owns the engine.
        stream_config: pipeline settings of this transport (live microphone or pushed audio).
        on_event: called on the loop with each :data:`~liveface.runtime.events.SessionEvent`.
    """

    def __init__(
        self,
        worker: EngineWorker,
        stream_config: StreamConfig,
        on_event: Callable[[SessionEvent], None] | None = None,
    ) -> None:
        self.id = new_session_id()
        self.worker = worker
        self.spec = worker.engine.spec
        self.stream = StreamPipeline(self.spec, stream_config)
        self.ingest = AudioIngest(self.spec.sample_rate)
        #: One ingest per character (a scene's characters each have their own audio source).
        self.ingests = [self.ingest]
        #: A scene's characters (empty: a single-character session) and its pipeline.
        self.characters: tuple[Character, ...] = ()
        self.scene: ScenePipeline | None = None
        self.signal = OutputSignal()
        self._on_event = on_event
        self._state: EngineState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks = TaskSet()
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self.closing = False
        self.close_reason: CloseReason | None = None
        self.created = time.monotonic()
        self.first_frame_at: float | None = None
        self.chunks_skipped = 0
        self.engine_ms: list[float] = []  # recent engine times, bounded
        self._pacers: list[VideoPacer | AudioPacer] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, options: SessionOptions) -> None:
        """Open the engine state (in a thread) and start the session's clock task.

        Raises:
            BadInputError: the engine refused the portrait or options (nothing is left behind).
        """
        self._loop = asyncio.get_running_loop()
        engine = self.worker.engine
        if options.scene is not None and not isinstance(engine, SceneEngine):
            raise BadInputError(
                f"the {engine.name} engine animates one character; open a session with several "
                "characters on an engine that animates scenes (warp)"
            )
        opening = self._loop.run_in_executor(None, _open_state, engine, options)
        try:
            state, characters = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The client left while the portrait was being prepared: free it once it is ready.
            opening.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else engine.close(f.result()[0])
            )
            raise
        self._state = state
        if options.scene is not None:
            self.characters = characters
            self.scene = ScenePipeline(self.spec, self.stream.config, len(characters))
            self.stream = self.scene
            rate = self.spec.sample_rate
            self.ingests += [AudioIngest(rate) for _ in characters[1:]]
        self.worker.register(self.id, self._state, self)
        self._tasks.spawn(self._tick_loop())
        log.info("session %s started (engine %s)", self.id, engine.name)

    def describe(self) -> dict[str, Any]:
        """The engine's facts about this session's avatar (see ``Engine.describe``)."""
        return self.worker.engine.describe(self._state) if self._state is not None else {}

    @property
    def num_characters(self) -> int:
        return max(1, len(self.characters))

    def check_character(self, character: object) -> int:
        """``character`` if this session has it.

        Raises:
            UnknownCharacterError: not an index of one of the session's characters.
        """
        n = self.num_characters
        if isinstance(character, bool) or not isinstance(character, int) or not 0 <= character < n:
            raise UnknownCharacterError(
                f"session {self.id} has no character {character!r}: its characters are "
                f"0..{n - 1} (numbered left to right, or in the order of the boxes given)"
            )
        return character

    def start_clock(self) -> None:
        """Start the media clock now (pushed-audio transports: the avatar idles from here)."""
        self.stream.start(time.monotonic())
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self, reason: CloseReason) -> None:
        """End the session: stop tasks, drop queued work, free the engine state. Idempotent."""
        if self.closing:
            await self._closed.wait()
            return
        self.closing = True
        self.close_reason = reason
        self.signal.close()
        await self._tasks.aclose()
        if self._state is not None:
            fut = self.worker.unregister(self.id)
            try:
                await asyncio.wrap_future(fut)
            except Exception:
                log.exception("engine close failed for session %s", self.id)
            self._state = None
        log.info("session %s ended (%s): %s", self.id, reason.value, self.summary())
        self._emit(SessionClosed(reason))
        self._closed.set()

    # -- media in and out ----------------------------------------------------------------------

    def push(self, audio: np.ndarray, character: int = 0) -> int:
        """Append mono float32 audio at the engine's rate (what ``ingests[character]`` made);
        returns the samples accepted."""
        if self.closing:
            raise SessionClosedError(f"session {self.id} has ended")
        c = self.check_character(character)
        if audio.shape[0] == 0:
            return 0
        now = time.monotonic()
        n = self.stream.push(audio, now) if self.scene is None else self.scene.push(audio, now, c)
        self._wake.set()
        return n

    def end_segment(self, character: int = 0) -> int | None:
        """Close the character's pushed speech segment; its ingest's filter tail belongs to it."""
        c = self.check_character(character)
        tail = self.ingests[c].flush()
        if tail.shape[0]:
            self.push(tail, c)
        return self.stream.end_segment() if self.scene is None else self.scene.end_segment(c)

    def clear(self, character: int | None = None) -> None:
        """Barge-in of one character (None: everyone): drop its queued speech, in-flight chunks
        and pending frames; back to idle (the other characters' audio plays on)."""
        c = None if character is None else self.check_character(character)
        epoch, events = self.stream.clear() if self.scene is None else self.scene.clear(c)
        self.worker.interrupt(self.id, epoch)
        for e in events:
            self._emit(e)
        self._wake.set()

    def release_character(self, character: int) -> None:
        """The character's live source left: it listens from now on; a new source starts afresh."""
        c = self.check_character(character)
        if self.scene is not None:
            self.scene.release(c)
        self.ingests[c].flush()
        self.ingests[c] = AudioIngest(self.spec.sample_rate)
        if c == 0:
            self.ingest = self.ingests[0]

    def pending_seconds(self, character: int | None = None) -> float:
        """Pushed audio not yet played (what a pushing client has queued), of one character."""
        if self.scene is None:
            return self.stream.pending_samples() / self.spec.sample_rate
        c = None if character is None else self.check_character(character)
        return self.scene.pending_samples(c) / self.spec.sample_rate

    def video_pacer(
        self, *, with_audio: bool = False, with_voices: bool = False,
        timing: PaceTiming | None = None,
    ) -> VideoPacer:  # fmt: skip
        """A pacer of this session's frames (see :mod:`liveface.pipeline.pacer`); ``with_voices``
        also takes each character's own audio (scenes)."""
        pacer = VideoPacer(
            self.stream, self.signal, timing, with_audio=with_audio, with_voices=with_voices
        )
        self._pacers.append(pacer)
        return pacer

    def audio_pacer(self, block: int, timing: PaceTiming | None = None) -> AudioPacer:
        """A pacer of this session's audio in blocks of ``block`` samples."""
        pacer = AudioPacer(self.stream, self.signal, block, timing)
        self._pacers.append(pacer)
        return pacer

    # -- the clock task ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        stream = self.stream
        while True:
            now = time.monotonic()
            for chunk in stream.tick(now):
                self.worker.submit(self.id, chunk, stream.frame_due(chunk.first_frame))
            if stream.started:
                for e in stream.playback_events():
                    self._emit(e)
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

    def skipped(self, chunk: AudioChunk, reason: DropReason) -> None:
        self._hop(self._on_skip, chunk)

    def failed(self, error: BaseException) -> None:
        self._hop(self._on_failure, error)

    def _on_result(self, chunk: VideoChunk) -> None:
        if self.closing:
            return
        if self.stream.accept(chunk):
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()
            if chunk.info.engine_ms is not None:
                self.engine_ms.append(chunk.info.engine_ms)
                del self.engine_ms[:-ENGINE_TIMES_KEPT]
            self.signal.notify()

    def _on_skip(self, chunk: AudioChunk) -> None:
        if not self.closing:
            self.chunks_skipped += 1
            self.stream.skip(chunk)
            self.signal.notify()

    def _on_failure(self, error: BaseException) -> None:
        err = (
            error if isinstance(error, EngineError) else EngineError(f"the engine failed: {error}")
        )
        self._emit(SessionError(err))
        if not self.closing:
            self._tasks.spawn(self.aclose(CloseReason.ENGINE_FAILED))

    # -- figures -------------------------------------------------------------------------------

    def counters(self) -> dict[SessionCounter, float]:
        """This session's counters, as exported in the process totals."""
        out, inp = self.stream.output.stats, self.stream.stats
        dropped = sum(i.stats.dropped for i in self.ingests)
        concealed = sum(i.stats.concealed for i in self.ingests)
        return {
            SessionCounter.FRAMES_OUT: out.frames_out,
            SessionCounter.FRAMES_REPEATED: out.frames_repeated,
            SessionCounter.FRAMES_LATE: out.frames_late,
            SessionCounter.FRAMES_OVERFLOW: out.frames_overflow,
            SessionCounter.AUDIO_UNDERRUN_SAMPLES: out.audio_underrun_samples,
            SessionCounter.INPUT_SAMPLES: inp.input_samples,
            SessionCounter.INPUT_DROPPED_SAMPLES: inp.input_dropped_samples + dropped,
            SessionCounter.INPUT_CONCEALED_SAMPLES: concealed,
            SessionCounter.SILENCE_FILLED_SAMPLES: inp.silence_filled_samples,
            SessionCounter.CHUNKS_SKIPPED: self.chunks_skipped,
        }

    def summary(self) -> str:
        """One line of figures for the log at the session's end."""
        c = self.counters()
        shown = c[SessionCounter.FRAMES_OUT] + c[SessionCounter.FRAMES_REPEATED]
        repeated = 100.0 * c[SessionCounter.FRAMES_REPEATED] / shown if shown else 0.0
        ms = sorted(self.engine_ms)
        engine = f"{ms[len(ms) // 2]:.1f} ms" if ms else "-"
        first = (
            f"{(self.first_frame_at - self.created) * 1000:.0f} ms"
            if self.first_frame_at is not None
            else "-"
        )
        return (
            f"{time.monotonic() - self.created:.1f} s, {shown:.0f} frames "
            f"({repeated:.1f}% repeated), {self.chunks_skipped} chunks skipped, "
            f"first frame {first}, engine p50 {engine}, "
            f"glass-to-glass ~{self.stream.config.delay_ms} ms output delay + network"
        )

    def _emit(self, event: SessionEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("session %s event handler failed", self.id)
