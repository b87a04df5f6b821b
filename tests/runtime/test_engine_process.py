"""Engines in child processes: the same frames as in-process, errors by type, a dead child ends
only its own sessions and is started again."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from liveface.engines.base import AudioChunk
from liveface.errors import EngineError, NoFaceError
from liveface.runtime.config import ServerConfig
from liveface.runtime.engine_process import ProcessEngine
from liveface.runtime.events import CloseReason, SessionClosed, SessionError
from liveface.runtime.runtime import Runtime, SessionRequest
from tests.doubles import PatternEngine
from tests.waiting import wait_until

FACTORY = functools.partial(PatternEngine, size=64, chunk_frames=4, first_chunk_frames=4)


def chunks(spec, n: int, seed: int = 0) -> list[AudioChunk]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = i * spec.chunk_frames
        start, end = spec.frame_start(first), spec.frame_start(first + spec.chunk_frames)
        window = np.concatenate(
            [np.zeros(spec.left_context, np.float32), 0.2 * rng.standard_normal(end - start)]
        ).astype(np.float32)
        out.append(AudioChunk(i, first, spec.chunk_frames, start, end, window,
                              spec.left_context, voiced=True))  # fmt: skip
    return out


@pytest.fixture
def remote():
    engine = ProcessEngine(FACTORY, "engine-test")
    yield engine
    engine.shutdown()


def test_a_child_gives_the_frames_of_the_same_engine_in_process(remote):
    local = FACTORY()
    assert remote.spec == local.spec
    assert remote.name == "pattern"
    a, b = remote.open(None, None, {}), remote.open(None, None, {})
    la, lb = local.open(None, None, {}), local.open(None, None, {})
    assert remote.describe(a)["pid"] != os.getpid()  # it really runs elsewhere
    for ca, cb in zip(chunks(local.spec, 3, 1), chunks(local.spec, 3, 2), strict=True):
        got = remote.generate([(a, ca), (b, cb)])
        want = local.generate([(la, ca), (lb, cb)])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g.frames, w.frames)
            np.testing.assert_array_equal(g.audio, w.audio)
            assert (g.first_frame, g.start, g.epoch) == (w.first_frame, w.start, w.epoch)
    remote.interrupt(a)
    remote.close(a)
    remote.close(b)
    with pytest.raises(KeyError):
        remote.generate([(a, chunks(local.spec, 1)[0])])  # a closed session is gone


def test_errors_cross_with_their_type(remote):
    with pytest.raises(NoFaceError, match="no face"):
        remote.open(np.full((64, 64, 3), 90, np.uint8), None, {})
    assert remote.alive  # a refused portrait costs nothing else


def test_a_dead_child_fails_its_calls_and_starts_again(remote):
    state = remote.open(None, None, {})
    remote.generate([(state, chunks(remote.spec, 1)[0])])
    arenas = [f"{remote._prefix}{k}" for k in range(2)]
    assert os.path.exists(f"/dev/shm/{arenas[0]}")
    remote._proc.kill()
    with pytest.raises(EngineError, match="engine-test"):
        remote.generate([(state, chunks(remote.spec, 1)[0])])
    assert not remote.alive
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in arenas)  # nothing leaks
    fresh = remote.open(None, None, {})  # started again
    assert remote.alive
    (out,) = remote.generate([(fresh, chunks(remote.spec, 1)[0])])
    assert out.frames.shape == (4, 64, 64, 3)


async def test_a_dead_engine_process_ends_its_sessions_and_the_server_carries_on():
    engines = [ProcessEngine(FACTORY, f"engine-{i}") for i in range(2)]
    runtime = Runtime(ServerConfig(max_sessions=4), engines)
    runtime.start()
    events: dict[str, list] = {}
    try:
        sessions = []
        for _ in range(2):
            box: list = []
            s = await runtime.open_session(
                SessionRequest(), runtime.stream_config(live=False), box.append
            )
            events[s.id] = box
            s.start_clock()
            sessions.append(s)
        assert {s.worker.name for s in sessions} == {"engine-worker-0", "engine-worker-1"}
        victim, survivor = sessions
        victim.worker.engine._proc.kill()
        tone = (0.2 * np.sin(np.arange(3200) / 10)).astype(np.float32)
        for s in sessions:
            s.push(tone)
        await wait_until(lambda: victim.closed)
        assert victim.close_reason is CloseReason.ENGINE_FAILED
        assert any(isinstance(e, SessionError) for e in events[victim.id])
        assert isinstance(events[victim.id][-1], SessionClosed)
        await wait_until(lambda: survivor.first_frame_at is not None)
        assert not survivor.closing
        await wait_until(lambda: len(runtime.registry) == 1)
        # A new session on the dead engine's worker starts the child again.
        again = await runtime.open_session(SessionRequest(), runtime.stream_config(live=False))
        again.start_clock()
        again.push(tone)
        await wait_until(lambda: again.first_frame_at is not None)
        assert runtime.healthy
    finally:
        await runtime.aclose()
    assert not any(e.alive for e in engines)
