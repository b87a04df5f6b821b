"""Causality: a chunk's frames depend on its window (lookahead included) and on nothing later.

Chunks are cut by the runtime's own chunker from a ring holding the whole signal, so the engine
could in principle see any audio: only the declared window reaches it.
"""

from __future__ import annotations

import numpy as np
import pytest

from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from tests.engines.diffusion.stream_helpers import sample_portrait, speech, tiny_engine

LOOKAHEAD = 1280  # 80 ms at 16 kHz
CHUNKS = 3


@pytest.fixture(scope="module")
def engine():
    return tiny_engine(lookahead=LOOKAHEAD)


def frames_for(engine, signal: np.ndarray) -> list[np.ndarray]:
    """Frames of the first ``CHUNKS`` chunks of a fresh session fed ``signal``."""
    ring = AudioRing(signal.shape[0] + 1)
    ring.append(signal)
    chunks = Chunker(engine.spec, ring, lambda start, end: True).pop_ready()[:CHUNKS]
    state = engine.open(sample_portrait(), None, {"seed": 5})
    out = [engine.generate([(state, c)])[0].frames for c in chunks]
    engine.close(state)
    return out


def test_audio_after_the_window_never_matters_and_the_lookahead_does(engine):
    spec = engine.spec
    base = speech(3.0)
    last_end = spec.frame_start(1 + 8 * (CHUNKS - 1))  # the third chunk ends here
    window_end = last_end + spec.lookahead
    rng = np.random.default_rng(1)

    later = base.copy()
    later[window_end:] = rng.normal(0, 0.3, later.shape[0] - window_end)
    inside = base.copy()
    inside[last_end + 200 : window_end] *= -2.0  # only the third chunk's lookahead changes

    reference = frames_for(engine, base)
    for a, b in zip(reference, frames_for(engine, later), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical
    changed = frames_for(engine, inside)
    for a, b in zip(reference[:-1], changed[:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(reference[-1], changed[-1])
