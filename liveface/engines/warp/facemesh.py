"""MediaPipe's face detector and face mesh (with attention), run on LiteRT from the bundled models.

The models (Apache-2.0, ``models/``, see its NOTICE) are the ones MediaPipe 0.10.21 ships; this
module reproduces the pre- and post-processing of MediaPipe's static-image graphs
(``FaceDetectionShortRange``/``FullRange`` and ``FaceLandmarkFrontCpu`` with attention) so that the
landmarks match those of ``mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True,
refine_landmarks=True)``; ``scripts/reference/record_face_mesh.py`` records MediaPipe's own output
for the tests. All coordinates returned are normalised to the image (x / width, y / height).

Not thread-safe: one caller at a time (``face.py`` holds a lock).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from liveface.engines.warp.tflite import MEDIAPIPE_OPS, TfliteGraph

log = logging.getLogger(__name__)

MODELS = Path(__file__).parent / "models"

# Where the refined sub-models' points go in the 478-point mesh (facts of the model's topology:
# MediaPipe's landmarks-refinement mapping for the attention model). Lips: 80, each eye: 71, the
# irises are appended as 468-472 and 473-477.
LIPS_REFINED = (
    *(61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409),
    *(78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415),
    *(76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408),
    *(62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407),
)
LEFT_EYE_REFINED = (
    *(33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110),
    *(24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232),
    *(233, 244, 113, 225, 224, 223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118),
    *(119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193),
)
RIGHT_EYE_REFINED = (
    *(263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255),
    *(339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449),
    *(450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295),
    *(372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417),
)
LEFT_IRIS_REFINED = (468, 469, 470, 471, 472)
RIGHT_IRIS_REFINED = (473, 474, 475, 476, 477)

#: Face-mesh input side, pixels.
MESH_INPUT = 192


@dataclass(frozen=True)
class _DetectorSpec:
    model: str
    size: int  # square input side, pixels
    strides: tuple[int, ...]
    interpolated: bool  # a second anchor per layer at the interpolated scale
    min_score: float  # detections kept for the weighted NMS


# The full-range graph of MediaPipe's FaceDetection(model_selection=1) keeps its own 0.6 score
# threshold whatever min_detection_confidence says (its output matches only with 0.6).
SHORT_RANGE = _DetectorSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True, 0.5)
FULL_RANGE = _DetectorSpec("face_detection_full_range_sparse.tflite", 192, (4,), False, 0.6)


@dataclass(frozen=True)
class Detection:
    """A face found by the detector, image-normalised.

    Attributes:
        box: ``(xmin, ymin, width, height)``.
        keypoints: ``(6, 2)``: eyes (image left, right), nose tip, mouth, ear tragions.
        score: detector confidence in ``[0, 1]``.
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


@contextlib.contextmanager
def native_stderr_to_debug(what: str) -> Iterator[None]:
    """Capture fd 2 while native code runs and hand what it printed to ``log.debug``.

    LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` from C++ when an
    interpreter is built; Python-level redirection cannot catch that. Other threads' stderr output
    in the same window is captured too, so callers keep the window short (model loading only).
    """
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()  # what Python buffered belongs before the window
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.debug("%s: %s", what, line)


@cache
def _graph(name: str) -> TfliteGraph:
    with native_stderr_to_debug(f"LiteRT ({name})"):
        return TfliteGraph((MODELS / name).read_bytes(), MEDIAPIPE_OPS)


