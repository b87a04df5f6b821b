"""The pacer: a session's output released on its media clock; the one place that owns outgoing time.

Every transport pulls from a pacer and only encodes or sends what it yields: the WebRTC video track
(:class:`VideoPacer`, frames), the WebRTC audio track (:class:`AudioPacer`, 20 ms blocks), the
ZeroMQ link (:class:`VideoPacer` with each frame's audio) and the offline render
(:class:`VideoPacer` with ``realtime=False``: no waiting, no skipping).

Media-clock slot ``n`` (a frame, or an audio block) covers samples ``[start(n), start(n + 1))`` and
is due at ``stream.due(start(n))``; a consumer may ask for it ``lead`` seconds early (its measured
send latency). Deadlines, not asserts:

- the first slot is the first one with output; until output exists the pacer waits;
- a slot far behind its due time (more than ``catch_up_s``: a stalled event loop or a late engine)
  is skipped over to the slot due now, counted, instead of bursting to catch up;
- a frame that is due but missing repeats the last one (counted by the output buffer); when no
  frame has ever arrived (the first frame is late) the pacer waits for one rather than fail.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from liveface.pipeline.scene import ScenePipeline
from liveface.pipeline.stream import StreamPipeline

#: How far behind its schedule a pacer may fall before it jumps to "now" instead of bursting.
CATCH_UP_S = 0.2

Clock = Callable[[], float]


class OutputSignal:
    """Wakes pacers when a session's output changed, or when the session ended (loop thread)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        self._event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def wait(self) -> None:
        """Until the next :meth:`notify` or :meth:`close` (returns at once once closed)."""
        if self.closed:
            return
        self._event.clear()
        await self._event.wait()


@dataclass(frozen=True)
class PaceTiming:
    """How a pacer meets deadlines.

    Attributes:
        realtime: wait for each slot's due time and skip over a backlog (False: the offline
            render, slots in order as fast as they come).
        catch_up_s: how far behind its schedule a pacer may fall before it skips.
        clock: monotonic seconds (tests pass their own).
    """

    realtime: bool = True
    catch_up_s: float = CATCH_UP_S
    clock: Clock = time.monotonic


@dataclass
class PacerStats:
    """What one consumer's pacer did."""

    sent: int = 0  # slots handed out
    skipped: int = 0  # slots jumped over after falling behind
    repeated: int = 0  # frames handed out again because the next one was not there


@dataclass(frozen=True)
class PacedFrame:
    """Video frame ``index``: ``frame`` uint8 RGB ``(height, width, 3)``, media-clock sample
    ``start``; ``fresh`` is False for a repeat; ``audio`` float32 ``(samples,)`` is the audio the
    frame animates (when the pacer was asked for it, else empty); ``voices`` each character's own
    audio over the same samples (a scene's pacer asked for them, else empty)."""

    index: int
    start: int
    frame: np.ndarray
    fresh: bool
    audio: np.ndarray
    voices: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class PacedAudio:
    """Audio block ``index``: float32 ``samples`` starting at media-clock sample ``start``."""

    index: int
    start: int
    samples: np.ndarray


class _Pacer(abc.ABC):
    """Slot bookkeeping shared by the video and audio pacers."""

    def __init__(
        self, stream: StreamPipeline, signal: OutputSignal, timing: PaceTiming | None = None
    ) -> None:
        self.stream = stream
        self.signal = signal
        self.timing = timing or PaceTiming()
        self.stats = PacerStats()
        self.next: int | None = None

    # -- what a subclass says about its slots ---------------------------------------------------

    @abc.abstractmethod
    def start_of(self, n: int) -> int:
        """Media-clock sample at which slot ``n`` starts."""

    @abc.abstractmethod
    def slot_at(self, sample: int) -> int:
        """The slot whose span holds media-clock ``sample``."""

    @abc.abstractmethod
    def first_slot(self) -> int | None:
        """The slot to begin with, or None to begin with the slot due now."""

    # -- scheduling -----------------------------------------------------------------------------

    def _has_output(self) -> bool:
        out = self.stream.output
        return out.first_buffered() is not None or out.last_frame is not None

    async def _wait_output(self) -> bool:
        """Until the session has output; False when it ended first."""
        while not self._has_output():
            if self.signal.closed:
                return False
            await self.signal.wait()
        return not self.signal.closed

    def plan(self, now: float, lead: float = 0.0) -> tuple[int, float]:
        """The slot to hand out next and how long to wait for its due time (seconds, >= 0)."""
        assert self.next is not None
        n = self.next
        if not self.timing.realtime:
            return n, 0.0
        delay = self.stream.due(self.start_of(n)) - lead - now
        if delay < -self.timing.catch_up_s:
            # Far behind (the loop stalled, or the first output came late): resume at the slot
            # due now instead of bursting through the backlog.
            m = self.slot_at(max(0, self.stream.play_sample(now + lead)))
            if m > n:
                self.stats.skipped += m - n
                n = m
            return n, 0.0
        return n, max(0.0, delay)

    async def _next_slot(self, lead: float) -> int | None:
        if self.next is None:
            if not await self._wait_output():
                return None
            first = self.first_slot()
            now_slot = self.slot_at(max(0, self.stream.play_sample(self.timing.clock() + lead)))
            self.next = first if first is not None else now_slot
        n, delay = self.plan(self.timing.clock(), lead)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.signal.closed:
            return None
        self.next = n + 1
        self.stats.sent += 1
        return n


