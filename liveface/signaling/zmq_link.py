"""One ZeroMQ session's plumbing: ordered requests in, paced frames and events out.

Three tasks per session, all owned by the :class:`SessionLink` and cancelled in ``stop()``:

- the *ingest* task applies the client's requests (audio, segment_end, clear) in arrival order
  from a bounded queue, decoding and resampling audio (in the executor when the block is large);
- the *pacer* pulls frame ``n`` and the audio it animates from the session's output buffer at the
  frame's due time on the media clock, like the WebRTC video track, and queues it;
- the *sender* encodes queued frames (JPEG in the executor) and writes them with non-blocking
  sends. The frame queue is bounded and drops its oldest frame when full; a frame the socket
  refuses (the client's high-water mark is reached) is dropped as soon as a newer one waits.
  Both kinds of drop are counted and reported in every ``FRAME`` header, so a slow consumer costs
  frames, never server memory.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveface.errors import AvatarError
from liveface.pipeline.ingest import pcm_to_float
from liveface.pipeline.resample import StreamingResampler
from liveface.protocol.messages import (
    ErrorCode,
    Message,
    MsgType,
    OutputFormat,
    encode,
    error_header,
)
from liveface.runtime.session import Session, SessionEvent
from liveface.runtime.tasks import TaskSet

log = logging.getLogger(__name__)

#: Pacer: how far behind its schedule it may fall before it jumps to "now" instead of bursting.
CATCH_UP_S = 0.2
#: Sender: how long to wait before retrying a send the client's high-water mark refused.
RETRY_S = 0.005
#: Audio payloads up to this size are decoded on the loop; larger ones in the executor.
INLINE_AUDIO_BYTES = 64 * 1024
#: Frames up to this many bytes are JPEG-encoded on the loop; larger ones in the executor.
INLINE_JPEG_BYTES = 64 * 64 * 3


class SendResult(enum.Enum):
    SENT = "sent"
    FULL = "full"  # the client's high-water mark is reached (zmq.Again)
    GONE = "gone"  # the client is not connected (EHOSTUNREACH)


#: Sends one message (frames without the routing id) to the session's client, never blocking.
Send = Callable[[list[Any]], SendResult]


@dataclass
class LinkStats:
    """What happened to this session's outgoing frames."""

    frames_sent: int = 0
    frames_dropped: int = 0  # slow consumer: queue overflow, refused by the high-water mark
    frames_unreachable: int = 0  # the client was not connected
    frames_repeated: int = 0  # the engine was late: the last frame was sent again
    frames_skipped: int = 0  # the pacer fell far behind (a stalled loop) and jumped ahead
    control_dropped: int = 0  # replies/events dropped because the backlog was full


@dataclass
class _OutFrame:
    index: int
    frame: np.ndarray  # uint8 (height, width, 3)
    fresh: bool
    audio: np.ndarray  # float32 (samples,)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB ``(height, width, 3)`` uint8 frame."""
    import cv2

    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not encode the frame as JPEG")
    return bytes(buf.tobytes())


