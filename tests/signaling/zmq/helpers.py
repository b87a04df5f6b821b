"""Shared pieces of the ZeroMQ tests: a server on a random loopback port, speech-like audio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np

from liveface.runtime.config import ServerConfig
from liveface.runtime.runtime import Runtime
from liveface.signaling.zmq_server import ZmqOptions, ZmqServer
from tests.doubles import PatternEngine

RATE = 16000
IDLE_LEVEL = 40  # PatternEngine's mouth level for unvoiced chunks


def speech(seconds: float, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    """Harmonic, syllable-modulated tone that webrtcvad labels as speech: float32 ``(n,)``."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(amp / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 20))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def to_s16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


@asynccontextmanager
async def zmq_server(
    options: ZmqOptions | None = None,
    curve_dir: str | None = None,
    engine: PatternEngine | None = None,
    max_sessions: int = 4,
    delay_ms: int = 80,
) -> AsyncIterator[tuple[ZmqServer, Runtime]]:
    """A Runtime with the pattern engine and a ZmqServer bound to a random loopback port."""
    engine = engine or PatternEngine(size=64, chunk_frames=2, first_chunk_frames=1)
    config = ServerConfig(zmq="tcp://127.0.0.1:*", delay_ms=delay_ms, max_sessions=max_sessions)
    runtime = Runtime(config, engine)
    runtime.start()
    server = ZmqServer(runtime, options, curve_dir=curve_dir)
    try:
        await server.start()
        yield server, runtime
    finally:
        await server.aclose()
        await runtime.aclose()


@contextmanager
def server_thread(**kwargs: Any) -> Iterator[tuple[ZmqServer, Runtime]]:
    """:func:`zmq_server` on its own event loop in a thread, for blocking (sync) test code."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        box["loop"] = asyncio.get_running_loop()
        async with zmq_server(**kwargs) as (server, runtime):
            box["server"], box["runtime"] = server, runtime
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "server thread did not start"
    try:
        yield box["server"], box["runtime"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
