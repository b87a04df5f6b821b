"""Whole audio tracks from files: any format to mono float32 at one rate, timed from the file."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from liveface.errors import AudioFormatError
from liveface.pipeline.audio_file import read_audio

RATE = 16000


def _write(path, x: np.ndarray, rate: int, start_s: float, layout: str = "mono") -> None:
    """An mkv whose PCM audio stream starts ``start_s`` after the file's time 0."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = layout
        pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
        channels = 2 if layout == "stereo" else 1
        for i in range(0, pcm.shape[0], 1024):
            block = np.repeat(pcm[i : i + 1024], channels).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = round(start_s * rate) + i
            frame.time_base = fractions.Fraction(1, rate)
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_stereo_at_48k_becomes_mono_at_16k(tmp_path):
    _write(tmp_path / "a.mkv", _tone(0.5, 48000), 48000, 0.0, layout="stereo")
    x = read_audio(tmp_path / "a.mkv", RATE)
    assert x.dtype == np.float32
    assert abs(x.shape[0] - RATE // 2) <= 2
    mid = x[1000:7000]
    ref = _tone(0.5, RATE)[1000:7000]
    best = max(np.dot(mid, np.roll(ref, k)) for k in range(-20, 21))
    assert best / np.linalg.norm(mid) / np.linalg.norm(ref) > 0.99  # the resampler's delay aside
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_from_zero_places_a_late_stream_on_the_files_clock(tmp_path):
    _write(tmp_path / "late.mkv", _tone(0.25, RATE), RATE, 0.1)
    plain = read_audio(tmp_path / "late.mkv", RATE)
    timed = read_audio(tmp_path / "late.mkv", RATE, from_zero=True)
    assert timed.shape[0] == plain.shape[0] + 1600
    assert not np.any(timed[:1600])
    np.testing.assert_array_equal(timed[1600:], plain)


def test_unreadable_and_silent_files_are_refused(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not audio")
    with pytest.raises(AudioFormatError, match=r"cannot read audio x\.wav"):
        read_audio(tmp_path / "x.wav", RATE)
    with av.open(str(tmp_path / "v.mkv"), "w") as c:
        v = c.add_stream("ffv1", rate=25)
        v.width = v.height = 16
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in v.encode(frame):
            c.mux(packet)
        for packet in v.encode(None):
            c.mux(packet)
    with pytest.raises(AudioFormatError, match="no audio stream"):
        read_audio(tmp_path / "v.mkv", RATE)
