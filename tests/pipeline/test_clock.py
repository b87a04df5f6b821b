"""Media-clock and A/V arithmetic: video and audio timestamps derive from one sample index."""

from fractions import Fraction

import pytest

from liveface.engines.base import EngineSpec
from liveface.signaling.tracks import VIDEO_CLOCK


@pytest.mark.parametrize("fps", [24, 25, 30, 50, 60])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_frames_tile_the_sample_axis(fps, rate):
    s = EngineSpec(
        fps=fps, width=64, height=64, chunk_frames=1, first_chunk_frames=1, sample_rate=rate
    )
    for n in range(0, 5 * fps):
        a, b = s.frame_start(n), s.frame_start(n + 1)
        assert b > a
        # Every sample belongs to exactly one frame.
        assert s.frame_at(a) == n
        assert s.frame_at(b - 1) == n
        # Frame start in seconds is within one sample of n / fps: no drift over time.
        assert abs(Fraction(a, rate) - Fraction(n, fps)) < Fraction(1, rate)


@pytest.mark.parametrize("fps", [25, 30])
def test_video_and_audio_pts_agree(fps):
    rate = 16000
    s = EngineSpec(fps=fps, width=64, height=64, chunk_frames=1, first_chunk_frames=1)
    for n in range(0, 3600 * fps, 997):  # an hour of frames, sampled
        sample = s.frame_start(n)
        video_pts = sample * VIDEO_CLOCK // rate
        video_t = Fraction(video_pts, VIDEO_CLOCK)
        audio_t = Fraction(sample, rate)
        assert abs(video_t - audio_t) < Fraction(1, VIDEO_CLOCK)
