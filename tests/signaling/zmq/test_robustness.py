"""The endpoint under abuse: fuzzed multipart messages, a slow consumer, CURVE on and off."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveface.client import AsyncClient, CurveKeys
from liveface.protocol.curve import create_curve_dir
from liveface.protocol.messages import PROTOCOL_VERSION, Limits, MsgType, decode, encode
from liveface.signaling.zmq_server import ZmqOptions
from tests.doubles import PatternEngine
from tests.signaling.zmq.helpers import server_thread, speech, zmq_server
from tests.waiting import wait_until

LIMITS = Limits(max_payload_bytes=1 << 30)


def recv_until(sock: zmq.Socket, wanted, limit_s: float = 3.0):
    """Messages from ``sock`` (decoded) until ``wanted(msg)``; returns that message or None."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if sock.poll(50):
            msg = decode(sock.recv_multipart(), LIMITS, requests=False)
            if wanted(msg):
                return msg
    return None


@pytest.fixture(scope="module")
def fuzz_target():
    """A server in a thread and a raw DEALER that owns one open session on it."""
    options = ZmqOptions(max_payload_bytes=4096, client_timeout_s=30)
    with server_thread(options=options, max_sessions=3) as (server, runtime):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.endpoint)
        sock.send_multipart(encode(MsgType.OPEN, {"req": 1}))
        opened = recv_until(sock, lambda m: m.type is MsgType.OPENED)
        assert opened is not None
        yield sock, opened.header["session"], runtime
        sock.close()
        ctx.term()


json_values = st.none() | st.booleans() | st.integers(-5, 70000) | st.floats() | st.text(max_size=6)
FIELDS = ["req", "session", "rate", "format", "channels", "prompt", "options", "jpeg_quality"]


@st.composite
def multipart(draw, session_id: str):
    """Random multipart messages: mostly near-valid requests, some random headers, raw bytes.

    The first choice of each ``sampled_from`` is the valid one, so examples that reach deep
    (audio decoding, resampling, session requests) stay common.
    """
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
    version = draw(st.sampled_from([PROTOCOL_VERSION] * 8 + [0, 2]))
    if kind == 8:
        t = draw(st.integers(0, 80))
        header = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
    else:
        t = draw(st.sampled_from([MsgType.AUDIO] * 4 + [MsgType.SEGMENT_END, MsgType.CLEAR]))
        header = {"session": draw(st.sampled_from([session_id] * 5 + ["s0", ""]))}
        if t is MsgType.AUDIO:
            header.update(
                rate=draw(st.sampled_from([16000, 44100, 8000, 48000, 7, 0, 200000])),
                format=draw(st.sampled_from(["s16le", "f32le", "s32le", "x"])),
                channels=draw(st.sampled_from([1, 1, 2, 3, 9])),
            )
        if draw(st.integers(0, 4)) == 4:
            header[draw(st.sampled_from(FIELDS))] = draw(json_values)
    try:
        body = json.dumps(header).encode()
    except ValueError:
        body = b"{"
    count = draw(st.sampled_from([int(t == MsgType.AUDIO)] * 4 + [0, 1, 2]))
    payloads = draw(st.lists(st.binary(max_size=5000), min_size=count, max_size=count))
    return [bytes([version, int(t)]), body, *payloads]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_fuzzed_messages_never_stop_the_server(fuzz_target, data):
    sock, session_id, runtime = fuzz_target
    frames = data.draw(multipart(session_id))
    if frames[:1] == [bytes([PROTOCOL_VERSION, MsgType.CLOSE])]:
        frames[0] = bytes([PROTOCOL_VERSION, MsgType.CLEAR])  # keep the fixture's session open
    if frames[:1] == [bytes([PROTOCOL_VERSION, MsgType.OPEN])]:
        frames[0] = bytes([PROTOCOL_VERSION, MsgType.PING])  # do not fill the server up
    sock.send_multipart(frames)
    req = data.draw(st.integers(10**6, 10**7))
    sock.send_multipart(encode(MsgType.PING, {"req": req}))
    pong = recv_until(sock, lambda m: m.type is MsgType.PONG and m.req == req)
    assert pong is not None, "the server stopped answering"
    assert session_id in pong.header["sessions"]
    assert runtime.healthy


