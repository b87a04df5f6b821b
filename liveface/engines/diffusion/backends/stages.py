"""GPU execution stages: a CUDA stream per stage, event hand-offs, pinned host staging, and the
two-deep overlap of denoising and decoding.

A chunk passes four stages (:class:`Stage`): audio features, denoising, decoding, and the copy of
its frames to host memory. On CUDA each stage gets its own :class:`torch.cuda.Stream`; a hand-off
records an event on the producer's stream and makes the consumer's stream wait for it (the host is
not blocked), and every tensor that crosses streams is marked with ``record_stream`` so that the
caching allocator does not hand its memory out again while the consumer still reads it. The only
host synchronisation is :meth:`HostFrames.result`, where the host really needs the frames.

On CPU the same API runs synchronously: there are no streams, events are no-ops, and the results
equal the plain sequential path. This is what the tests exercise.

:class:`Overlap` is the two-deep pipeline: ``submit`` enqueues chunk ``k`` (denoise, then decode
and copy behind an event) and returns chunk ``k - 1``'s frames, whose decode ran on the GPU while
chunk ``k`` denoised; ``flush`` returns the last one. Batching several sessions' chunks into one
call lives in :mod:`liveface.engines.diffusion.backends.batching`.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch

from liveface.engines.diffusion.vae.interface import frames_to_uint8

T = TypeVar("T")

#: Stage timings kept per stage (oldest dropped), so a long run cannot grow memory.
MAX_TIMINGS = 4096


class Stage(enum.Enum):
    """The stages of one chunk, each on its own CUDA stream."""

    AUDIO = "audio"
    DENOISE = "denoise"
    DECODE = "decode"
    COPY = "copy"


class Handoff:
    """A point in one stage's work that another stage, or the host, can wait for.

    Wraps a CUDA event; on CPU the work is already done when the hand-off exists (``event`` None).
    """

    __slots__ = ("event",)

    def __init__(self, event: torch.cuda.Event | None = None) -> None:
        self.event = event

    def done(self) -> bool:
        """Whether the work before the hand-off has finished (never blocks)."""
        return self.event is None or bool(self.event.query())

    def wait_host(self) -> None:
        """Block the calling thread until the work before the hand-off has finished."""
        if self.event is not None:
            self.event.synchronize()


class StageStreams:
    """One stream per :class:`Stage` on ``device`` (none on CPU).

    Args:
        device: where the stages run.
        timing: record the time each :meth:`run` block takes on its stream (CUDA timing events,
            read without synchronising by :meth:`stage_times_ms`; wall clock on CPU).
    """

    def __init__(self, device: torch.device | str = "cpu", *, timing: bool = False) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.timing = timing
        self._streams: dict[Stage, torch.cuda.Stream] = {}
        if self.is_cuda:
            self._streams = {s: torch.cuda.Stream(device=self.device) for s in Stage}
        self._pending: dict[Stage, deque[tuple[torch.cuda.Event, torch.cuda.Event]]] = {
            s: deque(maxlen=MAX_TIMINGS) for s in Stage
        }
        self._times: dict[Stage, deque[float]] = {s: deque(maxlen=MAX_TIMINGS) for s in Stage}

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def stream(self, stage: Stage) -> torch.cuda.Stream | None:
        """The stage's CUDA stream (None on CPU)."""
        return self._streams.get(stage)

    @contextlib.contextmanager
    def run(self, stage: Stage) -> Iterator[None]:
        """Make ``stage``'s stream current for the block (kernels launched in it go there)."""
        stream = self._streams.get(stage)
        if stream is None:
            start = time.perf_counter()
            yield
            if self.timing:
                self._times[stage].append((time.perf_counter() - start) * 1000.0)
            return
        with torch.cuda.stream(stream):
            if not self.timing:
                yield
                return
            begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            begin.record(stream)
            yield
            end.record(stream)
            self._pending[stage].append((begin, end))

    def record(self, stage: Stage) -> Handoff:
        """A hand-off after everything enqueued on ``stage`` so far."""
        stream = self._streams.get(stage)
        if stream is None:
            return Handoff()
        event = torch.cuda.Event()
        event.record(stream)
        return Handoff(event)

    def wait(self, stage: Stage, handoff: Handoff | None) -> None:
        """Make ``stage``'s later work wait for ``handoff`` (on the GPU; the host goes on)."""
        stream = self._streams.get(stage)
        if stream is not None and handoff is not None and handoff.event is not None:
            stream.wait_event(handoff.event)

    def join_current(self, stage: Stage) -> None:
        """Make ``stage`` wait for the work the caller enqueued on its current stream (inputs
        uploaded or built outside the stages)."""
        stream = self._streams.get(stage)
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.device))

    def handoff(self, src: Stage, dst: Stage, *tensors: torch.Tensor) -> Handoff:
        """Pass ``tensors`` made on ``src`` to ``dst``: event on ``src``, wait on ``dst``, and
        ``record_stream(dst)`` so their memory is not reused while ``dst`` reads them."""
        mark = self.record(src)
        self.wait(dst, mark)
        consumer = self._streams.get(dst)
        if consumer is not None:
            for t in tensors:
                if t.device.type == "cuda":
                    t.record_stream(consumer)
        return mark

    def synchronize(self) -> None:
        """Wait for every stage (for benchmarks and shutdown; never in the hot path)."""
        for stream in self._streams.values():
            stream.synchronize()

    def stage_times_ms(self) -> dict[Stage, list[float]]:
        """Milliseconds per :meth:`run` block, per stage; takes the finished ones out.

        Timings whose events have not completed yet stay for a later call (no sync here).
        """
        for stage, pairs in self._pending.items():
            while pairs and pairs[0][1].query():
                begin, end = pairs.popleft()
                self._times[stage].append(begin.elapsed_time(end))
        out = {s: list(t) for s, t in self._times.items()}
        for t in self._times.values():
            t.clear()
        return out


