"""The engine contract: chunks in, frames out; bad audio, batching, interrupt, close, config."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.base import AudioChunk
from liveface.engines.warp import WarpConfig, WarpEngine
from liveface.engines.warp.mouth import MouthDriver
from liveface.errors import ConfigError, SessionClosedError


def make_chunk(
    spec,
    first_frame: int,
    samples: np.ndarray | None,
    voiced: bool = True,
    num_frames: int = 1,
    epoch: int = 0,
) -> AudioChunk:
    """A chunk at ``first_frame``; ``samples`` of the right length by default (silence)."""
    start = spec.frame_start(first_frame)
    end = spec.frame_start(first_frame + num_frames)
    if samples is None:
        samples = np.zeros(end - start + spec.lookahead, np.float32)
    return AudioChunk(
        index=first_frame,
        first_frame=first_frame,
        num_frames=num_frames,
        start=start,
        end=end,
        window=samples,
        context=0,
        voiced=voiced,
        epoch=epoch,
    )


def loud(spec, n: int = 1) -> np.ndarray:
    """An open vowel ("ah") for ``n`` frames ``(samples,)``: harmonics of 140 Hz shaped by
    formants at 700, 1220 and 2600 Hz (a bare harmonic series reads as a hummed murmur)."""
    t = np.arange(spec.frame_start(n) + spec.lookahead) / spec.sample_rate
    formants = ((700.0, 130.0, 1.0), (1220.0, 150.0, 0.6), (2600.0, 250.0, 0.2))

    def gain(f: float) -> float:
        return 0.03 + sum(a * np.exp(-(((f - c) / b) ** 2)) for c, b, a in formants)

    x = sum(gain(140.0 * k) * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 28))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def open_mouth_frames(engine, state, frames: int = 6) -> np.ndarray:
    chunks = [make_chunk(engine.spec, f, loud(engine.spec)) for f in range(frames)]
    return np.concatenate([v.frames for v in engine.generate([(state, c) for c in chunks])])


def mouth_diff(state, frames: np.ndarray) -> np.ndarray:
    y0, y1, x0, x1 = state.mouth_box
    d = np.abs(frames[:, y0:y1, x0:x1].astype(np.int16) - state.portrait[y0:y1, x0:x1])
    return d.mean(axis=(1, 2, 3))


def test_video_chunk_fields(engine, still_state):
    engine.interrupt(still_state)
    chunk = make_chunk(engine.spec, 7, loud(engine.spec), epoch=3)
    (video,) = engine.generate([(still_state, chunk)])
    spec = engine.spec
    assert video.frames.shape == (1, spec.height, spec.width, 3)
    assert video.frames.dtype == np.uint8
    assert video.first_frame == 7
    assert video.start == spec.frame_start(7)
    assert video.epoch == 3
    assert video.voiced
    np.testing.assert_array_equal(video.audio, chunk.samples)
    assert video.audio.dtype == np.float32
    assert not np.shares_memory(video.audio, chunk.window)
    assert video.info.engine_ms is not None
    assert video.info.engine_ms > 0


def test_speech_opens_the_mouth(engine, still_state):
    engine.interrupt(still_state)
    diff = mouth_diff(still_state, open_mouth_frames(engine, still_state))
    assert diff[-1] > 5.0


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(np.zeros(0, np.float32), id="empty"),
        pytest.param(np.full(640, np.nan, np.float32), id="all-nan"),
        pytest.param(np.full(640, np.inf, np.float32), id="all-inf"),
        pytest.param(np.zeros(100, np.float32), id="short"),
    ],
)
def test_unusable_audio_is_silence(engine, still_state, window):
    engine.interrupt(still_state)
    (video,) = engine.generate([(still_state, make_chunk(engine.spec, 0, window))])
    assert mouth_diff(still_state, video.frames).max() == 0.0
    assert video.audio.shape == (640,)
    assert np.isfinite(video.audio).all()


def test_partly_nan_and_clipped_audio(engine, still_state):
    spec = engine.spec
    engine.interrupt(still_state)
    speech = loud(spec, 8)
    nan_burst = speech.copy()
    nan_burst[::7] = np.nan
    clipped = np.clip(speech * 40.0, -1.0, 1.0)
    overdriven = speech * 40.0  # beyond full scale, as a broken client might send
    for audio in (nan_burst, clipped, overdriven):
        chunk = make_chunk(spec, 0, audio, num_frames=8)
        (video,) = engine.generate([(still_state, chunk)])
        assert video.frames.shape[0] == 8
        assert mouth_diff(still_state, video.frames)[-1] > 5.0  # still talks
        assert np.isfinite(video.audio).all()
        engine.interrupt(still_state)


def test_unvoiced_chunks_keep_the_mouth_closed(engine, still_state):
    engine.interrupt(still_state)
    chunks = [make_chunk(engine.spec, f, loud(engine.spec), voiced=False) for f in range(4)]
    frames = np.concatenate([v.frames for v in engine.generate([(still_state, c) for c in chunks])])
    assert mouth_diff(still_state, frames).max() == 0.0


def test_zero_frame_chunk(engine, still_state):
    chunk = make_chunk(engine.spec, 0, np.zeros(0, np.float32), num_frames=0)
    (video,) = engine.generate([(still_state, chunk)])
    assert video.frames.shape == (0, engine.spec.height, engine.spec.width, 3)


def test_interrupt_returns_the_mouth_to_rest(engine, still_state):
    engine.interrupt(still_state)
    assert mouth_diff(still_state, open_mouth_frames(engine, still_state))[-1] > 5.0
    engine.interrupt(still_state)
    (video,) = engine.generate([(still_state, make_chunk(engine.spec, 6, None, voiced=False))])
    assert mouth_diff(still_state, video.frames).max() == 0.0


def test_batch_of_several_sessions(engine):
    a = engine.open(None, None, {"head_motion": False})
    b = engine.open(None, None, {"head_motion": True, "seed": 9})
    spec = engine.spec
    batch = [
        (a, make_chunk(spec, 0, loud(spec))),
        (b, make_chunk(spec, 0, None, voiced=False)),
        (a, make_chunk(spec, 1, loud(spec))),
        (b, make_chunk(spec, 1, None, voiced=False)),
    ]
    videos = engine.generate(batch)
    assert [v.first_frame for v in videos] == [0, 0, 1, 1]
    assert mouth_diff(a, videos[2].frames)[0] > 1.0  # a talks
    assert mouth_diff(a, videos[1].frames)[0] < mouth_diff(a, videos[2].frames)[0]
    with pytest.raises(ValueError, match="max_batch"):
        engine.generate(batch * spec.max_batch)


def test_close(engine):
    state = engine.open(None, None, {})
    engine.close(state)
    engine.close(state)  # idempotent
    engine.interrupt(state)  # harmless
    with pytest.raises(SessionClosedError):
        engine.generate([(state, make_chunk(engine.spec, 0, None))])


def test_causal_by_default(engine, render):
    """Frames before a change in the audio do not depend on it (lookahead 0)."""
    spec = engine.spec
    assert spec.lookahead == 0
    rng = np.random.default_rng(1)
    base = (0.1 * rng.standard_normal(spec.sample_rate)).astype(np.float32)
    other = base.copy()
    cut = spec.frame_start(15)
    other[cut:] = 0.0
    runs = []
    for audio in (base, other):
        state = engine.open(None, None, {"seed": 2})
        runs.append(render(engine, state, audio)[0])
    np.testing.assert_array_equal(runs[0][:15], runs[1][:15])
    assert np.any(runs[0][15:] != runs[1][15:])


def test_multi_frame_chunks_and_large_frames(render):
    engine = WarpEngine(WarpConfig(width=720, height=720, chunk_frames=2, first_chunk_frames=1))
    state = engine.open(None, None, {})
    frames, chunks, videos = render(engine, state, np.zeros(8000, np.float32))
    assert [c.num_frames for c in chunks[:3]] == [1, 2, 2]
    assert frames.shape[1:] == (720, 720, 3)
    assert videos[1].frames.shape[0] == 2


def test_mouth_driver_attack_and_release():
    drv = MouthDriver(16000, 25, attack_ms=30.0, release_ms=60.0, gain=1.0)
    on = np.array([1.0, 0.0, 0.0], np.float32)
    rise = drv.step(on)[0]
    drv.shape[:] = 1.0
    drop = 1.0 - drv.step(np.zeros(3, np.float32))[0]
    assert rise > drop > 0.0  # opens faster than it closes
    assert drv.targets(np.zeros(640, np.float32), True)[:3].max() == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 511),
        ("height", 0),
        ("fps", 0),
        ("chunk_frames", 0),
        ("lookahead_ms", -1),
        ("lookahead_ms", 1000),
        ("face_height", 2.0),
        ("attack_ms", 0.0),
        ("width", "512"),
        ("head_motion", 1),
        ("seed", -3),
        ("mouth_gain", float("nan")),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        WarpConfig(**{field: value})


def test_config_spec():
    spec = WarpConfig(lookahead_ms=40, fps=30, chunk_frames=2).spec()
    assert (spec.lookahead, spec.fps, spec.chunk_frames) == (640, 30, 2)
    assert spec.left_context == 0
    assert WarpEngine().spec.lookahead == 0
    assert WarpEngine.name == "warp"