@cache
def _anchors(spec: _DetectorSpec) -> np.ndarray:
    """SSD anchor centres ``(n, 2)`` (x, y), normalised; anchor sizes are fixed to 1."""
    out = []
    k = 0
    while k < len(spec.strides):
        same = 1  # consecutive layers of one stride share a grid
        while k + same < len(spec.strides) and spec.strides[k + same] == spec.strides[k]:
            same += 1
        per_cell = same * (2 if spec.interpolated else 1)
        side = math.ceil(spec.size / spec.strides[k])
        ys, xs = np.mgrid[0:side, 0:side]
        centres = np.stack([(xs + 0.5) / side, (ys + 0.5) / side], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
        k += same
    return np.concatenate(out).astype(np.float32)


def _rotated_patch(
    rgb: np.ndarray,
    centre: tuple[float, float],
    size: tuple[float, float],
    rotation: float,
    out: int,
    border: int,
) -> np.ndarray:
    """The rotated rectangle of ``rgb`` resampled to ``out x out`` uint8, bilinear as MediaPipe."""
    rect = ((centre[0], centre[1]), (size[0], size[1]), rotation * 180.0 / math.pi)
    src = cv2.boxPoints(rect).astype(np.float32)
    dst = np.array([[0, out], [0, 0], [out, 0], [out, out]], np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(rgb, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=border)


def detect_faces(
    rgb: np.ndarray, spec: _DetectorSpec, min_score: float | None = None
) -> list[Detection]:
    """Faces in ``rgb (h, w, 3) uint8``, best first (MediaPipe's letterbox, decode, weighted NMS).

    ``min_score`` defaults to the detector's own threshold.
    """
    h, w = rgb.shape[:2]
    # letterbox: the whole image, padded to a square, zeros outside
    side = float(max(w, h))
    patch = _rotated_patch(rgb, (w / 2, h / 2), (side, side), 0.0, spec.size, cv2.BORDER_CONSTANT)
    x = patch.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    raw_boxes, raw_scores = _graph(spec.model).run(x[None])
    boxes = raw_boxes.reshape(-1, 16)
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    anchors = _anchors(spec)
    keep = np.flatnonzero(scores >= (spec.min_score if min_score is None else min_score))
    found = []
    for i in keep:
        b = boxes[i] / np.float32(spec.size)
        cx, cy = b[0] + anchors[i, 0], b[1] + anchors[i, 1]
        bw, bh = b[2], b[3]
        if not (bw >= 0 and bh >= 0):
            continue
        kps = b[4:16].reshape(6, 2) + anchors[i]
        found.append((float(scores[i]), np.array([cx - bw / 2, cy - bh / 2, bw, bh]), kps))
    dets = []
    # tensor-normalised -> image-normalised (undo the letterbox)
    sx, sy = side / w, side / h
    ox, oy = (w - side) / 2 / w, (h - side) / 2 / h
    for score, box, kps in _weighted_nms(found):
        x0, y0 = box[0] * sx + ox, box[1] * sy + oy
        kp = kps * np.array([sx, sy]) + np.array([ox, oy])
        dets.append(Detection((x0, y0, box[2] * sx, box[3] * sy), kp.astype(np.float32), score))
    return dets


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of ``(xmin, ymin, w, h)`` boxes."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix < 0 or iy < 0:
        return 0.0
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def _weighted_nms(
    found: list[tuple[float, np.ndarray, np.ndarray]], threshold: float = 0.3
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Score-weighted averaging of overlapping detections (IoU > ``threshold``), best first."""
    rest = sorted(found, key=lambda d: -d[0])
    out = []
    while rest:
        top = rest[0]
        group = [d for d in rest if _iou(d[1], top[1]) > threshold]
        rest = [d for d in rest if _iou(d[1], top[1]) <= threshold]
        wts = np.array([d[0] for d in group])[:, None]
        corners = np.array([np.r_[d[1][:2], d[1][:2] + d[1][2:]] for d in group])
        c = (wts * corners).sum(axis=0) / wts.sum()
        kps = (wts[:, :, None] * np.array([d[2] for d in group])).sum(axis=0) / wts.sum()
        out.append((top[0], np.r_[c[:2], c[2:] - c[:2]], kps))
    return out


@dataclass(frozen=True)
class _Roi:
    """A rotated rectangle, image-normalised centre and size, rotation in radians."""

    cx: float
    cy: float
    w: float
    h: float
    rotation: float


def _roi_from_detection(det: Detection, w: int, h: int) -> _Roi:
    """The face-mesh crop for a detection: level the eyes, square the long side, 1.5x."""
    (x0, y0), (x1, y1) = det.keypoints[0] * (w, h), det.keypoints[1] * (w, h)
    angle = -math.atan2(-(y1 - y0), x1 - x0)
    rotation = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    bx, by, bw, bh = det.box
    long_side = max(bw * w, bh * h)
    return _Roi(bx + bw / 2, by + bh / 2, 1.5 * long_side / w, 1.5 * long_side / h, rotation)


def _overlap(a: _Roi, b: _Roi) -> float:
    """IoU of the axis-aligned boxes of two ROIs (rotation ignored, as MediaPipe does)."""
    box = lambda r: np.array([r.cx - r.w / 2, r.cy - r.h / 2, r.w, r.h])  # noqa: E731
    return _iou(box(a), box(b))


def face_mesh(
    rgb: np.ndarray, max_faces: int = 3, min_detection: float = 0.5, min_presence: float = 0.5
) -> list[np.ndarray]:
    """478 image-normalised landmarks ``(478, 2)`` per face of ``rgb (h, w, 3) uint8``."""
    h, w = rgb.shape[:2]
    rois: list[_Roi] = []
    for det in detect_faces(rgb, SHORT_RANGE, min_detection)[:max_faces]:
        roi = _roi_from_detection(det, w, h)
        # a later ROI replaces the earlier ones it overlaps (MediaPipe's association step)
        rois = [r for r in rois if _overlap(roi, r) <= 0.5] + [roi]
    graph = _graph("face_landmark_with_attention.tflite")
    faces = []
    for roi in rois:
        patch = _rotated_patch(
            rgb,
            (roi.cx * w, roi.cy * h),
            (roi.w * w, roi.h * h),
            roi.rotation,
            MESH_INPUT,
            cv2.BORDER_REPLICATE,
        )
        x = patch.astype(np.float32) * np.float32(1.0 / 255.0)
        mesh, lips, eye_l, eye_r, iris_l, iris_r, flag = graph.run(x[None])
        if 1.0 / (1.0 + math.exp(-float(flag.reshape(-1)[0]))) <= min_presence:
            continue
        pts = np.zeros((478, 2), np.float32)
        pts[:468] = mesh.reshape(468, 3)[:, :2]
        for idx, part in (
            (LIPS_REFINED, lips),
            (LEFT_EYE_REFINED, eye_l),
            (RIGHT_EYE_REFINED, eye_r),
            (LEFT_IRIS_REFINED, iris_l),
            (RIGHT_IRIS_REFINED, iris_r),
        ):
            pts[list(idx)] = part.reshape(-1, 2)
        faces.append(_project(pts / np.float32(MESH_INPUT), roi))
    return faces


def _project(lm: np.ndarray, roi: _Roi) -> np.ndarray:
    """ROI-normalised landmarks ``(n, 2)`` -> image-normalised."""
    x, y = lm[:, 0] - 0.5, lm[:, 1] - 0.5
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    nx = (c * x - s * y) * roi.w + roi.cx
    ny = (s * x + c * y) * roi.h + roi.cy
    return np.stack([nx, ny], axis=-1).astype(np.float32)
