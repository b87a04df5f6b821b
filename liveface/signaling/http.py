"""The aiohttp application: the page, ``POST /offer``, ``/ice``, ``/health`` and ``/metrics``.

State lives in ``web.AppKey`` s and is created and torn down by a cleanup context (CONVENTIONS #11).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from liveface.errors import BadInputError
from liveface.runtime.events import CloseReason, SessionClosed, SessionEvent
from liveface.runtime.runtime import Runtime
from liveface.runtime.session import Session
from liveface.runtime.tasks import TaskSet
from liveface.signaling.http_errors import errors_as_json, quiet_client_errors
from liveface.signaling.join import JoinTable, close_room, join_offer, scene_fields
from liveface.signaling.offer import authorize, read_offer
from liveface.signaling.webrtc import PeerSession, check_offer

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"

RUNTIME = web.AppKey("runtime", Runtime)
TASKS = web.AppKey("tasks", TaskSet)
PEERS: web.AppKey[set[PeerSession]] = web.AppKey("peers", set)
ROOMS = web.AppKey("rooms", JoinTable)


async def offer(request: web.Request) -> web.Response:
    app = request.app
    runtime, tasks = app[RUNTIME], app[TASKS]
    authorize(request, runtime.config.auth_token)
    sdp, kind, session_request, join = await read_offer(request)
    check_offer(sdp, kind)  # before any slot or portrait work
    peer: PeerSession | None = None

    def closed(p: PeerSession) -> None:
        app[PEERS].discard(p)

    if join is not None:  # another character of a scene (liveface.signaling.join)
        peer, joined, character, answer = await join_offer(
            runtime, app[ROOMS], join, sdp, kind, closed
        )
        app[PEERS].add(peer)
        if request.transport is None or request.transport.is_closing():
            await peer.aclose(CloseReason.OPEN_FAILED)
            raise BadInputError("the client disconnected before the answer")
        return web.json_response(_answer(answer, joined.session) | scene_fields(joined, character))

    def on_event(event: SessionEvent) -> None:
        # A session that ends on its own (its engine failed) takes its peer connection along.
        if isinstance(event, SessionClosed) and peer is not None:
            tasks.spawn(peer.aclose(event.reason))
            tasks.spawn(close_room(app[ROOMS], peer.session, event.reason))

    session = await runtime.open_session(
        session_request, runtime.stream_config(live=True), on_event
    )
    delay = runtime.config.video_delay_ms
    room = app[ROOMS].open(session, delay) if session.characters else None
    try:
        # A scene's media goes out once, through a feed every peer of the scene subscribes to.
        tracks = None if room is None else room.feed.subscribe()
        peer = PeerSession(runtime, session, closed, tracks=tracks)
        app[PEERS].add(peer)
        if room is not None:
            room.owner = room.peers[0] = peer
        answer = await peer.answer(sdp, kind)
        if request.transport is None or request.transport.is_closing():
            # The client hung up while we answered: nobody will connect, free the slot now.
            raise BadInputError("the client disconnected before the answer")
    except BaseException:
        if peer is not None:
            await peer.aclose(CloseReason.OPEN_FAILED)
        else:
            await runtime.close_session(session, CloseReason.OPEN_FAILED)
        await close_room(app[ROOMS], session, CloseReason.OPEN_FAILED)
        raise
    body = _answer(answer, session)
    return web.json_response(body if room is None else body | scene_fields(room, 0))


def _answer(answer: RTCSessionDescription, session: Session) -> dict[str, Any]:
    return {
        "sdp": answer.sdp,
        "type": answer.type,
        "session": session.id,
        "width": session.spec.width,
        "height": session.spec.height,
        "fps": session.spec.fps,
        "avatar": session.describe(),
    }


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def ice(request: web.Request) -> web.Response:
    """The ICE servers the page's peer connection should use (the server's own)."""
    config = request.app[RUNTIME].config
    authorize(request, config.auth_token)
    return web.json_response({"iceServers": [s.to_json() for s in config.ice_servers]})


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    registry = runtime.registry
    ok = runtime.healthy
    body = {
        "status": "ok" if ok else "engine_down",
        "engine": runtime.engine.name,
        "sessions": len(registry),
        "max_sessions": registry.max_sessions,
        "uptime_s": round(time.monotonic() - runtime.started, 1),
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[RUNTIME].metrics.render(), content_type="text/plain")


def build_app(runtime: Runtime, own_runtime: bool = False) -> web.Application:
    """The HTTP/WebRTC application on ``runtime``.

    Args:
        own_runtime: start the runtime with the app and close it on cleanup (tests, and servers
            without ZeroMQ); otherwise the caller owns it.
    """
    quiet_client_errors()
    app = web.Application(
        middlewares=[errors_as_json], client_max_size=int(runtime.config.max_upload_mb * 2**20)
    )
    app[RUNTIME] = runtime
    app[PEERS] = set()
    app[ROOMS] = JoinTable()
    app[TASKS] = TaskSet()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if own_runtime:
            runtime.start()
        yield
        peers: set[PeerSession] = app[PEERS]
        for peer in peers.copy():
            await peer.aclose(CloseReason.SERVER_STOPPING)
        await app[TASKS].aclose()
        if own_runtime:
            await runtime.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", index)
    app.router.add_static("/static", WEB_DIR)
    app.router.add_post("/offer", offer)
    app.router.add_get("/ice", ice)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
