import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveface.engines.base import EngineSpec
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker


def spec(fps=25, chunk=2, first=1, left=320, look=0):
    return EngineSpec(
        fps=fps,
        width=64,
        height=64,
        chunk_frames=chunk,
        first_chunk_frames=first,
        left_context=left,
        lookahead=look,
    )


@settings(max_examples=60, deadline=None)
@given(
    fps=st.sampled_from([20, 24, 25, 30, 50]),
    chunk=st.integers(1, 6),
    first=st.integers(1, 6),
    left=st.integers(0, 2000),
    look=st.integers(0, 1000),
    pushes=st.lists(st.integers(1, 2500), min_size=1, max_size=30),
)
def test_chunk_never_reads_past_end_plus_lookahead(fps, chunk, first, left, look, pushes):
    s = spec(fps, chunk, first, left, look)
    ring = AudioRing(200_000)
    seen_until = []
    c = Chunker(s, ring, lambda a, b: (seen_until.append(b), False)[1])
    # Sample i has value i + 1, so the window tells exactly which samples were used.
    total = 0
    prev_frame = 0
    for n in pushes:
        ring.append(np.arange(total + 1, total + n + 1, dtype=np.float32))
        total += n
        for ch in c.pop_ready():
            assert ch.first_frame == prev_frame
            prev_frame += ch.num_frames
            assert ch.start == s.frame_start(ch.first_frame)
            assert ch.end == s.frame_start(ch.first_frame + ch.num_frames)
            assert ch.num_frames == (first if ch.index == 0 else chunk)
            # Released only once the lookahead arrived; never reads beyond it.
            assert ch.end + s.lookahead <= total
            newest = int(ch.window.max())  # 1-based index of the newest sample used
            assert newest <= ch.end + s.lookahead
            assert ch.window.shape[0] == s.left_context + (ch.end - ch.start) + s.lookahead
            expected = np.arange(ch.start - left, ch.end + look, dtype=np.float32) + 1
            expected[expected < 1] = 0
            np.testing.assert_array_equal(ch.window, expected)
            np.testing.assert_array_equal(ch.samples, np.arange(ch.start, ch.end) + 1)
    assert all(b <= total for b in seen_until)


def test_first_chunk_shorter_and_release_limit():
    s = spec(chunk=4, first=1)
    ring = AudioRing(100_000)
    c = Chunker(s, ring, lambda a, b: False)
    ring.append(np.zeros(640 * 9, np.float32))
    chunks = c.pop_ready(release_until=640 * 5)
    assert [ch.num_frames for ch in chunks] == [1, 4]
    assert c.pop_ready(release_until=640 * 5) == []
    assert [ch.num_frames for ch in c.pop_ready()] == [4]


def test_rewind_starts_new_epoch():
    s = spec(chunk=2, first=1)
    ring = AudioRing(100_000)
    c = Chunker(s, ring, lambda a, b: False)
    ring.append(np.zeros(640 * 5, np.float32))
    chunks = c.pop_ready()
    assert c.next_frame == 5
    assert chunks[-1].epoch == 0
    c.rewind(3)
    again = c.pop_ready()
    assert again[0].first_frame == 3
    assert again[0].epoch == 1
    assert again[0].num_frames == 2
    with pytest.raises(ValueError, match="rewind forward"):
        c.rewind(99)


def test_ring_refuses_evicted_and_future_samples():
    ring = AudioRing(100)
    ring.append(np.arange(250, dtype=np.float32))
    np.testing.assert_array_equal(ring.read(200, 250), np.arange(200, 250))
    with pytest.raises(IndexError):
        ring.read(100, 160)
    with pytest.raises(IndexError):
        ring.read(240, 260)
    assert ring.read(-5, 0).tolist() == [0.0] * 5