def test_errors_carry_a_code_and_the_request_id(fuzz_target):
    sock, session_id, _ = fuzz_target
    # The fuzz test before shared this session: let its queued requests play out first (a
    # session's requests are applied in order, so their errors come before this ack).
    sock.send_multipart(encode(MsgType.CLEAR, {"req": 4, "session": session_id}))
    assert recv_until(sock, lambda m: m.type is MsgType.ACK and m.req == 4) is not None
    sock.send_multipart([b"\x01"])
    err = recv_until(sock, lambda m: m.type is MsgType.ERROR)
    assert err.header["code"] == "bad_message"
    sock.send_multipart(
        encode(
            MsgType.AUDIO,
            {"req": 5, "session": session_id, "rate": 16000, "format": "s16le"},
            b"abc",
        )
    )
    err = recv_until(sock, lambda m: m.type is MsgType.ERROR)
    assert (err.header["code"], err.req, err.header["session"]) == ("bad_audio", 5, session_id)
    sock.send_multipart(
        encode(
            MsgType.AUDIO, {"req": 6, "session": "s999999", "rate": 16000, "format": "s16le"}, b"ab"
        )
    )
    err = recv_until(sock, lambda m: m.type is MsgType.ERROR)
    assert (err.header["code"], err.req) == ("unknown_session", 6)


async def test_slow_consumer_drops_frames_not_memory():
    options = ZmqOptions(frame_queue=4, sndhwm=2)
    engine = PatternEngine(size=512, chunk_frames=2, first_chunk_frames=1)
    async with zmq_server(options, engine=engine) as (server, runtime):
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 64 * 1024)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.endpoint)
        await sock.send_multipart(encode(MsgType.OPEN, {"req": 1}))
        opened = decode(await sock.recv_multipart(), LIMITS, requests=False)
        sid = opened.header["session"]
        [link] = [x for x in server._clients.links() if x.id == sid]
        peak = 0
        for _ in range(40):  # 2 s without reading while the server produces 50 frames
            await asyncio.sleep(0.05)
            peak = max(peak, len(link._frames))
        assert peak <= 4
        assert link.stats.frames_dropped > 20
        frames = []
        while len(frames) < 10:
            msg = decode(await sock.recv_multipart(), LIMITS, requests=False)
            if msg.type is MsgType.FRAME:
                frames.append(msg.header)
        assert frames[-1]["dropped"] > 20  # reported to the client
        await sock.send_multipart(encode(MsgType.CLOSE, {"req": 2, "session": sid}))
        await wait_until(lambda: len(runtime.registry) == 0)
        sock.close()
        ctx.term()
    [line] = [
        x
        for x in runtime.metrics.render().splitlines()
        if x.startswith("liveface_zmq_frames_dropped_total ")
    ]
    assert float(line.split()[1]) > 20


async def test_curve_authorised_client_works_and_others_get_nothing(tmp_path):
    keys = create_curve_dir(tmp_path / "keys", clients=("alice",))
    stranger = create_curve_dir(tmp_path / "other", clients=("mallory",))
    async with zmq_server(curve_dir=str(keys)) as (server, runtime):
        alice = CurveKeys.from_files(keys / "clients" / "alice.key_secret", keys / "server.key")
        async with AsyncClient(server.endpoint, curve=alice) as client:
            session = await client.open()
            await session.push(speech(0.3), rate=16000)
            assert await client.ping() == [session.id]
            assert (await session.next()) is not None
        mallory = CurveKeys.from_files(
            stranger / "clients" / "mallory.key_secret", keys / "server.key"
        )
        for curve in (mallory, None):
            async with AsyncClient(server.endpoint, curve=curve, request_timeout_s=0.5) as c:
                with pytest.raises(TimeoutError):
                    await c.ping()
        await wait_until(lambda: len(runtime.registry) == 0)
