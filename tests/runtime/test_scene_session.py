"""Scene sessions through Runtime.open_session (the one way in), on the scene test engine."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.base import SceneRequest
from liveface.errors import BadInputError, UnknownCharacterError
from liveface.pipeline.scene import ScenePipeline
from liveface.runtime.config import ServerConfig
from liveface.runtime.events import CloseReason, PlaybackEvent
from liveface.runtime.runtime import Runtime, SessionRequest, prepare_portrait
from tests.doubles import PatternEngine
from tests.scene_doubles import ScenePatternEngine, SceneState

RATE = 16000


def face(seed: int, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, width, 3), dtype=np.uint8)


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 15))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.fixture
async def runtime():
    rt = Runtime(ServerConfig(max_sessions=2), ScenePatternEngine(size=64))
    rt.start()
    yield rt
    await rt.aclose()


async def test_a_scene_session_has_a_lane_and_an_ingest_per_character(runtime):
    events: list[object] = []
    request = SessionRequest(face(0), scene=SceneRequest(count=3))
    session = await runtime.open_session(request, runtime.stream_config(live=False), events.append)
    assert isinstance(session.stream, ScenePipeline)
    assert session.num_characters == 3
    assert len(session.ingests) == 3
    assert len({id(i) for i in session.ingests}) == 3
    session.start_clock()
    pacer = session.video_pacer(with_audio=True)  # its playhead drives the playback events
    session.push(speech(0.5), character=2)
    assert session.pending_seconds(2) > 0.4
    assert session.pending_seconds(0) < 0.1
    assert session.end_segment(2) == 0
    while not any(isinstance(e, PlaybackEvent) for e in events):
        assert await pacer.next_frame() is not None
    assert [e.character for e in events if isinstance(e, PlaybackEvent)][:1] == [2]
    for bad in (3, -1, True, "1"):
        with pytest.raises(UnknownCharacterError, match=r"0\.\.2"):
            session.push(speech(0.1), character=bad)  # type: ignore[arg-type]
    session.clear(2)
    session.release_character(1)
    await runtime.close_session(session, CloseReason.CLIENT_CLOSED)
    assert all(st.closed for st in runtime.engine.opened if isinstance(st, SceneState))


async def test_an_engine_without_scenes_refuses_one_and_keeps_no_slot():
    rt = Runtime(ServerConfig(max_sessions=1), PatternEngine(size=64))
    rt.start()
    try:
        request = SessionRequest(face(1), scene=SceneRequest(count=2))
        with pytest.raises(BadInputError, match="animates one character"):
            await rt.open_session(request, rt.stream_config(live=False))
        assert len(rt.registry) == 0
        single = await rt.open_session(SessionRequest(face(1)), rt.stream_config(live=False))
        assert single.characters == ()
        with pytest.raises(UnknownCharacterError):
            single.push(speech(0.1), character=1)
        await rt.close_session(single, CloseReason.CLIENT_CLOSED)
    finally:
        await rt.aclose()


def test_several_portraits_make_one_character_each():
    image, scene = prepare_portrait(SessionRequest([face(2, 40), face(3, 20)]))
    assert image is not None
    assert image.shape == (48, 60, 3)
    assert scene is not None
    assert scene.boxes == ((0.0, 0.0, 40 / 60, 1.0), (40 / 60, 0.0, 1.0, 1.0))
    same, _ = prepare_portrait(SessionRequest([face(2)], scene=SceneRequest(count=1)))
    assert same is not None
    with pytest.raises(BadInputError, match="one each"):
        prepare_portrait(SessionRequest([face(2), face(3)], scene=SceneRequest(count=3)))
    with pytest.raises(BadInputError, match="one each"):
        prepare_portrait(
            SessionRequest([face(2), face(3)], scene=SceneRequest(boxes=((0, 0, 1, 1),) * 2))
        )
    with pytest.raises(BadInputError, match="1 to 8"):
        SceneRequest(count=9)
    with pytest.raises(BadInputError, match="either"):
        SceneRequest()
