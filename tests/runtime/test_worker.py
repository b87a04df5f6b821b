"""The EngineWorker on a real thread with the test engine: batching, back-pressure, isolation."""

import asyncio
import threading
import time

import numpy as np

from liveface.pipeline.stream import StreamConfig
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import DropReason, Metrics
from liveface.runtime.session import Session, SessionOptions
from liveface.runtime.worker import EngineWorker
from tests.doubles import PatternEngine
from tests.waiting import wait_until

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


def results(session: Session) -> int:
    """Frames a session received from the engine (held, played or dropped as late/overflow)."""
    out = session.stream.output
    s = out.stats
    return out.buffered_frames() + s.frames_out + s.frames_late + s.frames_overflow


async def test_generate_runs_off_the_loop_and_batches_sessions():
    engine = PatternEngine(delay_s=0.03, max_batch=4)
    worker = EngineWorker(engine, Metrics())
    worker.start()
    sessions = await open_sessions(worker, 3)
    await feed_realtime(sessions, 1.0)
    await wait_until(lambda: all(results(s) > 0 for s in sessions))
    for s in sessions:
        await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    assert engine.generate_threads == {"engine-worker"}
    assert max(engine.batches) > 1  # chunks of several sessions in one call
    assert all(st.closed for st in engine.opened)
    for s in sessions:
        # Every chunk's result reached its own session, in order: the first frame came back.
        assert s.first_frame_at is not None
        assert [st.chunks[:3] for st in engine.opened] == [[0, 1, 2]] * 3


async def test_slow_engine_degrades_with_counted_drops_and_bounded_queues():
    engine = PatternEngine(delay_s=0.2, chunk_frames=1, max_batch=1)  # 5x slower than real time
    metrics = Metrics()
    worker = EngineWorker(engine, metrics, max_queued=3)
    worker.start()
    (s,) = await open_sessions(worker, 1)
    await feed_realtime([s], 1.5)
    queued = worker.queued(s.id)
    await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    dropped = sum(
        metrics.sample("liveface_chunks_dropped_total", reason=r.value)
        for r in (DropReason.FULL, DropReason.LATE)
    )
    assert dropped > 10
    assert queued <= 3
    assert s.chunks_skipped > 0
    # The loop never ran model code: every generate call happened on the worker's thread.
    assert engine.generate_threads == {"engine-worker"}
    rendered = metrics.sample("liveface_chunks_rendered_total")
    assert rendered == len(engine.batches)
    assert rendered + dropped <= s.stream.stats.chunks_cut


async def test_failing_session_ends_alone():
    engine = PatternEngine(fail_on="boom", max_batch=4)
    metrics = Metrics()
    worker = EngineWorker(engine, metrics)
    worker.start()
    good = await open_sessions(worker, 2)
    (bad,) = await open_sessions(worker, 1, prompt="boom")
    await feed_realtime([*good, bad], 0.5)
    await wait_until(lambda: bad.closed)
    assert bad.close_reason is CloseReason.ENGINE_FAILED
    assert metrics.sample("liveface_engine_errors_total") >= 1
    assert all(not s.closing for s in good)
    before = [results(s) for s in good]
    assert all(b > 0 for b in before)
    # The survivors keep being served after the failure.
    await feed_realtime(good, 0.3)
    await wait_until(lambda: all(results(s) > b for s, b in zip(good, before, strict=True)))
    assert worker.alive
    for s in good:
        await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    assert not any(t.name == "engine-worker" for t in threading.enumerate())


async def test_client_leaving_during_open_frees_state():
    engine = PatternEngine()
    slow_open = engine.open
    release = threading.Event()

    def open_slowly(*a):
        release.wait(5.0)
        return slow_open(*a)

    engine.open = open_slowly
    worker = EngineWorker(engine, Metrics())
    s = Session(worker, StreamConfig())
    task = asyncio.ensure_future(s.start(SessionOptions()))
    await asyncio.sleep(0)  # the open is under way in the executor
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("start() was not cancelled")
    release.set()
    await wait_until(lambda: len(engine.opened) == 1 and engine.opened[0].closed)


async def test_one_slow_call_does_not_starve_the_sessions_for_good():
    # The first chunk takes 0.6 s: every chunk queued meanwhile looks too late to be worth
    # rendering at that speed. The estimate must recover, or nothing would ever render again.
    engine = PatternEngine(chunk_frames=1, max_batch=1, first_delay_s=0.6)
    metrics = Metrics()
    worker = EngineWorker(engine, metrics)
    worker.start()
    (s,) = await open_sessions(worker, 1)
    await feed_realtime([s], 2.0)
    await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    assert metrics.sample("liveface_chunks_dropped_total", reason="late") > 0
    assert metrics.sample("liveface_chunks_rendered_total") > 20  # rendering resumed