class SessionLink:
    """Connects a :class:`Session` to one ZeroMQ client.

    Args:
        session: the started session (its clock running).
        send: writes one message to the client without blocking.
        executor: where large JPEG encodes and audio decodes run.
        on_closed: called (on the loop) when the session ended by itself (engine failure).
        output_format: ``rgb`` or ``jpeg``.
        jpeg_quality: 1..100.
        frame_queue: most frames waiting to be sent.
        control_queue: most replies/events waiting while the client's high-water mark is reached.
        inbox: most requests waiting to be applied (beyond that the client gets ``busy``).
    """

    def __init__(
        self,
        session: Session,
        send: Send,
        executor: Executor,
        on_closed: Callable[[SessionLink, str], None],
        output_format: OutputFormat = OutputFormat.RGB,
        jpeg_quality: int = 85,
        frame_queue: int = 8,
        control_queue: int = 256,
        inbox: int = 64,
    ) -> None:
        self.session = session
        self.id = session.id
        self.format = output_format
        self.stats = LinkStats()
        self._send = send
        self._executor = executor
        self._on_closed = on_closed
        self._quality = jpeg_quality
        self._frames: deque[_OutFrame] = deque()
        self._frame_limit = max(1, frame_queue)
        self._control: deque[list[Any]] = deque()
        self._control_limit = max(1, control_queue)
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, inbox))
        self._wake = asyncio.Event()
        self._tasks = TaskSet(on_error=self._task_failed)
        self._resampler: StreamingResampler | None = None
        self._jpeg_cache: tuple[np.ndarray | None, bytes] = (None, b"")
        self.ending = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for coro in (self._ingest(), self._pace(), self._send_loop()):
            self._tasks.spawn(coro)

    def _task_failed(self, error: BaseException) -> None:
        log.error("session %s link task failed", self.id)
        if not self.ending:
            self._on_closed(self, "internal_error")

    async def stop(self) -> None:
        """Cancel the link's tasks and try once more to send what replies/events are waiting."""
        await self._tasks.aclose()
        self._flush_control()

    # -- control messages (replies and events) -------------------------------------------------

    def control(self, msg_type: MsgType, header: dict[str, Any]) -> None:
        """Send a reply or event now, or queue it (bounded) behind earlier ones."""
        parts = encode(msg_type, header)
        if not self._control and self._send(parts) is not SendResult.FULL:
            return
        if len(self._control) >= self._control_limit:
            self._control.popleft()
            self.stats.control_dropped += 1
        self._control.append(parts)
        self._wake.set()

    def _flush_control(self) -> bool:
        """Send queued control messages; False when the client's high-water mark stops us."""
        while self._control:
            if self._send(self._control[0]) is SendResult.FULL:
                return False
            self._control.popleft()
        return True

    def error(self, e: AvatarError, req: int | None) -> None:
        self.control(
            MsgType.ERROR, error_header(e.code, str(e), e.retryable, req=req, session=self.id)
        )

    def on_event(self, event: SessionEvent) -> None:
        """The session's playback events and errors, forwarded to the client."""
        data = event.data
        if event.kind == "playback_started":
            self.control(MsgType.PLAYBACK_STARTED, {"session": self.id, "segment": data["segment"]})
        elif event.kind == "playback_finished":
            self.control(
                MsgType.PLAYBACK_FINISHED,
                {
                    "session": self.id,
                    "segment": data["segment"],
                    "position": float(data["position"]),
                    "interrupted": bool(data["interrupted"]),
                },
            )
        elif event.kind == "error":
            self.control(
                MsgType.ERROR,
                error_header(
                    str(data.get("code", "error")), str(data.get("message", "")), session=self.id
                ),
            )
        elif event.kind == "closed" and not self.ending:
            self._on_closed(self, str(data.get("reason", "closed")))

    # -- requests ------------------------------------------------------------------------------

    def submit(self, msg: Message) -> bool:
        """Queue a request for the ingest task; False when the queue is full."""
        try:
            self._inbox.put_nowait(msg)
        except asyncio.QueueFull:
            return False
        return True

    async def _ingest(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                ack = await self._apply(msg)
            except AvatarError as e:
                self.error(e, msg.req)
                continue
            except Exception as e:
                log.exception("session %s: %s request failed", self.id, msg.type.name)
                self.control(
                    MsgType.ERROR,
                    error_header(
                        ErrorCode.INTERNAL, f"request failed: {e}", req=msg.req, session=self.id
                    ),
                )
                continue
            if msg.req is not None:
                ack["req"] = msg.req
            self.control(MsgType.ACK, ack)

    async def _apply(self, msg: Message) -> dict[str, Any]:
        session = self.session
        ack: dict[str, Any] = {"session": self.id}
        if msg.type is MsgType.AUDIO:
            data = bytes(msg.payloads[0])
            h = msg.header
            args = (data, h["format"], h.get("channels", 1), h["rate"])
            resampler = self._resampler
            # A new rate builds a new filter (and may load soxr): never on the loop.
            same_rate = resampler is not None and resampler.in_rate == h["rate"]
            if same_rate and len(data) <= INLINE_AUDIO_BYTES:
                x = self._decode_audio(*args)
            else:
                loop = asyncio.get_running_loop()
                x = await loop.run_in_executor(self._executor, self._decode_audio, *args)
            accepted = session.push(x) if x.shape[0] else 0
            ack["accepted"] = accepted
            ack["dropped"] = int(x.shape[0]) - accepted
        elif msg.type is MsgType.SEGMENT_END:
            # The resampler holds a few ms of filter state: flush it so the segment plays whole.
            if self._resampler is not None:
                tail = self._resampler.push(np.zeros(0, np.float32), last=True)
                self._resampler = None
                if tail.shape[0]:
                    session.push(tail)
            ack["segment"] = session.end_segment()
        elif msg.type is MsgType.CLEAR:
            session.clear()
        ack["queued_s"] = session.stream.pending_samples() / session.spec.sample_rate
        return ack

    def _decode_audio(self, data: bytes, fmt: str, channels: int, rate: int) -> np.ndarray:
        """PCM bytes -> mono float32 at the engine's rate; raises AudioFormatError."""
        x = pcm_to_float(data, fmt, channels)
        old = self._resampler
        head = np.zeros(0, np.float32)
        if old is None or old.in_rate != rate:
            new = StreamingResampler(rate, self.session.spec.sample_rate)  # raises for a bad rate
            if old is not None:  # the rate changed: keep the old filter's tail
                head = old.push(np.zeros(0, np.float32), last=True)
            self._resampler = old = new
        y = old.push(x)
        return np.concatenate([head, y]) if head.shape[0] else y

    # -- frames out ----------------------------------------------------------------------------

    async def _pace(self) -> None:
        """Take frame n and its audio at the frame's due time (the media clock owns the pace)."""
        session = self.session
        stream, spec = session.stream, session.spec
        out = stream.output
        while out.first_buffered() is None and out.last_frame is None:
            session.new_result.clear()
            await session.new_result.wait()
        first = out.first_buffered()
        n = first if first is not None else 0
        while True:
            now = time.monotonic()
            delay = stream.frame_due(n) - now
            if delay < -CATCH_UP_S:
                # Far behind (the loop stalled): resume at the frame due now, don't burst.
                m = spec.frame_at(max(0, stream.play_sample(now)))
                if m > n:
                    self.stats.frames_skipped += m - n
                    n = m
            elif delay > 0:
                await asyncio.sleep(delay)
            frame, fresh = out.take_frame(n)
            start = spec.frame_start(n)
            audio = out.take_audio(start, spec.frame_start(n + 1) - start)
            if frame is not None:
                if not fresh:
                    self.stats.frames_repeated += 1
                if len(self._frames) >= self._frame_limit:
                    self._frames.popleft()
                    self.stats.frames_dropped += 1
                self._frames.append(_OutFrame(n, frame, fresh, audio))
                self._wake.set()
            n += 1

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._control or self._frames:
                if not self._flush_control():
                    await asyncio.sleep(RETRY_S)
                    continue
                if not self._frames:
                    break
                parts = await self._encode(self._frames.popleft())
                await self._send_frame(parts)

    async def _send_frame(self, parts: list[Any]) -> None:
        while True:
            result = self._send(parts)
            if result is SendResult.SENT:
                self.stats.frames_sent += 1
                return
            if result is SendResult.GONE:
                self.stats.frames_unreachable += 1
                return
            if self._frames:  # a newer frame waits: this one is stale now
                self.stats.frames_dropped += 1
                return
            await asyncio.sleep(RETRY_S)

    async def _encode(self, item: _OutFrame) -> list[Any]:
        spec = self.session.spec
        frame = item.frame
        if self.format is OutputFormat.JPEG:
            cached, data = self._jpeg_cache
            if cached is not frame:  # a repeated frame is the same array: encode it once
                if frame.nbytes <= INLINE_JPEG_BYTES:
                    data = encode_jpeg(frame, self._quality)
                else:
                    loop = asyncio.get_running_loop()
                    data = await loop.run_in_executor(
                        self._executor, encode_jpeg, frame, self._quality
                    )
                self._jpeg_cache = (frame, data)
            image: Any = data
        else:
            image = np.ascontiguousarray(frame)
        header = {
            "session": self.id,
            "index": item.index,
            "pts": spec.frame_start(item.index),
            "rate": spec.sample_rate,
            "samples": int(item.audio.shape[0]),
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "format": self.format.value,
            "fresh": item.fresh,
            "dropped": self.stats.frames_dropped,
        }
        audio = np.ascontiguousarray(item.audio, dtype="<f4")
        return encode(MsgType.FRAME, header, image, audio)

    def closed_header(self, reason: str) -> dict[str, Any]:
        s = self.stats
        return {
            "session": self.id,
            "reason": reason,
            "frames_sent": s.frames_sent,
            "frames_dropped": s.frames_dropped + s.frames_unreachable,
            "frames_repeated": s.frames_repeated,
        }
