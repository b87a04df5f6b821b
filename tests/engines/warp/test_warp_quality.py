"""Quality of the rendered frames on real (espeak-ng) speech followed by silence.

Everything is measured from the pixels. The measured values are printed (run with ``-s``) so they
can be quoted; the asserted bounds are deliberately generous.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from liveface.engines.warp import WarpConfig, WarpEngine

#: Pass marks.
MIN_CORRELATION = 0.6
MIN_SSIM = 0.95
#: Mean absolute difference (grey levels) between consecutive frames outside the mouth in silence.
MAX_FLICKER_MEAN = 1.0
MAX_FLICKER_FRAME = 4.0  # a blink changes the eyes between two frames; nothing else may jump


@pytest.fixture(scope="module")
def still_run(engine, speech, render):
    """Speech then silence through a still-head session: ``(state, frames, chunks)``."""
    state = engine.open(None, None, {"head_motion": False, "seed": 3})
    audio, _ = speech
    frames, chunks, _ = render(engine, state, audio)
    return state, frames, chunks


def test_mouth_follows_speech_envelope(still_run, metrics):
    state, frames, chunks = still_run
    opening = metrics.mouth_opening(frames, state.portrait, state.mouth_box)
    env = metrics.envelope(chunks)
    assert opening.shape == env.shape
    corr = float(np.corrcoef(opening, env)[0, 1])
    # Also against a lightly smoothed envelope (the mouth cannot follow 40 ms energy spikes).
    smooth = np.convolve(env, np.ones(3) / 3, mode="same")
    corr_s = float(np.corrcoef(opening, smooth)[0, 1])
    print(
        f"\nmouth opening vs speech RMS envelope: r = {corr:.3f} "
        f"(3-frame smoothed envelope: {corr_s:.3f})"
    )
    assert corr >= MIN_CORRELATION
    voiced = env > 0.02
    print(
        f"mean opening: voiced frames {opening[voiced].mean():.2f}, "
        f"silent frames {opening[~voiced].mean():.2f} grey levels"
    )
    assert opening[voiced].mean() > 5.0 * max(opening[~voiced].mean(), 0.1)


def test_mouth_closed_in_silence(still_run, speech, metrics, engine):
    state, frames, _ = still_run
    _, n_speech = speech
    first_silent = engine.spec.frame_at(n_speech) + engine.spec.fps // 2  # after the release
    tail = frames[first_silent:]
    assert len(tail) >= 2 * engine.spec.fps
    opening = metrics.mouth_opening(tail, state.portrait, state.mouth_box)
    y0, y1, x0, x1 = state.mouth_box
    diff = np.abs(tail[:, y0:y1, x0:x1].astype(np.int16) - state.portrait[y0:y1, x0:x1])
    print(
        f"\nsilence: max mouth darkening {opening.max():.3f}, "
        f"max mean |frame - rest| in the mouth box {diff.mean(axis=(1, 2, 3)).max():.3f}"
    )
    assert opening.max() < 0.5
    assert diff.mean(axis=(1, 2, 3)).max() < 1.0


def test_face_outside_jaw_stays_put_without_head_motion(still_run, metrics):
    state, frames, _ = still_run
    rest = state.portrait
    y0, y1, x0, x1 = state.jaw_box
    rest_y = metrics.luma(rest)
    scores = []
    for frame in frames[::6]:
        f = metrics.luma(frame)
        f[y0:y1, x0:x1] = rest_y[y0:y1, x0:x1]  # compare everything but the lower face
        scores.append(structural_similarity(f, rest_y, data_range=255.0))
    print(
        f"\nSSIM outside the jaw vs portrait (head motion off): min {min(scores):.4f}, "
        f"mean {np.mean(scores):.4f} over {len(scores)} frames"
    )
    assert min(scores) >= MIN_SSIM


def test_no_flicker_in_silence_with_head_motion(engine, render, metrics):
    state = engine.open(None, None, {"head_motion": True, "seed": 5})
    frames, _, _ = render(engine, state, np.zeros(5 * engine.spec.sample_rate, np.float32))
    y0, y1, x0, x1 = state.mouth_box
    g = metrics.luma(frames)
    rest = metrics.luma(state.portrait)
    g[:, y0:y1, x0:x1] = rest[y0:y1, x0:x1] = 0.0  # outside the mouth only
    step = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2))
    drift = np.abs(g - rest[None]).mean(axis=(1, 2))
    print(
        f"\nflicker in silence (head motion on): mean |frame[t+1] - frame[t]| = "
        f"{step.mean():.3f}, worst frame {step.max():.3f} grey levels; "
        f"drift from the portrait at most {drift.max():.2f}"
    )
    assert step.mean() < MAX_FLICKER_MEAN
    assert step.max() < MAX_FLICKER_FRAME
    assert drift.max() > 0.05, "the head should move a little in silence"
    assert drift.max() < 12.0, "the head should not wander off"


def test_blinks_at_a_human_rate(engine, render, metrics):
    state = engine.open(None, None, {"head_motion": False, "seed": 11})
    seconds = 30
    boxes = state.eye_boxes
    y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    eyes, _, _ = render(
        engine,
        state,
        np.zeros(seconds * engine.spec.sample_rate, np.float32),
        keep=lambda f: f[:, y0:y1, x0:x1].copy(),
    )
    rest = metrics.luma(state.portrait[y0:y1, x0:x1])
    d = np.abs(metrics.luma(eyes) - rest[None]).mean(axis=(1, 2))
    closed = d > 3.0
    onsets = int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])
    per_min = onsets * 60.0 / seconds
    print(f"\nblinks in {seconds} s of silence: {onsets} ({per_min:.1f}/min)")
    assert 6 <= per_min <= 40
    assert closed.mean() < 0.2  # eyes mostly open


def test_lookahead_opens_the_mouth_earlier(render, metrics):
    rng = np.random.default_rng(0)
    sr, fps = 16000, 25
    audio = np.zeros(2 * sr, np.float32)
    onset = sr // 2  # half-way into frame 12
    audio[onset : onset + sr // 2] = 0.2 * rng.standard_normal(sr // 2).astype(np.float32)
    firsts = {}
    for ms in (0, 40):
        eng = WarpEngine(WarpConfig(lookahead_ms=ms, fps=fps))
        state = eng.open(None, None, {"head_motion": False})
        frames, _, _ = render(eng, state, audio)
        opening = metrics.mouth_opening(frames, state.portrait, state.mouth_box)
        firsts[ms] = int(np.argmax(opening > 1.0))
    print(f"\nfirst open frame: causal {firsts[0]}, 40 ms lookahead {firsts[40]}")
    assert firsts[40] < firsts[0]
    assert firsts[0] >= onset * fps // sr  # causal: never before the sound