class VideoPacer(_Pacer):
    """Frames of a session at its fps; see the module docstring.

    Args:
        with_audio: also take the audio each frame animates (ZeroMQ, the offline render); the
            WebRTC video track leaves the audio to its :class:`AudioPacer`.
        with_voices: also take each character's own audio (a scene's stream only).
    """

    def __init__(
        self,
        stream: StreamPipeline,
        signal: OutputSignal,
        timing: PaceTiming | None = None,
        *,
        with_audio: bool = False,
        with_voices: bool = False,
    ) -> None:
        super().__init__(stream, signal, timing)
        self.with_audio = with_audio
        self.scene = stream if with_voices and isinstance(stream, ScenePipeline) else None
        if self.scene is not None:
            self.scene.keep_voices = True

    def start_of(self, n: int) -> int:
        return self.stream.spec.frame_start(n)

    def slot_at(self, sample: int) -> int:
        return self.stream.spec.frame_at(sample)

    def first_slot(self) -> int | None:
        return self.stream.output.first_buffered()

    def take(self, n: int) -> PacedFrame | None:
        """Frame ``n`` now (the last one again when it is missing); None before any frame."""
        out = self.stream.output
        frame, fresh = out.take_frame(n)
        start = self.start_of(n)
        count = self.start_of(n + 1) - start
        audio = out.take_audio(start, count) if self.with_audio else np.zeros(0, np.float32)
        voices = () if self.scene is None else self.scene.take_voices(start, count)
        if frame is None:
            return None
        if not fresh:
            self.stats.repeated += 1
        return PacedFrame(n, start, frame, fresh, audio, voices)

    async def next_frame(self, lead: float = 0.0) -> PacedFrame | None:
        """The next frame at its due time minus ``lead``; None once the session has ended."""
        while True:
            n = await self._next_slot(lead)
            if n is None:
                return None
            item = self.take(n)
            if item is not None:
                return item
            # Nothing was ever shown (the output was cut before its first frame): wait again.
            self.stats.sent -= 1
            self.next = None

    def drain(self) -> list[PacedFrame]:
        """Offline: every frame that is ready, in order, without waiting (``realtime=False``)."""
        out = self.stream.output
        items: list[PacedFrame] = []
        if self.next is None:
            first = self.first_slot()
            if first is None:
                return items
            self.next = first
        while out.first_buffered() == self.next:
            item = self.take(self.next)
            assert item is not None  # the frame is buffered
            items.append(item)
            self.next += 1
            self.stats.sent += 1
        return items


class AudioPacer(_Pacer):
    """The audio of a session in blocks of ``block`` samples, on the same clock as its video."""

    def __init__(
        self, stream: StreamPipeline, signal: OutputSignal, block: int,
        timing: PaceTiming | None = None,
    ) -> None:  # fmt: skip
        super().__init__(stream, signal, timing)
        if block <= 0:
            raise ValueError("block must be positive")
        self.block = block

    def start_of(self, n: int) -> int:
        return n * self.block

    def slot_at(self, sample: int) -> int:
        return sample // self.block

    def first_slot(self) -> int | None:
        return self.stream.output.audio_head // self.block

    async def next_block(self, lead: float = 0.0) -> PacedAudio | None:
        """The next block at its due time minus ``lead``; None once the session has ended."""
        n = await self._next_slot(lead)
        if n is None:
            return None
        start = self.start_of(n)
        return PacedAudio(n, start, self.stream.output.take_audio(start, self.block))
