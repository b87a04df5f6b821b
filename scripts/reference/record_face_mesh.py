"""Record MediaPipe 0.10.21's face detection and face mesh on the test images.

Run with an environment that has ``mediapipe==0.10.21`` (not a liveface dependency):

    PYTHONPATH=. python scripts/reference/record_face_mesh.py

It writes ``tests/engines/warp/data/mediapipe_face_mesh.npz``: for each case of
``tests/engines/warp/mesh_cases.py``, the full- and short-range detections (box, 6 keypoints,
score; image-normalised) and the 478 refined landmarks (x, y image-normalised) of
``FaceMesh(static_image_mode=True, max_num_faces=3, refine_landmarks=True)``.
"""

from __future__ import annotations

from pathlib import Path

import mediapipe as mp
import numpy as np

from tests.engines.warp.mesh_cases import cases

OUT = Path(__file__).resolve().parents[2] / "tests/engines/warp/data/mediapipe_face_mesh.npz"


def _detections(rgb: np.ndarray, model: int) -> np.ndarray:
    fd = mp.solutions.face_detection
    with fd.FaceDetection(model_selection=model, min_detection_confidence=0.5) as det:
        res = det.process(rgb)
    rows = []
    for d in res.detections or []:
        b = d.location_data.relative_bounding_box
        kp = [(k.x, k.y) for k in d.location_data.relative_keypoints]
        rows.append([b.xmin, b.ymin, b.width, b.height, *np.ravel(kp), d.score[0]])
    return np.array(rows, np.float32).reshape(-1, 17)


def _mesh(rgb: np.ndarray) -> np.ndarray:
    fm = mp.solutions.face_mesh
    with fm.FaceMesh(static_image_mode=True, max_num_faces=3, refine_landmarks=True) as mesh:
        res = mesh.process(rgb)
    faces = [[(p.x, p.y) for p in f.landmark] for f in res.multi_face_landmarks or []]
    return np.array(faces, np.float32).reshape(-1, 478, 2)


def main() -> None:
    out = {}
    for name, rgb in cases().items():
        out[f"{name}/full"] = _detections(rgb, 1)
        out[f"{name}/short"] = _detections(rgb, 0)
        out[f"{name}/mesh"] = _mesh(rgb)
        print(name, {k.split("/")[1]: v.shape for k, v in out.items() if k.startswith(name + "/")})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
