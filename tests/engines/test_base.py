"""The engine contract's audio chunk: reading media-clock samples from its window."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.base import AudioChunk
from liveface.errors import BadInputError


def _chunk() -> AudioChunk:
    # Samples [1000, 1640) animated, 320 of left context and 160 of lookahead.
    window = np.arange(320 + 640 + 160, dtype=np.float32) + 680  # sample n holds n
    return AudioChunk(
        index=0, first_frame=1, num_frames=1, start=1000, end=1640, window=window,
        context=320, voiced=True,
    )  # fmt: skip


def test_read_takes_media_clock_samples_from_the_window():
    chunk = _chunk()
    np.testing.assert_array_equal(chunk.read(1000, 1640), chunk.samples)
    np.testing.assert_array_equal(chunk.read(680, 690), np.arange(680, 690, dtype=np.float32))
    assert chunk.read(1795, 1800).tolist() == [1795, 1796, 1797, 1798, 1799]


@pytest.mark.parametrize(("begin", "end"), [(679, 700), (1700, 1801)])
def test_reading_past_the_window_is_refused(begin, end):
    with pytest.raises(BadInputError, match=r"\[680, 1800\)"):
        _chunk().read(begin, end)
