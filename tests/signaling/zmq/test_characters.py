"""Protocol version 2 over real ZeroMQ sockets: scenes with several characters, and version 1
clients on the same server (the scene pattern engine renders each character's mouth from its own
voice)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import zmq
import zmq.asyncio

from liveface.client import AsyncClient, Event, Frame, ServerError
from liveface.protocol.messages import SPECS, Limits, MsgType, decode, encode
from tests.scene_doubles import IDLE, ScenePatternEngine, SceneState, mouth_levels
from tests.signaling.zmq.helpers import speech, to_s16, zmq_server

RATE = 16000


def portrait(seed: int = 0, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (64, width, 3), dtype=np.uint8)


def scene_server(**kw):
    return zmq_server(engine=ScenePatternEngine(size=64, chunk_frames=2), **kw)


async def collect(session, until, limit_s: float = 10.0):
    frames, events = [], []
    async with asyncio.timeout(limit_s):
        async for item in session:
            (frames if isinstance(item, Frame) else events).append(item)
            if until(item, events):
                break
    return frames, events


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


async def test_two_characters_take_turns_each_with_its_own_mouth_and_audio():
    async with scene_server() as (server, _), AsyncClient(server.endpoint) as client:
        session = await client.open(portrait(), characters=2, character_audio=True)
        assert [c["id"] for c in session.characters] == [0, 1]
        assert session.characters[0]["box"][0] < session.characters[1]["box"][0]
        a, b = to_s16(speech(1.0)), to_s16(speech(1.0))
        gap = np.zeros(RATE, np.int16)
        # One track per character on the one clock: 0 speaks, then 1 (0 is silent meanwhile).
        ack = await session.push(np.concatenate([a, gap]), rate=RATE, character=0)
        assert (ack["character"], ack["dropped"]) == (0, 0)
        assert (await session.push(np.concatenate([gap, b]), rate=RATE, character=1))[
            "character"
        ] == 1
        assert await session.end_segment(character=0) == 0
        assert await session.end_segment(character=1) == 0

        def done(item, events):
            return sum(e.kind == "playback_finished" for e in events) == 2

        frames, events = await collect(session, done)
        await session.close()
    started = [(e.kind, e.data["character"]) for e in events if e.kind == "playback_started"]
    assert started == [("playback_started", 0), ("playback_started", 1)]
    first = [f for f in frames if 0.2 * RATE <= f.pts < 0.8 * RATE]
    second = [f for f in frames if 1.2 * RATE <= f.pts < 1.8 * RATE]
    assert len(first) > 8
    assert len(second) > 8
    for f in frames:
        assert len(f.voices) == 2
        np.testing.assert_allclose(f.audio, np.clip(f.voices[0] + f.voices[1], -1, 1), atol=1e-6)
    for f in first:
        left, right = mouth_levels(f.image(), 2)
        assert left > IDLE + 40
        assert right == IDLE
        assert rms(f.voices[0]) > 0.05
        assert rms(f.voices[1]) == 0.0
    for f in second:
        left, right = mouth_levels(f.image(), 2)
        assert right > IDLE + 40
        assert left == IDLE
        assert rms(f.voices[1]) > 0.05
        assert rms(f.voices[0]) == 0.0


async def test_clearing_one_character_leaves_the_other_speaking():
    async with scene_server() as (server, _), AsyncClient(server.endpoint) as client:
        session = await client.open(portrait(), characters=2, character_audio=True)
        await session.push(to_s16(speech(4.0)), rate=RATE, character=0)
        await session.push(to_s16(speech(4.0)), rate=RATE, character=1)
        await collect(session, lambda item, _: isinstance(item, Frame) and item.pts > RATE // 2)
        ack = await session.clear(character=0)
        assert ack["character"] == 0
        assert ack["queued_s"] < 0.5  # character 0 has nothing queued any more
        cut = (await session.push(np.zeros(160, np.int16), rate=RATE, character=1))["queued_s"]
        assert cut > 2.5  # character 1 still has its speech queued
        frames, events = await collect(
            session, lambda item, _: isinstance(item, Frame) and item.pts > 2 * RATE
        )
        await session.close()
    assert [(e.kind, e.data["character"], e.data["interrupted"]) for e in events] == [
        ("playback_finished", 0, True)
    ]
    late = frames[-10:]
    assert all(rms(f.voices[0]) == 0.0 and rms(f.voices[1]) > 0.05 for f in late)
    assert all(mouth_levels(f.image(), 2)[1] > IDLE + 40 for f in late)
    assert all(mouth_levels(f.image(), 2)[0] == IDLE for f in late)


async def test_portraits_composed_and_boxes_declare_the_characters():
    async with scene_server() as (server, runtime), AsyncClient(server.endpoint) as client:
        three = await client.open([portrait(1, 64), portrait(2, 32), portrait(3, 64)])
        assert len(three.characters) == 3
        boxed = await client.open(portrait(), boxes=[[0.5, 0, 1, 1], [0, 0, 0.5, 1]])
        assert len(boxed.characters) == 2
        scenes = [st.characters for st in runtime.engine.opened if isinstance(st, SceneState)]
        assert scenes == [3, 2]
        # A frame carries the whole scene and, unasked, only the mix.
        item = await asyncio.wait_for(boxed.next(), 5)
        assert isinstance(item, Frame)
        assert item.voices == ()


async def test_bad_characters_are_clear_errors_and_cost_nothing():
    async with scene_server() as (server, runtime), AsyncClient(server.endpoint) as client:
        session = await client.open(portrait(), characters=2)
        with pytest.raises(ServerError) as e:
            await session.push(to_s16(speech(0.1)), rate=RATE, character=2)
        assert e.value.code == "unknown_character"
        assert "0..1" in e.value.message
        with pytest.raises(ServerError) as e:
            await session.clear(character=5)
        assert e.value.code == "unknown_character"
        with pytest.raises(ServerError) as e:
            await session.push(to_s16(speech(0.1)), rate=RATE, character=8)
        assert e.value.code == "bad_message"  # outside the schema's 0..7
        one = await client.open(portrait())  # no characters: one avatar, character 0 only
        assert one.characters == [
            {"id": 0, "box": [0.0, 0.0, 1.0, 1.0], "mouth_box": [0.35, 0.6, 0.65, 0.8]}
        ]
        with pytest.raises(ServerError) as e:
            await one.end_segment(character=1)
        assert e.value.code == "unknown_character"
        for bad in ({"characters": 2, "boxes": [[0, 0, 1, 1]]}, {"boxes": [[0.5, 0, 0.2, 1]]}):
            with pytest.raises(ServerError) as e:
                await client.request(MsgType.OPEN, bad)
            assert e.value.code == "bad_message"
        with pytest.raises(ServerError) as e:
            await client.open(portrait(), characters=9)
        assert e.value.code == "bad_message"
        # The sessions are untouched by the errors.
        assert (await session.push(to_s16(speech(0.1)), rate=RATE, character=1))["accepted"] > 0
        assert len(runtime.registry) == 2


async def test_a_scene_on_an_engine_without_scenes_is_refused():
    async with zmq_server() as (server, runtime), AsyncClient(server.endpoint) as client:
        with pytest.raises(ServerError) as e:
            await client.open(portrait(), characters=2)
        assert e.value.code == "bad_input"
        assert "animates one character" in e.value.message
        assert len(runtime.registry) == 0


async def test_version_1_clients_still_work_against_the_version_2_server():
    async with scene_server() as (server, _):
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(server.endpoint)
        limits = Limits(max_payload_bytes=1 << 24)

        async def recv():
            async with asyncio.timeout(5):
                frames = await sock.recv_multipart()
            assert frames[0][0] == 1, "a version-1 request is answered in version 1"
            return decode(frames, limits, requests=False)

        try:
            await sock.send_multipart(encode(MsgType.OPEN, {"req": 1}, version=1))
            opened = await recv()
            assert opened.type is MsgType.OPENED
            assert set(opened.header) == set(SPECS[MsgType.OPENED].schema)  # no v2 fields
            sid = opened.header["session"]
            header = {"req": 2, "session": sid, "rate": RATE, "format": "s16le"}
            pcm = to_s16(speech(0.5)).tobytes()
            await sock.send_multipart(encode(MsgType.AUDIO, header, pcm, version=1))
            await sock.send_multipart(
                encode(MsgType.SEGMENT_END, {"req": 3, "session": sid}, version=1)
            )
            kinds = set()
            while "playback_finished" not in kinds:
                msg = await recv()  # decoded against the version-1 schemas: strict
                if msg.type is MsgType.FRAME:
                    assert len(msg.payloads) == 2
                elif msg.type is MsgType.ACK:
                    assert "character" not in msg.header
                elif msg.type in (MsgType.PLAYBACK_STARTED, MsgType.PLAYBACK_FINISHED):
                    kinds.add(msg.type.name.lower())
            # A version-2 field in a version-1 message is refused, in version 1.
            bad = {"req": 4, "session": sid, "character": 0}
            await sock.send_multipart(encode(MsgType.CLEAR, bad, version=1))
            while (msg := await recv()).type is not MsgType.ERROR:
                pass
            assert (msg.header["code"], msg.req) == ("bad_message", 4)
            assert "character" in msg.header["message"]
        finally:
            sock.close(0)
            ctx.term()
        # And the reference client speaking version 1.
        async with AsyncClient(server.endpoint, protocol_version=1) as client:
            session = await client.open(portrait())
            assert session.characters == [{"id": 0, "box": [0.0, 0.0, 1.0, 1.0]}]
            await session.push(to_s16(speech(0.3)), rate=RATE)
            await session.end_segment()
            _, events = await collect(session, lambda i, _: isinstance(i, Event) and
                                      i.kind == "playback_finished")  # fmt: skip
            assert "character" not in events[-1].data
            with pytest.raises(ValueError, match="version 2"):
                await client.open(portrait(), characters=2)
        assert json.dumps(events[-1].data)
