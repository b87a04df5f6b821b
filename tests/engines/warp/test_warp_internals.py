"""The engine's building blocks: landmark topology, field inversion, blink clock, head fields."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from liveface.engines.warp import landmarks as L
from liveface.engines.warp.idle import BLINK_S, BlinkClock, HeadSway, Pose, blink_profile
from liveface.engines.warp.inverse import mix_fields, remap_xy


def _edges(chains: list[tuple[int, ...]]) -> set[frozenset[int]]:
    return {frozenset(p) for c in chains for p in itertools.pairwise(c)}


def test_landmark_chains_match_the_face_mesh_topology():
    conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    lips = [L.LIPS_OUTER_UPPER, L.LIPS_OUTER_LOWER, L.LIPS_INNER_UPPER, L.LIPS_INNER_LOWER]
    assert _edges(lips) == {frozenset(e) for e in conn.FACEMESH_LIPS}
    assert _edges([L.EYE_L_UPPER, L.EYE_L_LOWER]) == {frozenset(e) for e in conn.FACEMESH_RIGHT_EYE}
    assert _edges([L.EYE_R_UPPER, L.EYE_R_LOWER]) == {frozenset(e) for e in conn.FACEMESH_LEFT_EYE}
    oval = L.FACE_OVAL + L.FACE_OVAL[:1]
    assert _edges([oval]) == {frozenset(e) for e in conn.FACEMESH_FACE_OVAL}


@pytest.mark.parametrize("amounts", [(0.3, 0, 0), (0.7, 0.5, 0), (1.0, 0, 0), (0.5, 0, 1.0)])
def test_backward_map_solves_the_warp_outside_the_mouth(still_state, amounts):
    """``s + F(s) = p`` holds for the map's ``s`` except where the lips part (no source there)."""
    rig = still_state.rig
    a = np.array(amounts, np.float32)
    inner = rig.inner_rest + np.tensordot(a, rig.inner_disp, 1)
    back = rig.warp.backward_map(a, inner[1], rig.warp.new_scratch())
    field = mix_fields(rig.mesh.fields, a, np.empty_like(rig.mesh.grid))
    residual = back + remap_xy(field, back, cv2.BORDER_CONSTANT) - rig.mesh.grid
    err = np.linalg.norm(residual, axis=2)
    mouth = np.zeros(err.shape, np.uint8)
    poly = np.concatenate([inner[0], inner[1][::-1]])
    cv2.fillPoly(mouth, [np.round(poly).astype(np.int32)], (1,))
    outside = cv2.dilate(mouth, np.ones((5, 5), np.uint8)) == 0
    assert np.percentile(err[outside], 99) < 3.0
    assert np.median(err[outside]) < 0.05


def test_blink_profile_and_rate():
    assert blink_profile(-0.01) == 0.0
    assert blink_profile(BLINK_S) == 0.0
    assert max(blink_profile(t / 1000) for t in range(300)) == 1.0
    clock = BlinkClock(17.0, np.random.default_rng(0))
    fps, minutes = 25, 10
    closed = np.array([clock.amount((f + 0.5) / fps) > 0.5 for f in range(minutes * 60 * fps)])
    blinks = int(np.sum(closed[1:] & ~closed[:-1]))
    assert 12 * minutes <= blinks <= 24 * minutes
    assert BlinkClock(0.0, np.random.default_rng(0)).amount(5.0) == 0.0


def test_blink_clock_memory_is_bounded():
    clock = BlinkClock(60.0, np.random.default_rng(1))
    for t in range(0, 3600, 7):
        clock.amount(float(t))
    assert len(clock._starts) < 30


def test_head_sway_is_small_and_smooth():
    sway = HeadSway(256.0, 1.0, np.random.default_rng(2))
    poses = [sway.pose(f / 25, talk=1.0) for f in range(25 * 60)]
    tx = np.array([p.tx for p in poses])
    roll = np.array([p.roll for p in poses])
    assert 0.5 < np.abs(tx).max() < 12.0  # pixels, face 256 px tall
    assert np.abs(roll).max() < np.radians(5)
    assert np.abs(np.diff(tx)).max() < 0.5  # no jumps between frames


def test_head_motion_keeps_frame_edges_still(still_state):
    head = still_state.rig.head
    back = head.backward_shift(
        Pose(tx=4, ty=-3, roll=0.03, zoom=0.01, breath=2),
        np.empty(head.basis.shape[1:], np.float32),
    )
    shift = np.linalg.norm(back, axis=2)
    assert shift.max() > 2.0
    edges = np.concatenate([shift[0], shift[-1], shift[:, 0], shift[:, -1]])
    assert edges.max() < 0.25  # pinned to within a quarter pixel (fields are built at 1/4 size)
