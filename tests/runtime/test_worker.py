"""The EngineWorker on a real thread with the test engine: batching, back-pressure, isolation."""

import asyncio
import threading
import time

import numpy as np
import pytest

from liveface.pipeline.stream import StreamConfig
from liveface.runtime.metrics import Metrics
from liveface.runtime.session import Session, SessionOptions
from liveface.runtime.worker import EngineWorker
from tests.doubles import PatternEngine

RATE = 16000


async def feed_realtime(sessions, seconds, block=320):
    """Push 20 ms blocks of a tone into every session at real-time pace."""
    t = np.arange(block) / RATE
    tone = (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    start = time.monotonic()
    for k in range(int(seconds * RATE / block)):
        for s in sessions:
            if not s.closing:
                s.push(tone)
        await asyncio.sleep(max(0.0, start + (k + 1) * block / RATE - time.monotonic()))


async def open_sessions(worker, n, prompt=None):
    out = []
    for _ in range(n):
        s = Session(worker, StreamConfig(delay_ms=120, live=True))
        await s.start(SessionOptions(prompt=prompt))
        out.append(s)
    return out


async def test_generate_runs_off_the_loop_and_batches_sessions():
    engine = PatternEngine(delay_s=0.03, max_batch=4)
    worker = EngineWorker(engine, Metrics())
    worker.start()
    sessions = await open_sessions(worker, 3)
    await feed_realtime(sessions, 1.0)
    for s in sessions:
        await s.aclose()
    worker.stop()
    assert engine.generate_threads == {"engine-worker"}
    assert max(engine.batches) > 1  # chunks of several sessions in one call
    assert all(st.closed for st in engine.opened)
    for s in sessions:
        assert s.stream.output.buffered_frames() > 0 or s.stream.output.stats.frames_out == 0


async def test_slow_engine_degrades_with_counted_drops_and_bounded_queues():
    engine = PatternEngine(delay_s=0.2, chunk_frames=1, max_batch=1)  # 5x slower than real time
    metrics = Metrics()
    worker = EngineWorker(engine, metrics, max_queued=3)
    worker.start()
    (s,) = await open_sessions(worker, 1)
    lags = []

    async def probe():
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    task = asyncio.ensure_future(probe())
    await feed_realtime([s], 1.5)
    queued = worker.queued(s.id)
    task.cancel()
    await s.aclose()
    worker.stop()
    dropped = sum(metrics.value(f"liveface_chunks_dropped_{r}_total") for r in ("full", "late"))
    assert dropped > 10
    assert queued <= 3
    assert s.chunks_skipped > 0
    # The loop kept running while the engine slept 200 ms per call.
    assert np.median(lags) < 0.05


async def test_failing_session_ends_alone():
    engine = PatternEngine(fail_on="boom", max_batch=4)
    worker = EngineWorker(engine, Metrics())
    worker.start()
    good = await open_sessions(worker, 2)
    (bad,) = await open_sessions(worker, 1, prompt="boom")
    await feed_realtime([*good, bad], 0.5)
    await asyncio.wait_for(bad.wait_closed(), 2.0)
    assert all(not s.closing for s in good)
    before = [s.stream.output.stats.frames_out + s.stream.output.buffered_frames() for s in good]
    assert all(b > 0 for b in before)
    for s in good:
        await s.aclose()
    worker.stop()
    assert threading.active_count() < 20


@pytest.mark.parametrize("cancel_during_open", [True])
async def test_client_leaving_during_open_frees_state(cancel_during_open):
    engine = PatternEngine()
    slow_open = engine.open

    def open_slowly(*a):
        time.sleep(0.2)
        return slow_open(*a)

    engine.open = open_slowly
    worker = EngineWorker(engine, Metrics())
    s = Session(worker, StreamConfig())
    task = asyncio.ensure_future(s.start(SessionOptions()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    assert len(engine.opened) == 1
    assert engine.opened[0].closed
