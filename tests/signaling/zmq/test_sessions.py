"""Real ZeroMQ sockets on loopback against the pattern engine: the session life cycle."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from liveface.client import AsyncClient, Event, Frame, ServerError
from liveface.errors import ConfigError
from liveface.protocol.messages import MsgType
from liveface.signaling.zmq_server import ZmqOptions, ZmqServer
from tests.doubles import PatternEngine, decode_index, mouth_level
from tests.signaling.zmq.helpers import IDLE_LEVEL, speech, to_s16, zmq_server
from tests.waiting import wait_until


async def collect(session, until, limit_s: float = 8.0):
    """Frames and events until ``until(item)`` is true (that item included)."""
    frames, events = [], []
    async with asyncio.timeout(limit_s):
        async for item in session:
            (frames if isinstance(item, Frame) else events).append(item)
            if until(item):
                break
    return frames, events


def finished(item) -> bool:
    return isinstance(item, Event) and item.kind == "playback_finished"


async def test_open_push_frames_close():
    async with zmq_server() as (server, runtime), AsyncClient(server.endpoint) as client:
        session = await client.open()
        assert (session.width, session.height, session.fps) == (64, 64, 25)
        assert session.sample_rate == 16000
        assert session.timeout_s == 10.0
        # 1 s of speech at 48 kHz, 16-bit, pushed faster than real time in 20 ms blocks.
        pcm = to_s16(speech(1.0, rate=48000))
        for block in np.split(pcm, 50):
            ack = await session.push(block, rate=48000)
            assert ack["dropped"] == 0
        assert ack["queued_s"] > 0.5  # queued, paced by the server
        assert await session.end_segment() == 0
        frames, events = await collect(session, finished)
        frames += (
            await collect(
                session, lambda i: isinstance(i, Frame) and i.index > frames[-1].index + 5
            )
        )[0]
        info = await session.close()
        assert info["reason"] == "client_closed"
        assert info["frames_sent"] >= len(frames)
    spec = runtime.engine.spec
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert len(frames) > 25
    # Consecutive frames carry consecutive audio: together they are the session's audio track.
    assert all(b.pts == a.pts + a.audio.shape[0] for a, b in itertools.pairwise(frames)), [
        (f.index, f.fresh, f.dropped, round(f.received_at, 3)) for f in frames
    ]
    for f in frames:
        assert f.pts == spec.frame_start(f.index)
        assert f.rate == 16000
        assert f.audio.shape == (spec.frame_start(f.index + 1) - f.pts,)
        img = f.image()
        assert img.shape == (64, 64, 3)
        assert decode_index(img) == f.index
    loud = [f for f in frames if np.sqrt(np.mean(f.audio**2)) > 0.05]
    quiet = [f for f in frames if np.sqrt(np.mean(f.audio**2)) < 1e-4]
    assert 20 <= len(loud) <= 27
    assert quiet
    assert np.mean([mouth_level(f.image()) for f in loud]) > IDLE_LEVEL + 60
    assert max(mouth_level(f.image()) for f in quiet[-3:]) <= IDLE_LEVEL + 1
    kinds = [e.kind for e in events]
    assert kinds == ["playback_started", "playback_finished"]
    assert events[1].data["interrupted"] is False
    assert events[1].data["position"] == pytest.approx(1.0, abs=0.01)
    assert len(runtime.registry) == 0
    assert all(st.closed for st in runtime.engine.opened)


async def test_clear_returns_to_idle_within_one_chunk():
    async with zmq_server() as (server, runtime), AsyncClient(server.endpoint) as client:
        session = await client.open()
        await session.push(speech(4.0), rate=16000)
        await collect(session, lambda i: isinstance(i, Event) and i.kind == "playback_started")
        loud = 0

        def talking(item) -> bool:
            nonlocal loud
            loud += isinstance(item, Frame) and mouth_level(item.image()) > 100
            return loud >= 10  # well into the speech

        await collect(session, talking)
        state = runtime.engine.opened[-1]  # this session's engine state
        before = state.interrupted
        await session.clear()
        cleared_at = time.monotonic()
        after, events = [], []
        async with asyncio.timeout(3):
            while time.monotonic() - cleared_at < 0.6:
                item = await session.next()
                (after if isinstance(item, Frame) else events).append(item)
        assert state.interrupted == before + 1
        [fin] = [e for e in events if e.kind == "playback_finished"]
        assert fin.data["interrupted"] is True
        assert 0.3 < fin.data["position"] < 4.0
        chunk_s = runtime.engine.spec.chunk_frames / runtime.engine.spec.fps
        levels = [(f.received_at - cleared_at, mouth_level(f.image())) for f in after]
        # It was speaking when the clear came (``talking`` saw the mouth open); frames sent
        # before the clear may still be in flight, and a chunk later the mouth is closed.
        assert loud >= 10
        late = [lvl for dt, lvl in levels if dt > chunk_s + 0.02]
        assert late
        assert max(late) <= IDLE_LEVEL + 1
        assert [f.index for f in after] == sorted(f.index for f in after)
        # The session goes on: speech after the barge-in animates again.
        await session.push(speech(0.5), rate=16000)
        frames, _ = await collect(
            session, lambda i: isinstance(i, Frame) and mouth_level(i.image()) > 100, limit_s=3
        )
        assert frames


async def test_several_clients_and_ownership():
    async with zmq_server(max_sessions=3) as (server, runtime):
        clients = [await AsyncClient(server.endpoint).connect() for _ in range(4)]
        sessions = [
            await c.open(format="jpeg" if i == 1 else "rgb") for i, c in enumerate(clients[:3])
        ]
        assert len({s.id for s in sessions}) == 3
        with pytest.raises(ServerError) as refused:
            await clients[3].open()
        assert refused.value.code == "at_capacity"
        assert refused.value.retryable
        # Another client's session id is unknown to everyone but its owner.
        with pytest.raises(ServerError) as e:
            await _push_as(clients[3], sessions[0].id)
        assert e.value.code == "unknown_session"
        await sessions[0].push(speech(0.6), rate=16000)
        got = await asyncio.gather(
            *(collect(s, lambda i: isinstance(i, Frame) and i.index >= 20) for s in sessions)
        )
        for (frames, _), s in zip(got, sessions, strict=True):
            assert all(f.session == s.id for f in frames)
            assert [f.index for f in frames] == sorted(f.index for f in frames)
        assert got[1][0][0].format == "jpeg"
        assert got[1][0][0].image().shape == (64, 64, 3)
        assert max(mouth_level(f.image()) for f in got[0][0]) > 100
        assert max(mouth_level(f.image()) for f in got[2][0]) <= IDLE_LEVEL + 1
        assert await clients[0].ping() == [sessions[0].id]
        for c in clients:
            await c.aclose()
        await wait_until(lambda: len(runtime.registry) == 0)


async def _push_as(client: AsyncClient, session_id: str):
    header = {"session": session_id, "rate": 16000, "format": "f32le"}
    return await client.request(MsgType.AUDIO, header, np.zeros(320, np.float32).tobytes())


async def test_bad_input_gets_error_replies_and_session_carries_on():
    options = ZmqOptions(max_payload_bytes=64 * 1024)
    async with zmq_server(options) as (server, runtime), AsyncClient(server.endpoint) as client:
        session = await client.open()

        async def code_of(coro) -> str:
            with pytest.raises(ServerError) as e:
                await coro
            return e.value.code

        assert await code_of(session.push(b"\x00" * 3, rate=16000, fmt="s16le")) == "bad_audio"
        assert await code_of(session.push(np.zeros(100, np.float32), rate=5)) == "bad_audio"
        assert await code_of(session.push(np.zeros(100, np.float32), rate=400000)) == "bad_audio"
        assert await code_of(session.push(np.zeros(20000, np.float32), rate=16000)) == "too_large"
        assert await code_of(client.open(portrait=b"not an image")) == "bad_input"
        flat = np.full((64, 64, 3), 90, np.uint8)
        assert await code_of(client.open(portrait=flat)) == "no_face"
        ack = await session.push(to_s16(speech(0.2, rate=22050)), rate=22050)
        assert ack["accepted"] > 2500  # resampled to 16 kHz, less the filter delay
        await session.close()
        assert (
            await code_of(client.request(MsgType.CLEAR, {"session": session.id}))
            == "unknown_session"
        )
    assert len(runtime.registry) == 0
    assert all(st.closed for st in runtime.engine.opened)


async def test_vanished_client_is_freed_and_pinging_client_is_kept():
    options = ZmqOptions(client_timeout_s=2.0)
    async with zmq_server(options) as (server, runtime):
        keeper = await AsyncClient(server.endpoint, ping_interval_s=0.25).connect()
        kept = await keeper.open()
        kept_state = runtime.engine.opened[-1]
        leaver = await AsyncClient(server.endpoint, ping_interval_s=0.25).connect()
        await leaver.open()
        left_state = runtime.engine.opened[-1]
        assert len(runtime.registry) == 2
        await leaver.aclose(close_sessions=False)  # gone without a goodbye
        assert len(runtime.registry) == 2  # silence ends a client only after the timeout
        await wait_until(lambda: len(runtime.registry) == 1)
        assert left_state.closed
        assert not kept_state.closed
        # Nothing to poll for: the pinging client must simply outlive another timeout.
        await asyncio.sleep(options.client_timeout_s * 1.5)
        assert await keeper.ping() == [kept.id]
        await keeper.aclose()
        await wait_until(lambda: len(runtime.registry) == 0)


async def test_engine_failure_ends_the_session_cleanly():
    engine = PatternEngine(size=64, chunk_frames=2, first_chunk_frames=1, fail_on="boom")
    async with zmq_server(engine=engine) as (server, _runtime), AsyncClient(server.endpoint) as c:
        healthy = await c.open()
        doomed = await c.open(prompt="boom")
        _, events = await collect(doomed, lambda i: isinstance(i, Event) and i.kind == "closed")
        assert [e.kind for e in events][-2:] == ["error", "closed"]
        assert events[-1].data["reason"] == "engine_failed"
        assert doomed.closed
        assert await c.ping() == [healthy.id]  # the other session carries on
        frames, _ = await collect(healthy, lambda i: isinstance(i, Frame))
        assert frames
    assert all(st.closed for st in engine.opened)


async def test_bind_errors_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        ZmqOptions(frame_queue=0)
    async with zmq_server() as (server, runtime):
        other = ZmqServer(runtime, address=server.endpoint)
        with pytest.raises(ConfigError, match="cannot bind"):
            await other.start()
        with pytest.raises(ConfigError, match="CURVE"):
            await ZmqServer(runtime, address="tcp://127.0.0.1:*", curve_dir="/nonexistent").start()


async def test_playback_events_never_overtake_the_frames_that_carry_their_samples(monkeypatch):
    from liveface.signaling.zmq_link import SessionLink

    encode = SessionLink._encode

    async def slow_encode(self, item):  # as a JPEG encode in the executor takes a while
        await asyncio.sleep(0.015)
        return await encode(self, item)

    monkeypatch.setattr(SessionLink, "_encode", slow_encode)
    kinds: list[str | bool] = []  # what the client received, in order: events, frames voiced?
    async with zmq_server() as (server, _), AsyncClient(server.endpoint) as client:
        session = await client.open()
        for _ in range(3):
            await session.push(to_s16(speech(0.5)), rate=16000)
            await session.end_segment()
            async with asyncio.timeout(8.0):
                async for item in session:
                    if isinstance(item, Event):
                        kinds.append(item.kind)
                        if finished(item):
                            break
                    else:
                        kinds.append(bool(np.any(item.audio)))
        await session.close()
    assert kinds.count("playback_started") == kinds.count("playback_finished") == 3
    # started comes after the frame with the segment's first voiced sample, finished after the
    # one with its last: the frame right after finished is silent (the next segment is pushed
    # once finished has arrived and starts behind the output delay's silent frames).
    since_finished: list[str | bool] = []
    for k, kind in enumerate(kinds):
        if kind == "playback_started":
            assert True in since_finished, kinds
        if kind == "playback_finished":
            assert k + 1 == len(kinds) or kinds[k + 1] is False, kinds
            since_finished = []
        else:
            since_finished.append(kind)
