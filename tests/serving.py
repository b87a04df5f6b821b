"""A real HTTP server on a free loopback port for a runtime, for tests and benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from liveface.runtime.runtime import Runtime
from liveface.signaling.http import build_app


@contextlib.asynccontextmanager
async def serve(runtime: Runtime) -> AsyncIterator[str]:
    """Serve ``runtime`` (started and closed with the app); yields the base URL ``http://...``."""
    runner = web.AppRunner(build_app(runtime, own_runtime=True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