class PinnedPool:
    """Host staging buffers for device-to-host copies, reused by (shape, dtype).

    Page-locked memory makes the copies asynchronous but is slow to allocate, so released buffers
    are kept for reuse. At most ``max_free`` free buffers are kept (the least recently used shape
    goes first); buffers in use are owned by the caller until :meth:`release`.

    Args:
        max_free: free buffers kept.
        pin: page-lock the buffers; None pins when CUDA is available.
    """

    def __init__(self, max_free: int = 8, *, pin: bool | None = None) -> None:
        if max_free < 0:
            raise ValueError("max_free must be >= 0")
        self.max_free = max_free
        self.pin = torch.cuda.is_available() if pin is None else pin
        self._free: OrderedDict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = (
            OrderedDict()
        )
        #: Buffers allocated since creation (a reused buffer does not count again).
        self.allocations = 0

    @property
    def free(self) -> int:
        """Free buffers held now."""
        return sum(len(v) for v in self._free.values())

    def acquire(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A host buffer of ``shape`` and ``dtype`` (contents undefined)."""
        key = (tuple(int(s) for s in shape), dtype)
        bucket = self._free.get(key)
        if bucket:
            self._free.move_to_end(key)
            return bucket.pop()
        self.allocations += 1
        return torch.empty(key[0], dtype=dtype, pin_memory=self.pin)

    def release(self, buffer: torch.Tensor) -> None:
        """Give a buffer back once nothing (no pending copy, no reader) uses it any more."""
        key = (tuple(buffer.shape), buffer.dtype)
        self._free.setdefault(key, []).append(buffer)
        self._free.move_to_end(key)
        while self.free > self.max_free:
            oldest = next(iter(self._free))
            self._free[oldest].pop(0)
            if not self._free[oldest]:
                del self._free[oldest]


class HostFrames:
    """Frames on their way to host memory; :meth:`result` waits for the copy (the only sync)."""

    def __init__(self, buffer: torch.Tensor, ready: Handoff, pool: PinnedPool) -> None:
        self._buffer: torch.Tensor | None = buffer
        self._ready = ready
        self._pool = pool

    def done(self) -> bool:
        return self._ready.done()

    def result(self) -> np.ndarray:
        """The frames as an array the caller owns (the staging buffer goes back to the pool)."""
        if self._buffer is None:
            raise RuntimeError("the frames were already taken")
        self._ready.wait_host()
        out = self._buffer.numpy().copy()
        self._pool.release(self._buffer)
        self._buffer = None
        return out


def device_frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames in ``[-1, 1]`` ``(B, T, H, W, 3)`` -> contiguous uint8 of the same shape.

    Run on the device before the copy: a quarter of the bytes of float32 cross PCIe.
    """
    return frames_to_uint8(frames).contiguous()


def copy_to_host(
    streams: StageStreams,
    frames: torch.Tensor,
    pool: PinnedPool,
    *,
    after: Handoff | None = None,
) -> HostFrames:
    """Copy ``frames`` (any shape) into a pooled host buffer on the COPY stage.

    ``after`` is the hand-off of the stage that produced ``frames`` (the copy waits for it on the
    GPU). Returns at once on CUDA; the copy runs behind an event.
    """
    buffer = pool.acquire(tuple(frames.shape), frames.dtype)
    streams.wait(Stage.COPY, after)
    with streams.run(Stage.COPY):
        buffer.copy_(frames, non_blocking=frames.device.type == "cuda")
        copy_stream = streams.stream(Stage.COPY)
        if copy_stream is not None and frames.device.type == "cuda":
            frames.record_stream(copy_stream)
    return HostFrames(buffer, streams.record(Stage.COPY), pool)


@dataclass
class Finished(Generic[T]):
    """A chunk out of the pipeline: the caller's ``tag`` and uint8 frames ``(B, T, H, W, 3)``."""

    tag: T
    frames: np.ndarray


class Overlap(Generic[T]):
    """Two-deep pipeline: chunk ``k`` decodes and copies while chunk ``k + 1`` denoises.

    ``denoise()`` runs on the DENOISE stream and returns latents ``(B, C, t, h, w)``;
    ``decode(latents)`` runs on the DECODE stream and returns float frames ``(B, T, H, W, 3)`` in
    ``[-1, 1]`` (or uint8 ones); they are converted to uint8 on the device and copied to a pooled
    host buffer on the COPY stream. Neither function may synchronise (no ``.item()``, no host
    reads of device tensors), or the overlap is lost.

    Args:
        streams: the stages.
        pool: host staging buffers (a private one of two buffers when None).
    """

    def __init__(self, streams: StageStreams, pool: PinnedPool | None = None) -> None:
        self.streams = streams
        self.pool = pool if pool is not None else PinnedPool(max_free=2)
        self._pending: tuple[T, HostFrames] | None = None

    @property
    def pending(self) -> bool:
        """Whether a chunk is in flight (``flush`` would return it)."""
        return self._pending is not None

    def submit(
        self,
        denoise: Callable[[], torch.Tensor],
        decode: Callable[[torch.Tensor], torch.Tensor],
        tag: T,
        *,
        after: Handoff | None = None,
    ) -> Finished[T] | None:
        """Enqueue one chunk; return the previous chunk's frames (None for the first).

        ``after`` is a hand-off the denoising must wait for besides the caller's current stream
        (e.g. the AUDIO stage's tokens).
        """
        s = self.streams
        s.join_current(Stage.DENOISE)
        s.wait(Stage.DENOISE, after)
        with s.run(Stage.DENOISE):
            latents = denoise()
        s.handoff(Stage.DENOISE, Stage.DECODE, latents)
        with s.run(Stage.DECODE):
            frames = decode(latents)
            if frames.dtype != torch.uint8:
                frames = device_frames_to_uint8(frames)
        host = copy_to_host(s, frames, self.pool, after=s.record(Stage.DECODE))
        previous, self._pending = self._pending, (tag, host)
        return None if previous is None else Finished(previous[0], previous[1].result())

    def flush(self) -> Finished[T] | None:
        """The chunk still in flight, if any (waits for its copy)."""
        previous, self._pending = self._pending, None
        return None if previous is None else Finished(previous[0], previous[1].result())

    def run(
        self,
        jobs: Iterable[
            tuple[Callable[[], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], T]
        ],
    ) -> list[Finished[T]]:
        """Push ``(denoise, decode, tag)`` jobs through the pipeline; results in job order."""
        out = [r for job in jobs if (r := self.submit(*job)) is not None]
        last = self.flush()
        if last is not None:
            out.append(last)
        return out
