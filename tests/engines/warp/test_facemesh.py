"""The bundled face models on LiteRT reproduce MediaPipe 0.10.21's face detection and face mesh.

The reference values were recorded from ``mediapipe`` itself by
``scripts/reference/record_face_mesh.py`` on the images of ``mesh_cases.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liveface.engines.warp import facemesh as F
from liveface.engines.warp import tflite
from tests.engines.warp.mesh_cases import cases

REF = np.load(Path(__file__).parent / "data" / "mediapipe_face_mesh.npz")
CASES = cases()


def _px(rgb: np.ndarray) -> np.ndarray:
    return np.array(rgb.shape[1::-1], np.float64)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(("kind", "spec"), [("full", F.FULL_RANGE), ("short", F.SHORT_RANGE)])
def test_detections_match_mediapipe(name, kind, spec):
    rgb = CASES[name]
    ref = REF[f"{name}/{kind}"]
    dets = F.detect_faces(rgb, spec)
    assert len(dets) == len(ref)
    for det, r in zip(dets, ref, strict=True):
        scale = np.tile(_px(rgb), 8)
        ours = np.r_[det.box, det.keypoints.ravel()] * scale
        np.testing.assert_allclose(ours, r[:16] * scale, atol=0.01)  # pixels
        assert det.score == pytest.approx(float(r[16]), abs=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mesh_matches_mediapipe(name):
    rgb = CASES[name]
    ref = REF[f"{name}/mesh"]
    faces = F.face_mesh(rgb, max_faces=3)
    assert len(faces) == len(ref)
    for lm, r in zip(faces, ref, strict=True):
        assert lm.shape == (478, 2)
        err = np.abs((lm - r) * _px(rgb)).max()
        assert err < 0.02, f"{name}: landmarks differ from MediaPipe's by {err:.4f} px"


def test_cases_cover_what_matters():
    """The reference holds poses and counts the product relies on (guards a bad re-recording)."""
    assert len(REF["astronaut/mesh"]) == 1
    assert len(REF["rotated/mesh"]) == 1
    assert len(REF["two_face_crops/mesh"]) == 2
    assert len(REF["two_faces/full"]) == 2
    assert len(REF["no_face/full"]) == 0
    assert len(REF["no_face/mesh"]) == 0


def test_custom_ops_move_points_consistently():
    """TransformLandmarks and TransformTensorBilinear use the matrix of Landmarks2TransformMatrix
    the same way: a feature map that is a ramp in x reads back the crop's own x positions."""
    rng = np.random.default_rng(0)
    lm = np.zeros((1, 10, 3), np.float32)
    lm[0, :, :2] = rng.uniform(10, 30, (10, 2))
    opts = {
        "left_rotation_idx": 0,
        "right_rotation_idx": 1,
        "target_rotation_radians": 0.0,
        "output_width": 8,
        "output_height": 8,
        "scale_x": 1.5,
        "scale_y": 1.5,
        "subset_idxs": list(range(10)),
    }
    m = tflite.landmarks_to_transform_matrix([lm], opts)
    assert m.shape == (1, 4, 4)
    # the crop's centre pixel maps to the centre of the subset's (rotated) box
    centre = tflite.transform_landmarks([np.array([[[4.0, 4.0]]], np.float32), m], {})
    rot = -np.arctan2(lm[0, 1, 1] - lm[0, 0, 1], lm[0, 1, 0] - lm[0, 0, 0])
    c, s = np.cos(rot), np.sin(rot)
    pts = lm[0, :, :2]
    xr, yr = c * pts[:, 0] - s * pts[:, 1], s * pts[:, 0] + c * pts[:, 1]
    mx, my = (xr.min() + xr.max()) / 2, (yr.min() + yr.max()) / 2
    np.testing.assert_allclose(centre[0, 0], [c * mx + s * my, -s * mx + c * my], atol=1e-4)
    # sampling a map whose value is its own x coordinate returns the mapped x of each pixel centre
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[None, :, None], (40, 40, 1))[None]
    crop = tflite.transform_tensor_bilinear([np.ascontiguousarray(ramp), m], opts)
    yy, xx = np.mgrid[0:8, 0:8].astype(np.float32)
    grid = np.stack([xx + 0.5, yy + 0.5], -1).reshape(1, -1, 2)
    mapped = tflite.transform_landmarks([grid, m], {})[0] - 0.5
    inside = ((mapped >= 0) & (mapped <= 39)).all(axis=1)
    assert inside.sum() > 32
    got = crop[0, :, :, 0].ravel()
    np.testing.assert_allclose(got[inside], mapped[inside, 0], atol=1e-3)
    assert (got[~inside] == 0).all()  # sample points off the map read 0


def test_model_without_custom_op_support_is_refused():
    content = (F.MODELS / "face_landmark_with_attention.tflite").read_bytes()
    with pytest.raises(ValueError, match="Landmarks2TransformMatrix"):
        tflite.TfliteGraph(content, {})


def test_loading_the_models_prints_nothing():
    """LiteRT's C++ 'Created TensorFlow Lite XNNPACK delegate' line goes to debug logging."""
    code = (
        "import numpy as np\n"
        "from liveface.engines.warp import facemesh as F\n"
        "from tests.engines.warp.mesh_cases import cases\n"
        "assert len(F.face_mesh(cases()['astronaut'])) == 1\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout == ""


def test_a_prepared_graph_is_cached_on_disk_and_runs_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEFACE_CACHE", str(tmp_path))
    content = (F.MODELS / "face_landmark_with_attention.tflite").read_bytes()
    cold = tflite.TfliteGraph(content, tflite.MEDIAPIPE_OPS)
    assert len(list(tmp_path.glob("graph-*.npz"))) == 1
    warm = tflite.TfliteGraph(content, tflite.MEDIAPIPE_OPS)  # from the cache, no re-cutting
    x = np.random.default_rng(0).random((1, 192, 192, 3), dtype=np.float32)
    for a, b in zip(cold.run(x), warm.run(x), strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / next(tmp_path.iterdir()).name).write_bytes(b"not a cache")  # damaged: rebuilt
    again = tflite.TfliteGraph(content, tflite.MEDIAPIPE_OPS)
    np.testing.assert_array_equal(again.run(x)[0], cold.run(x)[0])
