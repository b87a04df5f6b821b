"""The aiohttp application: the page, ``POST /offer``, ``/health`` and ``/metrics``.

State lives in ``web.AppKey`` s and is created and torn down by a cleanup context (CONVENTIONS #11).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from liveface.errors import AvatarError, BadInputError, CapacityError, NoFaceError
from liveface.pipeline.image import decode_image
from liveface.pipeline.stream import StreamConfig
from liveface.runtime.runtime import Runtime
from liveface.runtime.session import Session, SessionEvent, SessionOptions
from liveface.runtime.tasks import TaskSet
from liveface.signaling.webrtc import PeerSession

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


async def _read_offer(request: web.Request) -> tuple[str, str, SessionOptions]:
    """Parse ``{"sdp", "type", "prompt"?, "portrait"? (data URL)}`` or the same as a form."""
    options = SessionOptions()
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
    options.prompt = prompt
    portrait = fields.get("portrait")
    if portrait:
        raw = portrait.encode() if isinstance(portrait, str) else portrait
        # A large upload takes tens of milliseconds to decode: not on the event loop.
        loop = asyncio.get_running_loop()
        options.portrait = await loop.run_in_executor(None, decode_image, raw)
    engine_options = fields.get("options") or {}
    if isinstance(engine_options, str):
        try:
            engine_options = json.loads(engine_options)
        except json.JSONDecodeError as e:
            raise BadInputError(f'"options" is not valid JSON: {e}') from e
    if not isinstance(engine_options, dict):
        raise BadInputError('"options" must be an object')
    options.engine_options = engine_options
    return sdp, kind, options


async def offer(request: web.Request) -> web.Response:
    app = request.app
    runtime = app[RUNTIME]
    config, registry = runtime.config, runtime.registry
    sdp, kind, options = await _read_offer(request)
    if options.portrait is None:
        options.portrait = runtime.default_portrait
    registry.reserve()
    peer: PeerSession | None = None

    def on_event(event: SessionEvent) -> None:
        # A session that ends on its own (its engine failed) takes its peer connection along.
        if event.kind == "closed" and peer is not None:
            runtime_tasks.spawn(peer.aclose(event.data.get("reason", "session ended")))

    runtime_tasks = request.app[TASKS]
    session = Session(
        runtime.worker, StreamConfig(delay_ms=config.delay_ms, live=True), on_event=on_event
    )
    try:
        await session.start(options)
        registry.add(session)

        def closed(p: PeerSession) -> None:
            app[PEERS].discard(p)
            registry.discard(p.session)

        peer = PeerSession(session, config.audio_jitter_packets, closed)
        app[PEERS].add(peer)
        answer = await peer.answer(sdp, kind)
    except BaseException:
        if peer is not None:
            await peer.aclose("offer failed")
        else:
            registry.unreserve()
            await session.aclose("offer failed")
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
    worker, registry = runtime.worker, runtime.registry
    ok = worker.alive
    body = {
        "status": "ok" if ok else "engine_down",
        "engine": worker.engine.name,
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
            await peer.aclose("server stopping")
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
