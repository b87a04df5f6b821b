import numpy as np

from liveface.engines.base import EngineSpec, VideoChunk
from liveface.pipeline.output import OutputBuffer

SPEC = EngineSpec(fps=25, width=8, height=8, chunk_frames=2, first_chunk_frames=2)


def chunk(first, n=2, epoch=0, value=None):
    frames = np.stack([np.full((8, 8, 3), (first + i) % 256, np.uint8) for i in range(n)])
    start = SPEC.frame_start(first)
    audio = np.arange(start, SPEC.frame_start(first + n), dtype=np.float32)
    return VideoChunk(
        frames=frames, first_frame=first, start=start, audio=audio, voiced=True, epoch=epoch
    )


def test_repeat_last_frame_when_missing_and_count():
    out = OutputBuffer(SPEC, max_frames=10)
    assert out.first_buffered() is None
    assert out.last_frame is None
    out.put(chunk(0))
    f, fresh = out.take_frame(0)
    assert fresh
    assert f[0, 0, 0] == 0
    f, fresh = out.take_frame(1)
    assert fresh
    assert f[0, 0, 0] == 1
    f, fresh = out.take_frame(2)  # engine late
    assert not fresh
    assert f[0, 0, 0] == 1
    assert out.stats.frames_repeated == 1
    out.put(chunk(2))  # frame 2 arrives after its time: dropped; frame 3 is fine
    assert out.stats.frames_late == 1
    f, fresh = out.take_frame(3)
    assert fresh
    assert f[0, 0, 0] == 3


def test_audio_is_exact_and_underruns_counted():
    out = OutputBuffer(SPEC, max_frames=10)
    out.put(chunk(0))
    x = out.take_audio(0, 320)
    np.testing.assert_array_equal(x, np.arange(320))
    x = out.take_audio(320, 1280)  # 960 available, 320 missing
    np.testing.assert_array_equal(x[:960], np.arange(320, 1280))
    assert (x[960:] == 0).all()
    assert out.stats.audio_underrun_samples == 320


def test_bounded_and_cut_drops_old_epochs():
    out = OutputBuffer(SPEC, max_frames=4)
    for k in range(0, 10, 2):
        out.put(chunk(k))
    assert out.buffered_frames() == 4
    assert out.stats.frames_overflow == 6
    out.cut(8, epoch=1)
    assert out.buffered_frames() == 2
    assert not out.put(chunk(10, epoch=0))
    assert out.put(chunk(8, epoch=1))
