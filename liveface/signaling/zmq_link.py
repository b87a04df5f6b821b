"""One ZeroMQ session's plumbing: ordered requests in, paced frames and events out.

Three tasks per session, all owned by the :class:`SessionLink` and cancelled in ``stop()``:

- the *ingest* task applies the client's requests (audio, segment_end, clear) in arrival order
  from a bounded queue, through the session's ingest (in the executor when the block is large);
- the *pacer* task queues what the session's video pacer yields: frame ``n`` with the audio it
  animates (a scene's mix, and each character's own audio when the client asked for it), at the
  frame's due time on the media clock;
- the *sender* encodes queued frames (JPEG in the executor) and writes them with non-blocking
  sends. The frame queue is bounded and drops its oldest frame when full; a frame the socket
  refuses (the client's high-water mark is reached) is dropped as soon as a newer one waits.
  Both kinds of drop are counted and reported in every ``FRAME`` header, so a slow consumer costs
  frames, never server memory.

Replies (``ACK``, ``ERROR``) go out in the protocol version of their request; the session's own
messages (``FRAME``, playback events, an unsolicited ``ERROR``) in the version of its ``OPEN``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveface.errors import AvatarError
from liveface.pipeline.pacer import PacedFrame
from liveface.protocol.messages import (
    PROTOCOL_VERSION,
    ErrorCode,
    Message,
    MsgType,
    OutputFormat,
    encode,
    error_header,
)
from liveface.runtime.events import (
    CloseReason,
    PlaybackEvent,
    PlaybackKind,
    SessionClosed,
    SessionError,
    SessionEvent,
)
from liveface.runtime.session import Session
from liveface.runtime.tasks import TaskSet

log = logging.getLogger(__name__)

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
    control_dropped: int = 0  # replies/events dropped because the backlog was full


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
        version: the protocol version of the session's ``OPEN``.
        character_audio: frames carry each character's own audio too (version 2).
    """

    def __init__(
        self,
        session: Session,
        send: Send,
        executor: Executor,
        on_closed: Callable[[SessionLink, CloseReason], None],
        output_format: OutputFormat = OutputFormat.RGB,
        jpeg_quality: int = 85,
        frame_queue: int = 8,
        control_queue: int = 256,
        inbox: int = 64,
        version: int = PROTOCOL_VERSION,
        character_audio: bool = False,
    ) -> None:
        self.session = session
        self.id = session.id
        self.format = output_format
        self.stats = LinkStats()
        self._send = send
        self._executor = executor
        self._on_closed = on_closed
        self._quality = jpeg_quality
        self._frames: deque[PacedFrame] = deque()
        self._frame_limit = max(1, frame_queue)
        # Playback events follow the frames paced before them: (frames paced, type, header).
        self._paced = 0  # frames the pacer has yielded
        self._passed = 0  # of those, sent or dropped
        self._after_frames: deque[tuple[int, MsgType, dict[str, Any]]] = deque()
        self._control: deque[list[Any]] = deque()
        self._control_limit = max(1, control_queue)
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, inbox))
        self._wake = asyncio.Event()
        self._tasks = TaskSet(on_error=self._task_failed)
        self.version = version
        self._pacer = session.video_pacer(with_audio=True, with_voices=character_audio)
        self._jpeg_cache: tuple[np.ndarray | None, bytes] = (None, b"")
        self.ending = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for coro in (self._ingest(), self._pace(), self._send_loop()):
            self._tasks.spawn(coro)

    def _task_failed(self, error: BaseException) -> None:
        log.error("session %s link task failed", self.id)
        if not self.ending:
            self._on_closed(self, CloseReason.INTERNAL_ERROR)

    async def stop(self) -> None:
        """Cancel the link's tasks and try once more to send what replies/events are waiting."""
        await self._tasks.aclose()
        self._pass_frames(self._paced - self._passed)
        self._flush_control()

    # -- control messages (replies and events) -------------------------------------------------

    def control(
        self, msg_type: MsgType, header: dict[str, Any], version: int | None = None
    ) -> None:
        """Send a reply or event now, or queue it (bounded) behind earlier ones; ``version``
        defaults to the session's."""
        parts = encode(msg_type, header, version=version or self.version)
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

    def error(self, e: AvatarError, req: int | None, version: int | None = None) -> None:
        header = error_header(e.code, str(e), e.retryable, req=req, session=self.id)
        self.control(MsgType.ERROR, header, version)

    def on_event(self, event: SessionEvent) -> None:
        """The session's playback events and errors, forwarded to the client."""
        if isinstance(event, PlaybackEvent):
            header: dict[str, Any] = {"session": self.id, "segment": event.segment}
            if self.version >= 2:
                header["character"] = event.character or 0
            msg_type = MsgType.PLAYBACK_STARTED
            if event.kind is PlaybackKind.FINISHED:
                msg_type = MsgType.PLAYBACK_FINISHED
                header["position"] = float(event.position)
                header["interrupted"] = bool(event.interrupted)
            # The sample it reports went out with a frame the pacer has yielded: the event must
            # not overtake that frame (or any frame before it) on its way to the client.
            if self._passed < self._paced:
                self._after_frames.append((self._paced, msg_type, header))
            else:
                self.control(msg_type, header)
        elif isinstance(event, SessionError):
            self.error(event.error, None)
        elif isinstance(event, SessionClosed) and not self.ending:
            self._on_closed(self, event.reason)

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
                self.error(e, msg.req, msg.version)
                continue
            except Exception:
                log.exception("session %s: %s request failed", self.id, msg.type.name)
                self.control(
                    MsgType.ERROR,
                    error_header(
                        ErrorCode.INTERNAL,
                        "the request failed (an internal error, logged on the server)",
                        req=msg.req,
                        session=self.id,
                    ),
                    msg.version,
                )
                continue
            if msg.req is not None:
                ack["req"] = msg.req
            self.control(MsgType.ACK, ack, msg.version)

    async def _apply(self, msg: Message) -> dict[str, Any]:
        session, h = self.session, msg.header
        ack: dict[str, Any] = {"session": self.id}
        given = h.get("character")
        c = session.check_character(0 if given is None else given)
        if given is not None:
            ack["character"] = c
        if msg.type is MsgType.AUDIO:
            data = bytes(msg.payloads[0])
            args = (data, h["format"], h.get("channels", 1), h["rate"])
            ingest = session.ingests[c]
            # A new rate designs a new filter: never on the loop; nor a large block.
            if ingest.in_rate == h["rate"] and len(data) <= INLINE_AUDIO_BYTES:
                x = ingest.push_pcm(*args)
            else:
                loop = asyncio.get_running_loop()
                x = await loop.run_in_executor(self._executor, ingest.push_pcm, *args)
            accepted = session.push(x, c)
            ack["accepted"] = accepted
            ack["dropped"] = int(x.shape[0]) - accepted
        elif msg.type is MsgType.SEGMENT_END:
            ack["segment"] = session.end_segment(c)
        elif msg.type is MsgType.CLEAR:
            session.clear(given)  # no character: everyone
        everyone = given is None and msg.type is MsgType.CLEAR
        ack["queued_s"] = session.pending_seconds(None if everyone else c)
        return ack

    # -- frames out ----------------------------------------------------------------------------

    async def _pace(self) -> None:
        """Queue what the session's pacer yields (the media clock owns the pace)."""
        while (item := await self._pacer.next_frame()) is not None:
            if len(self._frames) >= self._frame_limit:
                self._frames.popleft()
                self.stats.frames_dropped += 1
                self._pass_frames(1)
            self._frames.append(item)
            self._paced += 1
            self._wake.set()

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
                self._pass_frames(1)

    def _pass_frames(self, count: int) -> None:
        """``count`` more frames were sent or dropped: release the events waiting on them."""
        self._passed += count
        while self._after_frames and self._after_frames[0][0] <= self._passed:
            _, msg_type, header = self._after_frames.popleft()
            self.control(msg_type, header)

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

    async def _encode(self, item: PacedFrame) -> list[Any]:
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
            "pts": item.start,
            "rate": spec.sample_rate,
            "samples": int(item.audio.shape[0]),
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "format": self.format.value,
            "fresh": item.fresh,
            "dropped": self.stats.frames_dropped,
        }
        audio = [np.ascontiguousarray(a, dtype="<f4") for a in (item.audio, *item.voices)]
        if self.version >= 2:
            header["voices"] = len(item.voices)
        return encode(MsgType.FRAME, header, image, *audio, version=self.version)

    def closed_header(self, reason: CloseReason) -> dict[str, Any]:
        s = self.stats
        return {
            "session": self.id,
            "reason": reason.value,
            "frames_sent": s.frames_sent,
            "frames_dropped": s.frames_dropped + s.frames_unreachable,
            "frames_repeated": self._pacer.stats.repeated,
        }
