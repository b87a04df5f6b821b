"""The scene pipeline: several characters' audio on one clock, cut at the same boundaries."""

import numpy as np

from liveface.engines.base import EngineSpec, VideoChunk
from liveface.pipeline.pacer import OutputSignal, PaceTiming, VideoPacer
from liveface.pipeline.scene import ScenePipeline
from liveface.pipeline.segments import PlaybackKind
from liveface.pipeline.stream import StreamConfig

SPEC = EngineSpec(fps=25, width=8, height=8, chunk_frames=2, first_chunk_frames=1, left_context=160)
RATE = 16000


def speech(n, f0=140.0):
    """Harmonic, syllable-modulated tone that webrtcvad labels as speech: float32 ``(n,)``."""
    t = np.arange(n) / RATE
    x = sum(0.2 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 15))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def render(chunk):
    """What an engine returns for a chunk: black frames and the chunk's (mixed) samples."""
    frames = np.zeros((chunk.num_frames, 8, 8, 3), np.uint8)
    return VideoChunk(frames, chunk.first_frame, chunk.start, chunk.samples.copy(), chunk.voiced,
                      chunk.epoch)  # fmt: skip


def pushed(characters=2, **kw):
    p = ScenePipeline(SPEC, StreamConfig(delay_ms=80, lead_ms=200, live=False, **kw), characters)
    p.start(now=0.0)
    return p


def test_turns_are_mixed_on_one_clock_and_each_voice_stays_its_own():
    p = pushed()
    a, b = speech(RATE, 200.0), speech(RATE, 330.0)
    silence = np.zeros(RATE, np.float32)
    assert p.push(np.concatenate([a, silence]), now=0.0, character=0) == 2 * RATE
    assert p.push(np.concatenate([silence, b]), now=0.0, character=1) == 2 * RATE
    chunks = p.tick(2.2)
    assert chunks[-1].end >= 2 * RATE - 640
    for c in chunks:
        assert len(c.voices) == 2
        # The window is the mix; each voice covers exactly the same span.
        mix = np.clip(c.voices[0].window + c.voices[1].window, -1, 1)
        np.testing.assert_array_equal(c.window, mix)
        assert c.voices[0].window.shape == c.window.shape
        assert c.voiced == (c.voices[0].voiced or c.voices[1].voiced)
    first = [c for c in chunks if c.start >= 0.2 * RATE and c.end <= 0.8 * RATE]
    second = [c for c in chunks if c.start >= 1.2 * RATE and c.end <= 1.8 * RATE]
    assert all(c.voices[0].voiced and not c.voices[1].voiced for c in first)
    assert all(c.voices[1].voiced and not c.voices[0].voiced for c in second)
    c = second[0]
    own = c.voices[1].window[c.context : c.context + c.end - c.start]
    np.testing.assert_array_equal(own, b[c.start - RATE : c.end - RATE])


def test_each_characters_own_audio_comes_out_with_the_frames():
    p = pushed()
    a, b = speech(RATE // 2, 200.0), speech(RATE // 2, 330.0)
    p.push(a, now=0.0, character=0)
    p.push(b, now=0.0, character=1)
    pacer = VideoPacer(p, OutputSignal(), PaceTiming(realtime=False), with_audio=True,
                       with_voices=True)  # fmt: skip
    got = []
    for chunk in p.tick(0.6):
        p.accept(render(chunk))
        got += pacer.drain()
    assert len(got) >= 10
    mix = np.concatenate([g.audio for g in got])
    own = [np.concatenate([g.voices[k] for g in got]) for k in range(2)]
    n = mix.shape[0]
    a, b = (np.pad(x, (0, max(0, n - x.shape[0])))[:n] for x in (a, b))  # then silence
    np.testing.assert_allclose(own[0], a)
    np.testing.assert_allclose(own[1], b)
    np.testing.assert_allclose(mix, np.clip(a + b, -1, 1))


def test_a_live_scene_is_not_held_back_by_a_character_nobody_speaks_for():
    p = ScenePipeline(SPEC, StreamConfig(delay_ms=80, live=True), 2)
    block = RATE // 50
    cut = []
    for k in range(50):  # one second of live 20 ms blocks for character 0 only
        now = 10.0 + (k + 1) * 0.02
        p.push(speech(block), now=now, character=0)
        cut += p.tick(now)
    # Chunks reach the wall clock (less one block): character 1 idles on the wall with silence.
    assert cut[-1].end >= p.wall_sample(11.0) - 2 * block
    assert not any(c.voices[1].voiced for c in cut)
    p.release(0)  # its peer left: the lane idles too, chunks go on
    more = p.tick(12.0)
    assert more
    assert more[-1].end >= p.wall_sample(12.0) - 2 * block


def test_clearing_one_character_keeps_the_others_speech():
    p = pushed()
    a, b = speech(3 * RATE, 200.0), speech(3 * RATE, 330.0)
    p.push(a, now=0.0, character=0)
    p.push(b, now=0.0, character=1)
    p.end_segment(0)
    p.end_segment(1)
    for chunk in p.tick(0.5):
        p.accept(render(chunk))
    p.output.take_audio(0, RATE // 4)  # the playhead passed both segments' starts
    started = p.playback_events()
    assert {(e.kind, e.character) for e in started} == {
        (PlaybackKind.STARTED, 0),
        (PlaybackKind.STARTED, 1),
    }
    epoch, events = p.clear(character=0)
    assert epoch == 1
    assert [(e.kind, e.character, e.interrupted) for e in events] == [
        (PlaybackKind.FINISHED, 0, True)
    ]
    assert p.pending_samples(0) < RATE // 2  # character 0's queue is gone
    assert p.pending_samples(1) > 2 * RATE  # character 1's is not
    after = p.tick(1.0)
    assert after[0].epoch == 1
    for c in after:
        if c.end + SPEC.lookahead <= 3 * RATE:
            assert not c.voices[0].voiced
            assert c.voices[1].voiced
            # After the cut the mix is character 1's speech alone.
            np.testing.assert_array_equal(c.samples, b[c.start : c.end])


def test_per_character_queues_and_segments():
    p = pushed(characters=3, max_pending_s=1.0)
    assert p.push(speech(2 * RATE), now=0.0, character=2) == RATE  # over its limit: cut
    assert p.pending_samples(2) == RATE
    assert p.pending_samples(0) == 0
    assert p.pending_samples() == RATE
    assert p.end_segment(2) == 0
    assert p.end_segment(0) is None  # nothing was pushed for character 0


def test_a_live_scenes_lanes_are_as_small_as_its_mixed_ring():
    live = ScenePipeline(SPEC, StreamConfig(delay_ms=80, live=True), 3)
    pushed = ScenePipeline(SPEC, StreamConfig(delay_ms=80, live=False), 3)
    assert {lane.ring.capacity for lane in live.lanes} == {live.ring.capacity}
    assert {lane.ring.capacity for lane in pushed.lanes} == {pushed.ring.capacity}
    assert live.ring.capacity * 10 < pushed.ring.capacity  # not max_pending_s of audio each
