"""The clients themselves: the synchronous client against a real server, and what a client
receives (frames, errors, CURVE keys)."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from liveface.client import CurveKeys, Event, Frame, ServerError, SyncClient
from liveface.client.async_client import _portrait_bytes
from liveface.protocol.curve import create_curve_dir
from tests.doubles import decode_index, mouth_level
from tests.signaling.zmq.helpers import speech, to_s16, zmq_server
from tests.waiting import wait_until


def _sync_session(endpoint: str) -> tuple[list[Frame], list[Event], dict]:
    with SyncClient(endpoint) as client:
        assert client.ping() == []
        session = client.open(format="jpeg", jpeg_quality=90)
        session.push(to_s16(speech(0.6)), rate=16000)
        session.end_segment()
        frames, events = [], []
        for item in session:
            (frames if isinstance(item, Frame) else events).append(item)
            if isinstance(item, Event) and item.kind == "playback_finished":
                break
        info = session.close()
        with pytest.raises(TimeoutError):
            client.open().next(timeout=0.01)
    return frames, events, info


async def test_sync_client():
    async with zmq_server() as (server, runtime):
        frames, events, info = await asyncio.to_thread(_sync_session, server.endpoint)
        assert [e.kind for e in events] == ["playback_started", "playback_finished"]
        assert frames
        assert all(f.format == "jpeg" for f in frames)
        assert [decode_index(f.image()) for f in frames] == [f.index for f in frames]
        assert max(mouth_level(f.image()) for f in frames) > 100
        assert info["reason"] == "client_closed"
        await wait_until(lambda: len(runtime.registry) == 0)


def frame(fmt: str, data: bytes, w: int = 4, h: int = 3) -> Frame:
    return Frame("s1", 0, 0, 16000, True, 0, fmt, w, h, data, np.zeros(640, np.float32))


def test_frames_decode_rgb_and_jpeg_payloads():
    img = np.zeros((3, 4, 3), np.uint8)
    img[:, :, 0] = 200
    np.testing.assert_array_equal(frame("rgb", img.tobytes()).image(), img)
    ok, jpg = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    got = frame("jpeg", jpg.tobytes()).image()
    assert got.shape == (3, 4, 3)
    assert abs(int(got[0, 0, 0]) - 200) <= 3
    with pytest.raises(ValueError, match="JPEG"):
        frame("jpeg", b"not a jpeg").image()


def test_server_errors_keep_code_message_and_retryable():
    e = ServerError("at_capacity", "the server is full", retryable=True)
    assert (e.code, e.message, e.retryable) == ("at_capacity", "the server is full", True)
    assert "at_capacity" in str(e)


def test_curve_keys_load_from_the_files_the_server_writes(tmp_path):
    create_curve_dir(tmp_path / "keys", clients=("alice",))
    keys = CurveKeys.from_files(
        tmp_path / "keys" / "clients" / "alice.key_secret", tmp_path / "keys" / "server.key"
    )
    assert len(keys.public) == len(keys.secret) == len(keys.server_public) == 40  # Z85


def test_portraits_are_sent_encoded(tmp_path):
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[:, :, 0] = 255
    data = _portrait_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert back[0, 0, 2] == 255  # still red after the RGB -> BGR swap
    path = tmp_path / "p.png"
    path.write_bytes(data)
    assert _portrait_bytes(path) == data == _portrait_bytes(str(path))
