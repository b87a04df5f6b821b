import numpy as np
import pytest

from liveface.engines.base import EngineSpec
from liveface.pipeline.stream import StreamConfig, StreamPipeline

SPEC = EngineSpec(fps=25, width=8, height=8, chunk_frames=2, first_chunk_frames=1)
RATE = 16000


def speech(n):
    t = np.arange(n) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_live_stall_fills_silence_then_drops_stale_input():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=80, live=True, gap_fill_ms=200))
    p.push(speech(320), now=100.0)
    assert p.anchor == 100.0 - 320 / RATE
    assert [c.num_frames for c in p.tick(100.0)] == []  # first chunk needs 640 samples
    # No audio for a second: silence keeps the clock going.
    chunks = p.tick(101.0)
    assert chunks
    assert p.stats.silence_filled_samples > 0
    assert not any(c.voiced for c in chunks if c.start >= RATE // 4)  # past the hangover
    # The stalled audio now arrives late: it is dropped, not queued behind the silence.
    p.push(speech(3200), now=101.0)
    assert p.stats.input_dropped_samples > 0
    assert p.ring.end <= p.wall_sample(101.0) + 60 * RATE // 1000 + 1


def test_pushed_audio_is_paced_not_cut_at_once():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=80, lead_ms=200, live=False))
    p.start(now=0.0)
    p.push(speech(RATE * 10), now=0.0)  # 10 s pushed at once
    chunks = p.tick(0.0)
    cut_until = chunks[-1].end
    assert cut_until <= (0.08 + 0.2) * RATE  # only up to delay + lead
    more = p.tick(1.0)
    assert more[-1].end <= (1.0 + 0.28) * RATE
    assert p.pending_samples() > RATE * 8


def test_pushed_idle_keeps_silence_ahead_and_clear_rewinds():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=80, lead_ms=200, live=False))
    p.start(now=0.0)
    idle = p.tick(0.5)
    assert idle
    assert not any(c.voiced for c in idle)
    p.push(speech(RATE * 3), now=0.5)
    p.end_segment()
    cut = p.tick(0.6)
    assert any(c.voiced for c in cut)
    epoch, _events = p.clear()
    assert epoch == 1
    after = p.tick(0.61)
    assert after
    assert after[0].epoch == 1
    assert not any(c.voiced for c in after)
    assert p.pending_samples() < RATE  # the queued speech is gone


def test_playback_events_follow_the_playhead():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=0, lead_ms=100, live=False))
    p.start(now=0.0)
    p.push(speech(RATE // 2), now=0.0)
    p.end_segment()
    assert p.playback_events() == []
    p.output.take_audio(0, 320)
    (started,) = p.playback_events()
    assert started.kind.value == "playback_started"
    p.output.take_audio(320, RATE // 2)
    (finished,) = p.playback_events()
    assert finished.kind.value == "playback_finished"
    assert not finished.interrupted
    assert abs(finished.position - 0.5) < 1e-6


def test_live_jitter_raises_the_playout_delay_at_once_and_it_decays_slowly():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=80, live=True, jitter_decay_ms=20.0))
    block = 320  # 20 ms: block k ends at capture time t0 + 0.02 k
    t0 = 100.0
    p.push(speech(block), now=t0 + 0.02 + 0.03)  # the first block came 30 ms late
    due0 = p.due(0)
    # The next block comes on time: the anchor moves back, and the playout with it (a burst at
    # connection time is not kept as latency).
    p.push(speech(block), now=t0 + 0.04)
    assert p.anchor == pytest.approx(t0)
    assert p.due(0) == pytest.approx(due0 - 0.03, abs=1e-3)
    assert p.jitter_s == pytest.approx(0.0, abs=1e-3)
    # A block 70 ms late: the allowance jumps to cover it, so its frames are not late.
    p.push(speech(block), now=t0 + 0.06 + 0.07)
    assert p.jitter_s == pytest.approx(0.07, abs=1e-6)
    assert p.stats.jitter_ms == pytest.approx(70.0, abs=1e-3)
    assert p.stats.input_dropped_samples == 0  # jitter is not staleness
    # Then calm: the allowance falls by 20 ms per second, not at once.
    for k in range(4, 54):
        p.push(speech(block), now=t0 + k * 0.02)
    assert p.jitter_s == pytest.approx(0.07 - 0.02 * (1.06 - 0.13), abs=1e-6)
    assert p.stats.input_dropped_samples == 0


def test_pushed_speech_is_not_cut_by_silence_while_its_segment_is_open():
    p = StreamPipeline(SPEC, StreamConfig(delay_ms=80, live=False))
    p.push(speech(320), now=10.0)  # a segment opens: 20 ms of speech
    p.tick(10.0 + 0.03)  # the next block is 30 ms late: within half the delay, no pause put in
    assert p.stats.silence_filled_samples == 0
    p.push(speech(320), now=10.03)
    assert p.end_segment() == 0
    p.tick(10.3)  # the segment is closed: idle silence goes ahead again
    assert p.stats.silence_filled_samples > 0
