"""The asyncio ZeroMQ client of the avatar server (protocol: ``docs/zmq-protocol.md``).

    async with AsyncClient("tcp://127.0.0.1:5555") as client:
        session = await client.open(portrait=open("me.jpg", "rb").read(), format="jpeg")
        await session.push(pcm_int16, rate=48000)
        await session.end_segment()
        async for item in session:          # Frame and Event objects, in arrival order
            ...

One DEALER socket carries every session of the client; a receive task routes replies to the
waiting request and frames/events to their session's bounded queue (the oldest frame is dropped,
and counted, when the application reads too slowly). A ping task keeps the client alive on the
server while it only listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from liveface.client.messages import CurveKeys, Event, Frame, ServerError
from liveface.client.remote_session import RemoteSession
from liveface.errors import SessionClosedError
from liveface.protocol.messages import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Limits,
    Message,
    MsgType,
    ProtocolError,
    decode,
    encode,
)

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
_EVENT_KINDS = {
    MsgType.PLAYBACK_STARTED: "playback_started",
    MsgType.PLAYBACK_FINISHED: "playback_finished",
    MsgType.ERROR: "error",
    MsgType.CLOSED: "closed",
}


#: A portrait as the client takes it: image bytes, a file path, or RGB ``(h, w, 3)`` uint8.
Portrait = bytes | str | Path | np.ndarray


def _portrait_bytes(portrait: Portrait) -> bytes:
    """Encoded image bytes from bytes, a file path, or an RGB ``(h, w, 3)`` uint8 array."""
    if isinstance(portrait, bytes):
        return portrait
    if isinstance(portrait, str | Path):
        return Path(portrait).read_bytes()
    import cv2

    img = np.asarray(portrait, np.uint8)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]  # RGB -> BGR for cv2
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("the portrait array could not be encoded as PNG")
    return bytes(buf.tobytes())


class AsyncClient:
    """A connection to the server's ZeroMQ endpoint; ``await connect()`` / ``await aclose()``.

    Args:
        address: the server's ROUTER address.
        curve: CURVE keys when the server requires them.
        ping_interval_s: how often to ping (keep it well under the server's client timeout).
        request_timeout_s: how long a request waits for its reply.
        open_timeout_s: how long ``open`` waits (the server prepares the portrait first).
        queue_size: items (frames and events) held per session for the application.
        rcvhwm: ZeroMQ receive high-water mark (messages).
        protocol_version: the protocol version to speak (2; 1 for a server that knows only 1).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        curve: CurveKeys | None = None,
        ping_interval_s: float = 2.0,
        request_timeout_s: float = 10.0,
        open_timeout_s: float = 60.0,
        queue_size: int = 64,
        rcvhwm: int = 64,
        protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        if protocol_version not in SUPPORTED_VERSIONS:
            raise ValueError(f"protocol_version must be one of {SUPPORTED_VERSIONS}")
        self.protocol_version = protocol_version
        self.address = address
        self.curve = curve
        self.ping_interval_s = ping_interval_s
        self.request_timeout_s = request_timeout_s
        self.open_timeout_s = open_timeout_s
        self.queue_size = queue_size
        self.rcvhwm = rcvhwm
        self.limits = Limits(max_payload_bytes=256 * 1024 * 1024)
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._sessions: dict[str, RemoteSession] = {}
        # Sessions whose OPENED arrived, by request id, until open() picks them up.
        self._opened: dict[int, RemoteSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def connect(self) -> AsyncClient:
        """Create the socket and start the receive and ping tasks (connecting is asynchronous)."""
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        # A fixed routing id: after a network blip the reconnected socket still owns its sessions.
        sock.setsockopt(zmq.ROUTING_ID, b"lf-" + uuid.uuid4().bytes)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.public
            sock.curve_secretkey = self.curve.secret
        sock.connect(self.address)
        self._sock = sock
        self._spawn(self._recv_loop())
        self._spawn(self._ping_loop())
        return self

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, close_sessions: bool = True) -> None:
        """Close this client's sessions (best effort, 1 s), stop the tasks, close the socket."""
        if close_sessions and self._sock is not None:
            for s in list(self._sessions.values()):
                with contextlib.suppress(ServerError, TimeoutError, SessionClosedError):
                    async with asyncio.timeout(1.0):
                        await s.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests ------------------------------------------------------------------------------

    async def send(self, msg_type: MsgType, header: dict[str, Any], *payloads: Any) -> None:
        """Send one message without waiting for a reply."""
        if self._sock is None:
            raise RuntimeError("the client is not connected; call connect() first")
        await self._sock.send_multipart(
            encode(msg_type, header, *payloads, version=self.protocol_version)
        )

    async def request(self, msg_type: MsgType, header: dict[str, Any], *payloads: Any) -> Message:
        """Send a request and wait for its reply.

        Raises:
            ServerError: the server answered with an error.
            TimeoutError: no reply within ``request_timeout_s`` (``open_timeout_s`` for OPEN).
        """
        limit = self.open_timeout_s if msg_type is MsgType.OPEN else self.request_timeout_s
        req = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        try:
            await self.send(msg_type, {**header, "req": req}, *payloads)
            async with asyncio.timeout(limit):  # (not wait_for: it can swallow a cancel on 3.11)
                return await fut
        finally:
            self._pending.pop(req, None)

    async def ping(self) -> list[str]:
        """Round trip to the server; returns the ids of this client's sessions."""
        reply = await self.request(MsgType.PING, {})
        return list(reply.header["sessions"])

    async def open(
        self,
        portrait: Portrait | list[Portrait] | None = None,
        prompt: str | None = None,
        options: dict[str, Any] | None = None,
        format: str = "rgb",
        jpeg_quality: int | None = None,
        *,
        characters: int | None = None,
        boxes: list[list[float]] | None = None,
        character_audio: bool = False,
    ) -> RemoteSession:
        """Open a session. ``portrait``: image bytes, a path, or RGB ``(h, w, 3)`` uint8; a list
        of them: composed side by side into one scene, one character each.

        Scenes (protocol version 2): ``characters`` finds that many faces in the portrait
        (numbered left to right); ``boxes`` (``[x0, y0, x1, y1]`` fractions) places one
        character per box; ``character_audio`` adds each character's own audio to every frame
        (:attr:`Frame.voices`).
        """
        portraits = portrait if isinstance(portrait, list) else [portrait]
        scene = characters is not None or boxes is not None or character_audio
        if (scene or len(portraits) > 1) and self.protocol_version < 2:
            raise ValueError("several characters need protocol version 2")
        header: dict[str, Any] = {"format": format}
        if characters is not None:
            header["characters"] = characters
        if boxes is not None:
            header["boxes"] = boxes
        if character_audio:
            header["character_audio"] = True
        if prompt is not None:
            header["prompt"] = prompt
        if options:
            header["options"] = options
        if jpeg_quality is not None:
            header["jpeg_quality"] = jpeg_quality
        payloads = [_portrait_bytes(p) for p in portraits if p is not None]
        reply = await self.request(MsgType.OPEN, header, *payloads)
        assert reply.req is not None
        return self._opened.pop(reply.req)

    def _forget(self, session: RemoteSession) -> None:
        self._sessions.pop(session.id, None)

    # -- tasks ---------------------------------------------------------------------------------

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            await self.send(MsgType.PING, {})

    async def _recv_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            frames = await sock.recv_multipart(copy=False)
            try:
                msg = decode(frames, self.limits, requests=False)
            except ProtocolError as e:
                log.warning("ignoring a malformed message from the server: %s", e)
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        h = msg.header
        fut = self._pending.pop(msg.req, None) if msg.req is not None else None
        if msg.type is MsgType.OPENED and fut is not None and msg.req is not None:
            # Registered now, not when open() resumes: its first events may be next in line.
            opened = RemoteSession(self, h, self.queue_size)
            self._sessions[opened.id] = opened
            self._opened[msg.req] = opened
        elif msg.type is MsgType.OPENED:
            # The open() that asked for it gave up (timeout, cancel): end the orphan.
            self._spawn(self.send(MsgType.CLOSE, {"session": h["session"]}))
        if fut is not None and not fut.done():
            if msg.type is MsgType.ERROR:
                fut.set_exception(ServerError(h["code"], h["message"], h["retryable"]))
            else:
                fut.set_result(msg)
            if msg.type is not MsgType.CLOSED:
                return
        session = self._sessions.get(h.get("session", ""))
        if session is None:
            if msg.type is MsgType.ERROR and fut is None:
                log.warning("server error: %s: %s", h["code"], h["message"])
            return
        if msg.type is MsgType.FRAME:
            audio = np.frombuffer(msg.payloads[1].buffer, "<f4")
            voices = tuple(np.frombuffer(p.buffer, "<f4") for p in msg.payloads[2:])
            session._deliver(
                Frame(
                    session=session.id,
                    index=h["index"],
                    pts=h["pts"],
                    rate=h["rate"],
                    fresh=h["fresh"],
                    dropped=h["dropped"],
                    format=h["format"],
                    width=h["width"],
                    height=h["height"],
                    data=msg.payloads[0].buffer,
                    audio=audio,
                    received_at=time.monotonic(),
                    voices=voices,
                )
            )
        elif msg.type in _EVENT_KINDS and not (msg.type is MsgType.ERROR and fut is not None):
            data = {k: v for k, v in h.items() if k not in ("session", "req")}
            session._deliver(Event(session.id, _EVENT_KINDS[msg.type], data))
