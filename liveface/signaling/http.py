"""The aiohttp application: the page, ``POST /offer``, ``/health`` and ``/metrics``.

State lives in ``web.AppKey`` s and is created and torn down by a cleanup context (CONVENTIONS #11).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from liveface.errors import AvatarError, BadInputError, CapacityError, NoFaceError
from liveface.runtime.events import CloseReason, SessionClosed, SessionEvent
from liveface.runtime.runtime import Runtime, SessionRequest
from liveface.runtime.tasks import TaskSet
from liveface.signaling.webrtc import PeerSession, check_offer

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"

RUNTIME = web.AppKey("runtime", Runtime)
TASKS = web.AppKey("tasks", TaskSet)
PEERS: web.AppKey[set[PeerSession]] = web.AppKey("peers", set)


def error_response(error: AvatarError, status: int) -> web.Response:
    body = {"error": {"code": error.code, "message": str(error), "retryable": error.retryable}}
    return web.json_response(body, status=status)


def status_for(error: AvatarError) -> int:
    if isinstance(error, CapacityError):
        return 503
    if isinstance(error, NoFaceError):
        return 422
    if isinstance(error, BadInputError):
        return 400
    return 500


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except AvatarError as e:
        return error_response(e, status_for(e))
    except web.HTTPRequestEntityTooLarge as e:
        return error_response(BadInputError(f"request too large: {e.text}"), 413)


async def _read_offer(request: web.Request) -> tuple[str, str, SessionRequest]:
    """Parse ``{"sdp", "type", "prompt"?, "portrait"? (data URL), "options"?}`` or the same as a
    multipart form. The portrait stays encoded here: it is decoded only once a slot is held."""
    fields: dict[str, Any] = {}
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadInputError("nested multipart bodies are not accepted")
            if part.name == "portrait":
                fields["portrait"] = await part.read()
            elif part.name:
                fields[part.name] = await part.text()
    else:
        try:
            fields = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInputError(f"body is not valid JSON: {e}") from e
    if not isinstance(fields, dict):
        raise BadInputError('body must be a JSON object with "sdp" and "type"')
    sdp, kind = fields.get("sdp"), fields.get("type")
    if not isinstance(sdp, str) or not isinstance(kind, str):
        raise BadInputError('"sdp" and "type" must be strings')
    prompt = fields.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadInputError('"prompt" must be a string')
    portrait = fields.get("portrait")
    if portrait is not None and not isinstance(portrait, str | bytes | bytearray):
        raise BadInputError('"portrait" must be an image (a data URL, or a file in a form)')
    engine_options = fields.get("options") or {}
    if isinstance(engine_options, str):
        try:
            engine_options = json.loads(engine_options)
        except json.JSONDecodeError as e:
            raise BadInputError(f'"options" is not valid JSON: {e}') from e
    if not isinstance(engine_options, dict):
        raise BadInputError('"options" must be an object')
    raw = portrait.encode() if isinstance(portrait, str) else portrait
    return sdp, kind, SessionRequest(bytes(raw) if raw else None, prompt, engine_options)


async def offer(request: web.Request) -> web.Response:
    app = request.app
    runtime, tasks = app[RUNTIME], app[TASKS]
    sdp, kind, session_request = await _read_offer(request)
    check_offer(sdp, kind)  # before any slot or portrait work
    peer: PeerSession | None = None

    def on_event(event: SessionEvent) -> None:
        # A session that ends on its own (its engine failed) takes its peer connection along.
        if isinstance(event, SessionClosed) and peer is not None:
            tasks.spawn(peer.aclose(event.reason))

    def closed(p: PeerSession) -> None:
        app[PEERS].discard(p)

    session = await runtime.open_session(
        session_request, runtime.stream_config(live=True), on_event
    )
    try:
        peer = PeerSession(runtime, session, runtime.config.audio_jitter_packets, closed)
        app[PEERS].add(peer)
        answer = await peer.answer(sdp, kind)
    except BaseException:
        if peer is not None:
            await peer.aclose(CloseReason.OPEN_FAILED)
        else:
            await runtime.close_session(session, CloseReason.OPEN_FAILED)
        raise
    return web.json_response(
        {
            "sdp": answer.sdp,
            "type": answer.type,
            "session": session.id,
            "width": session.spec.width,
            "height": session.spec.height,
            "fps": session.spec.fps,
            "avatar": session.describe(),
        }
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


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
    app = web.Application(
        middlewares=[errors_as_json], client_max_size=int(runtime.config.max_upload_mb * 2**20)
    )
    app[RUNTIME] = runtime
    app[PEERS] = set()
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
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
