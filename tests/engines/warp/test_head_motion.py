"""Head motion: the rest frame warped at key frames and blended between; the mouth and eyelids
moved by each frame's own pose in the same remap as the mouth (``headmotion``, ``Renderer``)."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.warp import WarpConfig, WarpEngine
from liveface.engines.warp.idle import HeadFields, HeadSway, Pose, build_head_fields

SHAPES = [np.array([0.7, 0.2, 0.1], np.float32), np.array([0.3, 0.0, 0.6], np.float32)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


@pytest.mark.parametrize("size", [(512, 512), (514, 258)])
def test_a_box_of_the_upsampled_field_is_the_field_upsampled(still_state, size):
    height, width = size
    lm = still_state.landmarks * np.float32([width / 512, height / 512])
    fields = build_head_fields(lm, 0.5 * height, width, height)
    small = fields.small_shift(Pose(tx=3, ty=-2, roll=0.02, zoom=0.01, breath=1), np.empty(
        fields.basis.shape[1:], np.float32))  # fmt: skip
    full = fields.upsample(small)
    for box in [
        (0, height, 0, width),
        (217, 425, 128, 250),
        (3, 77, 5, width - 1),
        (100, 101, 0, 3),
    ]:
        y0, y1, x0, x1 = box
        np.testing.assert_array_equal(fields.upsample_box(small, box), full[y0:y1, x0:x1])


def test_a_moved_mouth_and_eye_are_the_still_ones_moved(still_state):
    """Where the head moves rigidly (the face), a translated frame is the still frame translated:
    the mouth's map solved where the head's map lands gives the same pixels as warping the mouth
    and then moving it."""
    renderer = still_state.renderer
    still, moved = np.empty((2, 512, 512, 3), np.uint8)
    boxes = [still_state.mouth_box, *still_state.eye_boxes]
    for shape in SHAPES:
        renderer.render(shape, 0.6, still)
        motion = renderer.head_motion(1)
        renderer.render(shape, 0.6, moved, (motion, motion.view(0, lambda k: Pose(tx=3, ty=-2))))
        for y0, y1, x0, x1 in boxes:
            diff = np.abs(moved[y0 - 2 : y1 - 2, x0 + 3 : x1 + 3].astype(int) - still[y0:y1, x0:x1])
            assert diff.max() <= 1, (y0, x0)
        assert np.abs(moved.astype(int) - still).mean() > 1.0  # the head did move


def test_key_frames_are_exact_and_frames_between_blend_them_closely(still_state):
    """Against warping every frame: keys equal it, in-between frames stay within a fraction of a
    grey level on average, at the liveliest sway (speaking)."""
    renderer = still_state.renderer
    sway = HeadSway(256.0, 1.0, np.random.default_rng(1))

    def pose_at(k: int) -> Pose:
        return sway.pose((k + 0.5) / 25, 1.0)

    every, keyed = renderer.head_motion(1), renderer.head_motion(2)
    exact, blended = np.empty((2, 512, 512, 3), np.uint8)
    psnr, mean = [], []
    for f in range(60):
        shape = SHAPES[f % 2] * (0.5 + 0.5 * np.sin(f / 3))
        renderer.render(shape, 0.0, exact, (every, every.view(f, pose_at)))
        renderer.render(shape, 0.0, blended, (keyed, keyed.view(f, pose_at)))
        if f % 2 == 0:
            np.testing.assert_array_equal(blended, exact)
        else:
            psnr.append(_psnr(blended, exact))
            mean.append(np.abs(blended.astype(int) - exact).mean())
    print(f"\nframes between keys vs warped: PSNR min {min(psnr):.1f} dB, "
          f"median {np.median(psnr):.1f} dB; mean |diff| {np.mean(mean):.3f}")  # fmt: skip
    assert min(psnr) > 45.0
    assert np.mean(mean) < 0.3


def test_the_whole_frame_is_warped_once_per_key(still_state, monkeypatch):
    calls = []
    upsample = HeadFields.upsample
    monkeypatch.setattr(
        HeadFields, "upsample", lambda self, s: calls.append(1) or upsample(self, s)
    )
    motion = still_state.renderer.head_motion(2)
    out = np.empty((512, 512, 3), np.uint8)
    for f in range(20):
        still_state.renderer.render(
            SHAPES[0], 0.0, out, (motion, motion.view(f, lambda k: Pose(tx=k * 0.1)))
        )
    assert len(calls) == 11  # keys 0, 2, ..., 20 (the last one ahead of frame 19)


def test_sessions_warp_at_the_configured_keys():
    engine = WarpEngine(WarpConfig(width=256, height=256, head_key_frames=3))
    state = engine.open(None, None, {})
    assert state.head is not None
    assert state.head.every == 3
    assert engine.open(None, None, {"head_motion": False}).head is None
