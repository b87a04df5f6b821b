"""The pacer: due frames and audio on the media clock, deadlines instead of asserts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from liveface.engines.base import EngineSpec, VideoChunk
from liveface.pipeline.pacer import AudioPacer, OutputSignal, PaceTiming, VideoPacer
from liveface.pipeline.stream import StreamConfig, StreamPipeline

SPEC = EngineSpec(fps=25, width=8, height=8, chunk_frames=2, first_chunk_frames=2)
RATE = SPEC.sample_rate
FRAME = RATE // SPEC.fps  # 640 samples, 40 ms


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(first: int, n: int = 2) -> VideoChunk:
    frames = np.stack([np.full((8, 8, 3), first + i, np.uint8) for i in range(n)])
    start = SPEC.frame_start(first)
    audio = np.arange(start, SPEC.frame_start(first + n), dtype=np.float32)
    return VideoChunk(frames=frames, first_frame=first, start=start, audio=audio, voiced=True)


def pipeline(clock: Clock, delay_ms: int = 80) -> StreamPipeline:
    stream = StreamPipeline(SPEC, StreamConfig(delay_ms=delay_ms, live=False))
    stream.start(clock.now)
    return stream


async def test_first_frame_is_awaited_then_frames_come_at_their_due_times():
    clock = Clock(10.0)
    stream, signal = pipeline(clock), OutputSignal()
    pacer = VideoPacer(stream, signal, PaceTiming(clock=clock), with_audio=True)
    task = asyncio.ensure_future(pacer.next_frame())
    await asyncio.sleep(0)
    assert not task.done()  # nothing to show yet: the pacer waits, it does not fail
    stream.accept(result(0))
    signal.notify()
    clock.now = stream.frame_due(0)
    item = await task
    assert (item.index, item.start, item.fresh) == (0, 0, True)
    np.testing.assert_array_equal(item.audio, np.arange(FRAME, dtype=np.float32))
    assert pacer.plan(clock.now) == (1, pytest.approx(0.04))  # frame 1 is due 40 ms later
    clock.now = stream.frame_due(1)
    assert (await pacer.next_frame()).index == 1


async def test_a_missing_frame_repeats_the_last_one_and_is_counted():
    clock = Clock(0.0)
    stream, signal = pipeline(clock), OutputSignal()
    pacer = VideoPacer(stream, signal, PaceTiming(clock=clock))
    stream.accept(result(0))
    clock.now = stream.frame_due(1)
    a = await pacer.next_frame()
    b = await pacer.next_frame()
    clock.now = stream.frame_due(2)
    c = await pacer.next_frame()  # the engine is late with frame 2
    assert [a.index, b.index, c.index] == [0, 1, 2]
    assert not c.fresh
    assert c.frame is b.frame
    assert pacer.stats.repeated == 1
    assert stream.output.stats.frames_repeated == 1


async def test_a_first_frame_later_than_the_catch_up_window_skips_ahead_and_still_shows():
    # The crash of the old track: the first output came so late that the pacer jumped past it.
    clock = Clock(0.0)
    stream, signal = pipeline(clock), OutputSignal()
    pacer = VideoPacer(stream, signal, PaceTiming(clock=clock))
    stream.accept(result(0))
    clock.now = stream.frame_due(5) + 0.001  # frames 0 and 1 are long overdue
    item = await pacer.next_frame()
    assert item.index == 5
    assert item.frame[0, 0, 0] == 1  # the freshest picture there is: frame 1, repeated
    assert pacer.stats.skipped == 5
    assert stream.output.stats.frames_late == 2


async def test_a_stall_skips_to_now_instead_of_bursting():
    clock = Clock(0.0)
    stream, signal = pipeline(clock), OutputSignal()
    pacer = VideoPacer(stream, signal, PaceTiming(clock=clock))
    stream.accept(result(0))
    clock.now = stream.frame_due(0)
    assert (await pacer.next_frame()).index == 0
    clock.now = stream.frame_due(1) + 0.1  # 100 ms late: within the window, catch up in order
    assert (await pacer.next_frame()).index == 1
    stream.accept(result(30))
    clock.now = stream.frame_due(30)  # a 1.2 s stall
    item = await pacer.next_frame()
    assert item.index == 30
    assert item.fresh
    assert pacer.stats.skipped == 28


async def test_the_end_of_the_session_ends_the_pacer():
    clock = Clock(0.0)
    stream, signal = pipeline(clock), OutputSignal()
    video = VideoPacer(stream, signal, PaceTiming(clock=clock))
    audio_task = asyncio.ensure_future(
        AudioPacer(stream, signal, 320, PaceTiming(clock=clock)).next_block()
    )
    video_task = asyncio.ensure_future(video.next_frame())
    await asyncio.sleep(0)
    signal.close()
    assert await video_task is None
    assert await audio_task is None


async def test_audio_blocks_follow_the_same_clock():
    clock = Clock(0.0)
    stream, signal = pipeline(clock), OutputSignal()
    pacer = AudioPacer(stream, signal, 320, PaceTiming(clock=clock))
    stream.accept(result(0, 4))
    clock.now = stream.due(0)
    blocks = [await pacer.next_block() for _ in range(3)]
    assert [b.start for b in blocks] == [0, 320, 640]
    np.testing.assert_array_equal(blocks[2].samples, np.arange(640, 960, dtype=np.float32))
    # Its due times are the video's: sample 640 (frame 1) is due when frame 1 is.
    assert stream.due(640) == stream.frame_due(1)


def test_offline_drain_yields_every_ready_frame_in_order_with_its_audio():
    stream = StreamPipeline(SPEC, StreamConfig(live=False))
    pacer = VideoPacer(stream, OutputSignal(), PaceTiming(realtime=False), with_audio=True)
    assert pacer.drain() == []
    stream.accept(result(0))
    stream.accept(result(2))
    items = pacer.drain()
    assert [i.index for i in items] == [0, 1, 2, 3]
    audio = np.concatenate([i.audio for i in items])
    np.testing.assert_array_equal(audio, np.arange(4 * FRAME, dtype=np.float32))
    assert pacer.drain() == []  # frame 4 has not been made yet
