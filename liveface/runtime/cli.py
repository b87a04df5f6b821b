"""What the subcommands of ``run_avatar.py`` do, once the config is built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from liveface.engines.base import Engine
from liveface.engines.factory import create_engine
from liveface.errors import ConfigError
from liveface.pipeline.image import load_image
from liveface.runtime.config import ServerConfig

log = logging.getLogger("liveface")


def _setup_logging(config: ServerConfig) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_render(config: ServerConfig, audio: str, out: str) -> int:
    from tqdm import tqdm

    from liveface.runtime.render import render

    _setup_logging(config)
    engine = create_engine(config)
    portrait = load_image(config.portrait) if config.portrait else None
    bar = tqdm(total=0, unit="frame", desc="render", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        frames = render(engine, audio, out, portrait=portrait, progress=progress)
    finally:
        bar.close()
        engine.shutdown()
    print(f"wrote {out}: {frames} frames at {engine.spec.fps} fps")
    return 0


async def serve(config: ServerConfig, engine: Engine, stop: asyncio.Event) -> None:
    """Run HTTP (and ZeroMQ when configured) on one Runtime until ``stop`` is set."""
    from aiohttp import web

    from liveface.runtime.runtime import Runtime
    from liveface.signaling.http import build_app

    portrait = load_image(config.portrait) if config.portrait else None
    runtime = Runtime(config, engine, default_portrait=portrait)
    runtime.start()  # opens the default portrait once: a bad one fails here, not per client
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runtime.aclose)
        if config.http:
            runner = web.AppRunner(build_app(runtime), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, config.host, config.port)
            try:
                await site.start()
            except OSError as e:
                raise ConfigError(
                    f"cannot listen on {config.host}:{config.port} ({e.strerror}); "
                    "pick another --port or stop what uses it"
                ) from e
            log.info("serving http://%s:%d (engine %s)", config.host, config.port, engine.name)
        if config.zmq:
            from liveface.signaling.zmq_server import ZmqServer

            zserver = ZmqServer(runtime)
            await zserver.start()
            stack.push_async_callback(zserver.aclose)
            log.info("serving ZeroMQ on %s", config.zmq)
        await stop.wait()


def run_server(config: ServerConfig) -> int:
    _setup_logging(config)
    if config.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    engine = create_engine(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(config, engine, stop)

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    return 0
