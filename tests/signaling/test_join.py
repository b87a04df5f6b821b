"""A second WebRTC peer joins a scene as another character: real aiortc peers on loopback.

The scene pattern engine draws each character's mouth from its own voice, so the pixels both
peers receive tell who spoke when: peer A (character 0) speaks first, then peer B (character 1).
"""

from __future__ import annotations

import numpy as np
import pytest
from aiohttp import web

from liveface.runtime.config import ServerConfig
from liveface.runtime.runtime import Runtime
from liveface.signaling.http import PEERS, ROOMS, build_app
from tests.doubles import decode_index
from tests.scene_doubles import IDLE, ScenePatternEngine, mouth_levels
from tests.signaling.peer import MIC_RATE, Client
from tests.waiting import wait_until

SPEAK_S = 1.2


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(
        np.float32
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * MIC_RATE), np.float32)


@pytest.fixture
async def server():
    engine = ScenePatternEngine(size=128, chunk_frames=1, first_chunk_frames=1)
    runtime = Runtime(ServerConfig(max_sessions=2, delay_ms=80), engine)
    app = build_app(runtime, own_runtime=True)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", runtime, app
    await runner.cleanup()


def levels(client: Client) -> dict[int, list[float]]:
    """Each received frame's mouth levels (left, right), by media-clock frame index."""
    return {decode_index(f): mouth_levels(f, 2) for _, _, f in client.video}


async def test_a_second_peer_joins_with_the_token_and_drives_its_own_character(server):
    url, runtime, app = server
    a = Client(url, np.concatenate([tone(SPEAK_S), silence(6.0)]))
    first = await a.connect(characters=2)
    assert first["status"] == 200, first
    assert first["character"] == 0
    assert [c["id"] for c in first["characters"]] == [0, 1]
    token = first["join_token"]
    assert len(token) >= 32
    # B joins once A's turn is over: its microphone then speaks on the scene's clock.
    await wait_until(lambda: a.video and decode_index(a.video[-1][2]) >= 40)
    b = Client(url, np.concatenate([silence(0.3), tone(SPEAK_S), silence(3.0)]))
    second = await b.connect(join=token)
    assert second["status"] == 200, second
    assert (second["session"], second["character"]) == (first["session"], 1)
    joined_at = decode_index(a.video[-1][2])
    await wait_until(lambda: b.video and decode_index(b.video[-1][2]) >= joined_at + 75)
    seen_a, seen_b = levels(a), levels(b)
    await b.close()
    # A's turn, then B's: each character's mouth moves only for its own peer's voice.
    a_turn = [n for n, (left, _) in seen_a.items() if left > IDLE + 30]
    b_turn = [n for n, (_, right) in seen_b.items() if right > IDLE + 30]
    assert len(a_turn) > 15
    assert len(b_turn) > 15
    assert max(a_turn) < joined_at < min(b_turn)
    assert all(abs(seen_a[n][1] - IDLE) < 8 for n in a_turn)
    assert all(abs(seen_b[n][0] - IDLE) < 8 for n in b_turn)
    # Both peers see the one scene: the same frames carry the same mouths.
    common = sorted(set(seen_a) & set(seen_b))
    assert len(common) > 40
    assert all(np.allclose(seen_a[n], seen_b[n], atol=8) for n in common)
    # B hears the scene (its own voice mixed with the others').
    rms = [np.sqrt(np.mean((x.astype(np.float32) / 32768) ** 2)) for _, _, x in b.audio]
    assert max(rms) > 0.05
    # B left: its character listens again and the session goes on for A; B may come back.
    room = app[ROOMS].room_of(runtime.registry.sessions()[0])
    await wait_until(lambda: room.free() == [1])
    assert len(runtime.registry) == 1
    c = Client(url, silence(2.0))
    assert (await c.connect(join=token))["character"] == 1
    await a.close()  # the first peer leaving ends the scene and its joined peers
    await wait_until(lambda: len(runtime.registry) == 0)
    await wait_until(lambda: not app[PEERS])  # C's peer connection was closed by the server
    await c.close()
    assert len(app[ROOMS]) == 0


async def test_bad_tokens_and_characters_are_clear_errors(server):
    url, runtime, app = server
    a = Client(url, silence(8.0))
    first = await a.connect(characters=2)
    token = first["join_token"]

    async def join(**body):
        peer = Client(url, silence(1.0))
        got = await peer.connect(**body)
        await peer.close()
        return got["status"], got.get("error", {}).get("code"), got

    status, code, got = await join(join="x" * 32)
    assert (status, code) == (403, "join_refused")
    assert "join_token" in got["error"]["message"]
    assert (await join(join=token, character=2))[:2] == (400, "unknown_character")
    assert (await join(join=token, character=0))[:2] == (403, "join_refused")  # A's
    assert (await join(join=token, character="1"))[:2] == (400, "bad_input")
    assert (await join(character=1))[:2] == (400, "bad_input")  # no token
    assert (await join(join=token, portrait="data:,"))[:2] == (400, "bad_input")
    assert (await join(characters=9))[:2] == (400, "bad_input")
    assert (await join(boxes=[[0.6, 0, 0.2, 1]]))[:2] == (400, "bad_input")
    # A single avatar has no token to give.
    single = Client(url, silence(1.0))
    answer = await single.connect()
    assert "join_token" not in answer
    await single.close()
    # None of that touched the scene, which still has its free character.
    assert app[ROOMS].room_of(runtime.registry.sessions()[0]).free() == [1]
    await a.close()
    await wait_until(lambda: len(runtime.registry) == 0)
    # The token ended with its session.
    late = Client(url, silence(1.0))
    got = await late.connect(join=token)
    await late.close()
    assert (got["status"], got["error"]["code"]) == (403, "join_refused")
