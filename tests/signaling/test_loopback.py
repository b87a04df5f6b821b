"""A real aiortc client against the real server on loopback, with the pattern test engine."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from liveface.runtime.config import ServerConfig
from liveface.runtime.metrics import SessionCounter
from liveface.runtime.runtime import Runtime
from tests.doubles import PatternEngine, decode_index, mouth_level
from tests.serving import serve
from tests.signaling.peer import MIC_RATE, Client
from tests.waiting import wait_until


def tone_then_silence(speech_s=1.5, silence_s=1.5):
    t = np.arange(int(speech_s * MIC_RATE)) / MIC_RATE
    speech = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return np.concatenate([speech, np.zeros(int(silence_s * MIC_RATE))]).astype(np.float32)


@pytest.fixture
async def server():
    engine = PatternEngine(size=128, chunk_frames=1, first_chunk_frames=1, fail_on="boom")
    config = ServerConfig(max_sessions=2, delay_ms=80)
    runtime = Runtime(config, engine)
    async with serve(runtime) as url:
        yield url, runtime, engine


async def test_client_gets_frames_in_order_and_mouth_follows_audio(server):
    url, runtime, engine = server
    client = Client(url, tone_then_silence())
    answer = await client.connect()
    assert answer["status"] == 200
    assert answer["width"] == 128
    # Until the frames of the silence after the tone (3 s of signal at 25 fps) have arrived.
    await wait_until(lambda: client.video and decode_index(client.video[-1][2]) >= 75)
    await client.close()
    assert len(client.video) > 40
    indices = [decode_index(f) for _, _, f in client.video]
    # Frames come in media-clock order; pts derive from the frame index.
    assert indices == sorted(indices)
    fps = runtime.engine.spec.fps
    for (_, pts, _), _n in zip(client.video, indices, strict=True):
        assert pts % (90000 // fps) == 0
    levels = {n: mouth_level(f) for n, (_, _, f) in zip(indices, client.video, strict=True)}
    speech = [v for n, v in levels.items() if 5 <= n < 35]
    silence = [v for n, v in levels.items() if n >= 45]
    assert np.mean(speech) > np.mean(silence) + 30
    assert np.std(silence) < 5
    # The animated audio comes back too: loud while the tone played, quiet after.
    rms = np.array(
        [np.sqrt(np.mean((a.astype(np.float32) / 32768) ** 2)) for _, _, a in client.audio]
    )
    assert rms.size > 100
    assert np.percentile(rms[10:60], 50) > 0.05
    assert np.percentile(rms[-30:], 50) < 0.01
    await wait_until(lambda: len(runtime.registry) == 0)  # the peer left: its session is gone
    assert all(st.closed for st in engine.opened)


async def test_capacity_and_bad_input_get_json_errors(server):
    url, runtime, _ = server
    async with aiohttp.ClientSession() as http:

        async def post(**kw):
            async with http.post(f"{url}/offer", **kw) as r:
                return r.status, await r.json()

        status, body = await post(data=b"{not json", headers={"Content-Type": "application/json"})
        assert status == 400
        assert "JSON" in body["error"]["message"]
        status, body = await post(json={"sdp": "v=0\r\nnonsense", "type": "offer"})
        assert status == 400
        assert "audio" in body["error"]["message"]
        status, body = await post(json={"sdp": 5, "type": "offer"})
        assert status == 400
        status, body = await post(
            json={"sdp": "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}
        )
        assert status == 400
        assert "SDP" in body["error"]["message"]
    c_bad = Client(url, tone_then_silence())
    r = await c_bad.connect(portrait="data:image/png;base64,aGVsbG8=")
    assert r["status"] == 400
    assert "image" in r["error"]["message"]
    await c_bad.close()
    flat = "data:image/png;base64," + _png_b64(np.full((64, 64, 3), 90, np.uint8))
    c0 = Client(url, tone_then_silence())
    r = await c0.connect(portrait=flat)
    assert r["status"] == 422
    assert r["error"]["code"] == "no_face"
    await c0.close()
    assert len(runtime.registry) == 0
    clients = [Client(url, tone_then_silence()) for _ in range(3)]
    results = [await c.connect() for c in clients]
    assert [r["status"] for r in results] == [200, 200, 503]
    assert results[2]["error"]["retryable"] is True
    for c in clients:
        await c.close()
    await wait_until(lambda: len(runtime.registry) == 0)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as r:
        assert r.status == 200
        assert (await r.json())["sessions"] == 0
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        text = await r.text()
    assert "liveface_sessions_refused_total 1" in text


async def test_vanished_peer_is_freed_within_seconds(server, monkeypatch):
    import liveface.signaling.webrtc as webrtc

    monkeypatch.setattr(webrtc, "PEER_SILENT_TIMEOUT_S", 1.0)
    url, runtime, engine = server
    client = Client(url, tone_then_silence(1.0, 10.0))
    await client.connect()
    await wait_until(lambda: len(client.video) > 5)
    assert len(runtime.registry) == 1
    # Vanish without a goodbye: stop sending media, never close the connection politely.
    client.mic.stop()
    await wait_until(lambda: len(runtime.registry) == 0)
    assert engine.opened[-1].closed
    await client.close()


def _png_b64(img: np.ndarray) -> str:
    import base64

    import cv2

    _ok, buf = cv2.imencode(".png", img)
    return base64.b64encode(buf.tobytes()).decode()


async def test_sessions_leave_no_tasks_or_threads_behind(server):
    import gc
    import threading

    url, runtime, engine = server
    tasks_before = len(asyncio.all_tasks())
    threads_before = threading.active_count()
    for _ in range(4):
        client = Client(url, tone_then_silence(0.5, 0.5))
        await client.connect()
        await wait_until(lambda c=client: len(c.video) > 5)
        await client.close()
        await wait_until(lambda: len(runtime.registry) == 0)
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before)
    gc.collect()
    assert all(st.closed for st in engine.opened)
    assert len(asyncio.all_tasks()) <= tasks_before
    # Executors may keep a few idle worker threads; sessions themselves own none.
    assert threading.active_count() <= threads_before + 4


async def test_a_failing_session_ends_its_peer_and_spares_the_other(server):
    url, runtime, _engine = server
    good = Client(url, tone_then_silence(3.0, 1.0))
    bad = Client(url, tone_then_silence(3.0, 1.0))
    await good.connect()
    assert (await bad.connect(prompt="boom"))["status"] == 200
    await wait_until(lambda: len(runtime.registry) == 1)
    # The server hung up on it.
    await wait_until(lambda: bad.pc.connectionState in ("closed", "failed"))
    before = len(good.video)
    await wait_until(lambda: len(good.video) > before + 5)  # the other session carries on
    await good.close()
    await bad.close()


async def test_a_late_first_frame_and_engine_stalls_never_end_the_track():
    # The first chunk comes 0.6 s late (past the pacer's catch-up window) and every 40th call
    # stalls for 0.5 s: the video track skips ahead, repeats, counts it, and goes on.
    engine = PatternEngine(size=128, chunk_frames=1, first_chunk_frames=1, first_delay_s=0.6,
                           stall_every=40, stall_s=0.5)  # fmt: skip
    runtime = Runtime(ServerConfig(max_sessions=2, delay_ms=80), engine)
    async with serve(runtime) as url:
        client = Client(url, tone_then_silence(3.0, 3.0))
        try:
            assert (await client.connect())["status"] == 200
            (session,) = runtime.registry.sessions()
            await wait_until(lambda: client.video and decode_index(client.video[-1][2]) >= 125)
            assert runtime.registry.sessions() == [session]  # the session lives on
            assert not session.closing
        finally:
            await client.close()
    pts = [p for _, p, _ in client.video]
    assert pts == sorted(pts)  # the media clock only moves forward
    counters = session.counters()
    assert counters[SessionCounter.FRAMES_REPEATED] > 0  # the stalls showed as repeats
    assert counters[SessionCounter.FRAMES_LATE] + counters[SessionCounter.FRAMES_REPEATED] > 10
