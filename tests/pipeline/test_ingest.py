"""AudioIngest: any format, rate and channel count in; one rule for rate changes, flushes, gaps."""

from __future__ import annotations

import av
import numpy as np
import pytest

from liveface.errors import AudioFormatError
from liveface.pipeline.ingest import AudioIngest, frame_to_float, pcm_to_float
from liveface.pipeline.resample import StreamingResampler

RATE = 16000


def tone(rate: int, seconds: float, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def av_frame(x: np.ndarray, rate: int, fmt: str, layout: str = "mono") -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    planar = fmt.endswith("p")
    data = np.repeat(x[None, :], channels, axis=0) if channels > 1 else x[None, :]
    if fmt.startswith("s16"):
        data = (data * 32767).astype(np.int16)
    elif fmt.startswith("s32"):
        data = (data * 2147483647).astype(np.int32)
    elif fmt.startswith("u8"):
        data = np.round(data * 127 + 128).astype(np.uint8)
    else:
        data = data.astype(np.float32)
    if not planar:
        data = data.T.reshape(1, -1)  # interleaved L R L R
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


@pytest.mark.parametrize("fmt", ["s16", "s16p", "s32", "flt", "fltp", "u8"])
@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_every_sample_format_decodes_to_the_same_mono_signal(fmt, layout):
    x = tone(48000, 0.02)
    y = frame_to_float(av_frame(x, 48000, fmt, layout))
    tol = 1 / 100 if fmt == "u8" else 1e-4
    np.testing.assert_allclose(y, x, atol=tol)


def test_pcm_formats_and_bad_blocks():
    x = tone(RATE, 0.01)
    s16 = (x * 32767).astype("<i2").tobytes()
    np.testing.assert_allclose(pcm_to_float(s16, "s16le", 1), x, atol=1e-4)
    stereo = np.repeat(x, 2).astype("<f4").tobytes()
    np.testing.assert_allclose(pcm_to_float(stereo, "f32le", 2), x, atol=1e-6)
    with pytest.raises(AudioFormatError, match="whole number"):
        pcm_to_float(s16[:-1], "s16le", 1)
    with pytest.raises(AudioFormatError, match="format"):
        pcm_to_float(s16, "mp3", 1)
    nasty = np.array([np.nan, np.inf, -np.inf, 3.0], "<f4").tobytes()
    np.testing.assert_array_equal(pcm_to_float(nasty, "f32le", 1), [0, 1, -1, 1])


def test_blocks_in_any_split_equal_one_block_and_flush_completes_the_stream():
    x = tone(48000, 0.5)
    whole = AudioIngest(RATE)
    ref = np.concatenate([whole.push(x, 48000), whole.flush()])
    assert ref.shape[0] == x.shape[0] // 3
    ing = AudioIngest(RATE)
    parts = [ing.push(b, 48000) for b in np.array_split(x, [7, 960, 1000, 5000])]
    got = np.concatenate([*parts, ing.flush()])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert ing.stats.samples_in == ref.shape[0]


def test_a_rate_change_flushes_the_old_filter_before_the_new_block():
    a, b = tone(48000, 0.2), tone(22050, 0.2, 500.0)
    ing = AudioIngest(RATE)
    got = np.concatenate([ing.push(a, 48000), ing.push(b, 22050), ing.flush()])
    # The same as two separate streams, each flushed whole, one after the other.
    r1, r2 = StreamingResampler(48000, RATE), StreamingResampler(22050, RATE)
    z = np.zeros(0, np.float32)
    want = np.concatenate([r1.push(a), r1.push(z, last=True), r2.push(b), r2.push(z, last=True)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert ing.in_rate is None  # flushed: the next block starts afresh
    with pytest.raises(AudioFormatError, match="out of range"):
        ing.push(a, 1000)


def test_timestamps_place_audio_lost_packets_leave_silence_duplicates_are_dropped():
    block = 960  # 20 ms at 48 kHz, like an Opus packet
    x = tone(48000, 0.2)
    packets = [(k * block, x[k * block : (k + 1) * block]) for k in range(10)]
    ing = AudioIngest(RATE)
    out = []
    for pts, data in packets:
        if pts == 3 * block:
            continue  # lost
        out.append(ing.push_frame(av_frame(data, 48000, "s16"), pts))
    out.append(ing.push_frame(av_frame(packets[5][1], 48000, "s16"), 5 * block))  # duplicate
    y = np.concatenate([*out, ing.flush()])
    # Nine packets arrived; the lost one became 20 ms of silence in its place; the duplicate
    # added nothing.
    assert y.shape[0] == 10 * block // 3
    assert ing.stats.concealed == pytest.approx(block // 3, abs=2)
    assert ing.stats.dropped == block // 3
    hole = y[3 * block // 3 + 20 : 4 * block // 3 - 20]
    assert np.abs(hole).max() < 0.05
    # After the hole the audio sits exactly where it would have without the loss.
    whole = AudioIngest(RATE)
    ref = np.concatenate(
        [*(whole.push_frame(av_frame(d, 48000, "s16"), p) for p, d in packets), whole.flush()]
    )
    np.testing.assert_allclose(y[5 * block // 3 :], ref[5 * block // 3 :], atol=1e-4)


def test_a_big_timestamp_jump_is_a_restart_not_a_huge_gap():
    ing = AudioIngest(RATE)
    x = tone(48000, 0.02)
    ing.push_frame(av_frame(x, 48000, "s16"), 0)
    y = ing.push_frame(av_frame(x, 48000, "s16"), 10 * 48000)
    assert y.shape[0] < 2 * x.shape[0] // 3 + 20
    assert ing.stats.concealed == 0
