"""The ZeroMQ endpoint: one ROUTER socket serving the protocol of ``docs/zmq-protocol.md``.

One receive task reads every message, validates it (:mod:`zmq_protocol`) and dispatches it; each
session is a :class:`SessionLink` with its own ingest, pacer and sender tasks. Sessions belong to
the client (routing id, plus the CURVE public key when CURVE is on) that opened them; a client that
sends nothing for ``client_timeout_s`` is gone and its sessions end. Every task is owned here and
cancelled in :meth:`ZmqServer.aclose`. Sends never block: the socket has ``ROUTER_MANDATORY`` set,
so a client at its high-water mark raises ``zmq.Again`` (the frame is dropped and counted) instead
of being dropped silently or stalling the loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import zmq
import zmq.asyncio

from liveface.errors import AvatarError, ConfigError
from liveface.protocol.curve import CurveServer
from liveface.protocol.messages import (
    ErrorCode,
    Limits,
    Message,
    MsgType,
    OutputFormat,
    ProtocolError,
    decode,
    encode,
    error_header,
)
from liveface.runtime.events import CloseReason, SessionEvent
from liveface.runtime.metrics import Reading
from liveface.runtime.runtime import Runtime, SessionRequest
from liveface.runtime.tasks import TaskSet
from liveface.signaling.zmq_clients import ClientRecord, ClientTable, user_id
from liveface.signaling.zmq_link import SendResult, SessionLink
from liveface.signaling.zmq_open import characters_of, portraits, scene_of, version_of
from liveface.signaling.zmq_options import ZmqOptions

__all__ = ["DEFAULT_ADDRESS", "ZmqOptions", "ZmqServer"]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
_LOCAL_PREFIXES = ("tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://")


class ZmqServer:
    """The ZeroMQ transport on a :class:`Runtime`; ``await start()`` then ``await aclose()``.

    Args:
        runtime: the shared runtime (engine worker, session registry, metrics, config).
        options: endpoint tuning.
        address: bind address; default ``runtime.config.zmq`` or ``tcp://127.0.0.1:5555``.
        curve_dir: CURVE keys directory; default ``runtime.config.zmq_curve_dir`` (None: off).
    """

    def __init__(
        self,
        runtime: Runtime,
        options: ZmqOptions | None = None,
        address: str | None = None,
        curve_dir: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.options = options or ZmqOptions()
        self.address = address or runtime.config.zmq or DEFAULT_ADDRESS
        self.curve_dir = curve_dir if curve_dir is not None else runtime.config.zmq_curve_dir
        self.endpoint: str | None = None
        self._limits = Limits(self.options.max_header_bytes, self.options.max_payload_bytes)
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._curve: CurveServer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._clients = ClientTable()
        self._tasks = TaskSet()  # the receive and reaper loops, and openings
        self._enders = TaskSet()  # sessions being ended: awaited, never cancelled
        self._closing = False
        self._dropped_closed = 0.0
        runtime.metrics.read(Reading.ZMQ_CLIENTS, lambda: float(len(self._clients)))
        runtime.metrics.read(Reading.ZMQ_FRAMES_DROPPED, self._dropped_total)

    def _dropped_total(self) -> float:
        return self._dropped_closed + sum(
            link.stats.frames_dropped for link in self._clients.links()
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start the receive and liveness tasks.

        Raises:
            ConfigError: the address cannot be bound, or the CURVE directory is unusable.
        """
        opts = self.options
        if self.curve_dir:
            self._curve = CurveServer(self.curve_dir)
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        self._sock = sock
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # Again / EHOSTUNREACH instead of silent drops
        sock.setsockopt(zmq.SNDHWM, opts.sndhwm)
        sock.setsockopt(zmq.RCVHWM, opts.rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * max(opts.max_payload_bytes, opts.max_header_bytes))
        if self._curve is not None:
            self._curve.start(self._ctx)
            self._curve.apply(sock)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as e:
            await self.aclose()
            raise ConfigError(f"cannot bind ZeroMQ to {self.address}: {e}") from e
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._curve is None and not self.address.startswith(_LOCAL_PREFIXES):
            log.warning(
                "ZeroMQ listens on %s without CURVE: anyone who reaches it can open "
                "sessions (set zmq_curve_dir)",
                self.address,
            )
        self._executor = ThreadPoolExecutor(opts.encode_threads, thread_name_prefix="zmq-encode")
        self._tasks.spawn(self._recv_loop())
        self._tasks.spawn(self._reaper())

    async def aclose(self) -> None:
        """End every session, stop the tasks, close the socket. Idempotent."""
        self._closing = True
        await self._tasks.aclose()
        links = list(self._clients.links())
        await asyncio.gather(
            *(self._end(link, CloseReason.SERVER_STOPPING) for link in links),
            return_exceptions=True,
        )
        await self._enders.wait()
        self._clients.clear()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._curve is not None:
            self._curve.stop()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- sending -------------------------------------------------------------------------------

    def _send(self, identity: bytes, parts: list[Any]) -> SendResult:
        """Write one message to ``identity`` without blocking."""
        sock = self._sock
        if sock is None:
            return SendResult.GONE
        try:
            # Never waits: with NOBLOCK the future is already resolved (or holds zmq.Again).
            fut = cast(
                "asyncio.Future[Any]", sock.send_multipart([identity, *parts], flags=zmq.NOBLOCK)
            )
            if fut.done():
                fut.result()
        except zmq.Again:
            return SendResult.FULL
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                log.debug("ZeroMQ send failed: %s", e)
            return SendResult.GONE
        return SendResult.SENT

    def _reply(
        self, client: ClientRecord, msg_type: MsgType, header: dict[str, Any], version: int
    ) -> None:
        self._send(client.identity, encode(msg_type, header, version=version))

    def _error(
        self,
        client: ClientRecord,
        e: AvatarError,
        req: int | None,
        version: int,
        session: str | None = None,
    ) -> None:
        header = error_header(e.code, str(e), e.retryable, req=req, session=session)
        self._reply(client, MsgType.ERROR, header, version)

    # -- receiving -----------------------------------------------------------------------------

    async def _recv_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            frames = await sock.recv_multipart(copy=False)
            try:
                self._on_message(frames)
            except Exception:  # one bad message must never stop the endpoint
                log.exception("ZeroMQ message handling failed")

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        self.runtime.metrics.zmq_messages.inc()
        user = user_id(frames[1]) if self._curve is not None and len(frames) > 1 else ""
        client = self._clients.seen(frames[0].bytes, user)
        try:
            msg = decode(frames[1:], self._limits, requests=True)
        except ProtocolError as e:
            self.runtime.metrics.zmq_bad_messages.inc()
            self._error(client, e, e.req, version_of(frames))
            return
        if msg.type is MsgType.PING:
            header: dict[str, Any] = {"sessions": sorted(client.links)}
            if msg.req is not None:
                header["req"] = msg.req
            self._reply(client, MsgType.PONG, header, msg.version)
        elif msg.type is MsgType.OPEN:
            self._tasks.spawn(self._open(client, msg))
        else:
            self._to_session(client, msg)

    def _to_session(self, client: ClientRecord, msg: Message) -> None:
        """Route a session request; only the session's owner reaches it."""
        sid = msg.header["session"]
        link = client.links.get(sid)
        if link is None or link.ending:
            err = ProtocolError(ErrorCode.UNKNOWN_SESSION, f"no session {sid} for this client")
            self._error(client, err, msg.req, msg.version, sid)
        elif msg.type is MsgType.CLOSE:
            self._enders.spawn(self._end(link, CloseReason.CLIENT_CLOSED, msg.req, msg.version))
        elif not link.submit(msg):
            err = ProtocolError(
                ErrorCode.BUSY,
                f"session {sid} has too many requests queued; wait for the acks",
                retryable=True,
            )
            self._error(client, err, msg.req, msg.version, sid)

    # -- sessions ------------------------------------------------------------------------------

    async def _open(self, client: ClientRecord, msg: Message) -> None:
        client.opening += 1
        try:
            link = await self._open_link(client, msg)
        except AvatarError as e:
            self._error(client, e, msg.req, msg.version)
            return
        except Exception:
            log.exception("ZeroMQ open failed")
            # The details (paths, library versions) stay in the server's log.
            err = ProtocolError(ErrorCode.INTERNAL, "open failed (an internal error, logged)")
            self._error(client, err, msg.req, msg.version)
            return
        finally:
            client.opening -= 1
        spec = link.session.spec
        header = {
            "session": link.id,
            "width": spec.width,
            "height": spec.height,
            "fps": spec.fps,
            "sample_rate": spec.sample_rate,
            "format": link.format.value,
            "timeout_s": self.options.client_timeout_s,
        }
        if msg.version >= 2:
            header["characters"] = characters_of(link.session)
        if msg.req is not None:
            header["req"] = msg.req
        self._reply(client, MsgType.OPENED, header, msg.version)  # before any frame
        link.start()

    async def _open_link(self, client: ClientRecord, msg: Message) -> SessionLink:
        rt, opts, h = self.runtime, self.options, msg.header
        links: list[SessionLink] = []

        def on_event(event: SessionEvent) -> None:
            if links:
                links[0].on_event(event)

        request = SessionRequest(
            portraits(msg.payloads), h.get("prompt"), h.get("options") or {}, scene_of(h)
        )
        stream = rt.stream_config(live=False, max_pending_s=opts.max_queued_s)
        session = await rt.open_session(request, stream, on_event)
        identity = client.identity
        link = SessionLink(
            session,
            lambda parts: self._send(identity, parts),
            self._executor,  # type: ignore[arg-type]  # set in start()
            self._link_closed,
            output_format=OutputFormat(h.get("format", OutputFormat.RGB)),
            jpeg_quality=h.get("jpeg_quality", opts.jpeg_quality),
            frame_queue=opts.frame_queue,
            control_queue=opts.control_queue,
            inbox=opts.inbox,
            version=msg.version,
            character_audio=h.get("character_audio", False),
        )
        links.append(link)
        self._clients.attach(client, link)
        if self._closing or not self._clients.is_current(client):
            # The server began stopping, or the client timed out, while the portrait was prepared.
            reason = CloseReason.SERVER_STOPPING if self._closing else CloseReason.CLIENT_TIMEOUT
            await self._end(link, reason)
            raise ProtocolError(ErrorCode.INTERNAL, "the session ended while it was opening")
        session.start_clock()
        return link

    def _link_closed(self, link: SessionLink, reason: CloseReason) -> None:
        """The session ended by itself (engine or link failure): tidy up, tell the client."""
        if not link.ending:
            self._enders.spawn(self._end(link, reason))

    async def _end(
        self,
        link: SessionLink,
        reason: CloseReason,
        req: int | None = None,
        version: int | None = None,
    ) -> None:
        """End a session: stop its link, close it, free its slot, send ``CLOSED``."""
        if link.ending:
            return
        link.ending = True
        client = self._clients.detach(link)
        try:
            await link.stop()
            await self.runtime.close_session(link.session, reason)
        finally:
            self._dropped_closed += link.stats.frames_dropped
        if client is not None:
            header = link.closed_header(reason)
            if req is not None:
                header["req"] = req
            self._reply(client, MsgType.CLOSED, header, version or link.version)

    async def _reaper(self) -> None:
        """Ends the sessions of clients that went silent, and forgets idle clients."""
        timeout = self.options.client_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            for client in self._clients.silent(timeout):
                if client.links:
                    self.runtime.metrics.zmq_clients_timed_out.inc()
                    log.info(
                        "ZeroMQ client silent for %.0f s: ending %d session(s)",
                        timeout,
                        len(client.links),
                    )
                for link in list(client.links.values()):
                    self._enders.spawn(self._end(link, CloseReason.CLIENT_TIMEOUT))
