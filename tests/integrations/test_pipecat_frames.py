"""Conversions to pipecat frames, the rule that drops stale speech after a barge-in, and the
bookkeeping that holds a response's TTSStoppedFrame until it has played."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="needs the pipecat extra: pip install -e '.[pipecat]'")

from pipecat.frames.frames import OutputImageRawFrame, SpeechOutputAudioRawFrame, TTSStoppedFrame

from liveface.client import Frame
from liveface.integrations.pipecat.frames import (
    STALE_MARGIN_FRAMES,
    StaleFrames,
    pcm16,
    to_pipecat,
)
from liveface.integrations.pipecat.segments import Segments


def frame(index: int, at: float, loud: bool, fps: int = 25) -> Frame:
    n = 16000 // fps
    audio = np.full(n, 0.25 if loud else 0.0, np.float32)
    return Frame("s", index, index * n, 16000, True, 0, "rgb", 2, 2, b"\0" * 12, audio, at)


def test_pcm16_clips_and_rounds():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1 / 32767 * 0.6], np.float32)
    out = np.frombuffer(pcm16(x), "<i2")
    assert out.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767, 1]


def test_to_pipecat_pairs_the_image_with_its_audio():
    f = frame(7, 0.0, loud=True)
    image, audio = to_pipecat(f, f.data)
    assert isinstance(image, OutputImageRawFrame)
    assert isinstance(audio, SpeechOutputAudioRawFrame)
    assert image.sync_with_audio
    assert (image.size, image.format, image.image) == ((2, 2), "RGB", b"\0" * 12)
    assert (audio.sample_rate, audio.num_channels, audio.num_frames) == (16000, 1, 640)
    assert np.frombuffer(audio.audio, "<i2").tolist() == [8192] * 640
    assert image.metadata["liveface"] == audio.metadata["liveface"]
    assert image.metadata["liveface"]["index"] == 7
    assert image.metadata["liveface"]["pts"] == 7 * 640


def test_nothing_is_dropped_without_a_clear():
    stale = StaleFrames()
    for i in range(5):
        f = frame(i, i * 0.04, loud=True)
        stale.seen(f)
        assert not stale.drop(f)


def test_until_the_ack_every_frame_with_audio_is_dropped():
    stale = StaleFrames()
    stale.seen(frame(3, 1.0, loud=True))
    stale.begin()
    assert stale.drop(frame(4, 1.04, loud=True))
    assert not stale.drop(frame(5, 1.08, loud=False))  # silence is never stale speech
    assert stale.drop(frame(6, 1.12, loud=True))
    assert stale.dropped == 2


def test_after_the_ack_only_frames_due_before_it_are_dropped():
    stale = StaleFrames()
    stale.seen(frame(100, 10.0, loud=True))
    stale.begin()
    stale.cleared(now=10.1, fps=25)  # 2.5 frames later: the server was at frame 102 or 103
    cutoff = 100 + 3 + STALE_MARGIN_FRAMES
    assert stale.cutoff == cutoff
    for i in range(101, cutoff + 1):
        assert stale.drop(frame(i, 10.2, loud=True))
    assert not stale.drop(frame(cutoff + 1, 10.3, loud=True))  # new speech plays
    assert stale.cutoff is None  # and the filter is off
    assert not stale.drop(frame(cutoff + 2, 10.3, loud=True))
    assert stale.dropped == cutoff - 100


def test_a_clear_before_any_frame_drops_nothing_and_a_failed_clear_stops_filtering():
    stale = StaleFrames()
    stale.begin()
    stale.cleared(now=5.0, fps=25)
    assert stale.cutoff is None
    assert not stale.drop(frame(0, 5.0, loud=True))
    stale.begin()
    stale.cancel()
    assert not stale.drop(frame(1, 5.1, loud=True))


async def test_segments_hold_each_stopped_frame_until_its_segment_played():
    segments = Segments()
    assert segments.audio()  # the first audio opens a segment
    assert not segments.audio()
    first, second = TTSStoppedFrame(), TTSStoppedFrame()
    segments.closed(0, first)
    assert not segments.open
    assert segments.audio()
    segments.closed(1, second)
    assert segments.playing
    assert segments.finished(5) is None  # not ours (an interrupted one, say)
    assert segments.finished(0) is first
    assert segments.playing
    assert segments.finished(1) is second
    assert not segments.playing
    async with asyncio.timeout(1):
        await segments.drained()
    segments.audio()
    segments.closed(2, TTSStoppedFrame())
    segments.reset()  # barge-in: the held frame is dropped
    assert segments.finished(2) is None
    assert not segments.open
