"""Portrait intake: normalise the image, find exactly one face and its landmarks, align and crop.

Detection runs in two stages because MediaPipe's face mesh only finds faces that fill a good part
of the image: the full-range face detector first counts faces anywhere in the picture (so a group
photo or a small face is reported as such), then the mesh runs on a crop around the one face. Both
are MediaPipe's models run on LiteRT by :mod:`liveface.engines.warp.facemesh`, loaded lazily (when
a session opens), never at import time of the package.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L
from liveface.errors import BadInputError, NoFaceError
from liveface.pipeline.image import to_rgb

#: Background that transparent portrait pixels are composited onto (a neutral studio grey).
#: A second detection smaller than this fraction of the largest one is background, not a face
#: competing for the avatar (posters, people far behind).
SECOND_FACE_RATIO = 0.4
#: The face crop handed to the mesh: its side in face-box widths, and its minimum side in pixels.
MESH_CROP_FACES = 2.4
MESH_CROP_MIN_SIDE = 256

# The LiteRT interpreters are loaded once and are not thread-safe: concurrent opens take turns
# (detection takes ~0.05 s).
_DETECT_LOCK = threading.Lock()


@dataclass(frozen=True)
class AlignedFace:
    """A portrait cropped and aligned to the output frame.

    Attributes:
        image: uint8 RGB ``(height, width, 3)``, eyes level, face centred.
        landmarks: float32 ``(478, 2)`` landmark (x, y) in output pixels.
        source_face_px: forehead-to-chin distance of the face in the original portrait, pixels.
    """

    image: np.ndarray
    landmarks: np.ndarray
    source_face_px: float

    @property
    def face_height(self) -> float:
        """Forehead-to-chin distance in output pixels."""
        return float(np.linalg.norm(self.landmarks[L.FOREHEAD] - self.landmarks[L.CHIN]))


def default_portrait() -> np.ndarray:
    """The default avatar: scikit-image's public-domain astronaut, uint8 RGB ``(512, 512, 3)``."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def to_rgb_uint8(portrait: Any) -> np.ndarray:
    """:func:`liveface.pipeline.image.to_rgb`, refusing images under 16 pixels a side.

    Raises:
        BadInputError: not an image, an unsupported shape, non-finite pixels, or too small.
    """
    img = to_rgb(portrait)
    if min(img.shape[:2]) < 16:
        raise BadInputError(f"portrait of {img.shape[1]}x{img.shape[0]} pixels is too small")
    return img


def detect_landmarks(rgb: np.ndarray, min_face_px: int, max_side: int) -> np.ndarray:
    """Landmarks of the single face in ``rgb (h, w, 3) uint8``, as float32 ``(478, 2)`` pixels.

    Raises:
        NoFaceError: no face, several faces, or a face under ``min_face_px`` forehead to chin.
    """
    h, w = rgb.shape[:2]
    k = min(1.0, max_side / max(h, w))
    small = rgb
    if k < 1.0:  # detection needs no more than ~1 Mpx; INTER_AREA keeps the face unaliased
        small = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    kx, ky = small.shape[1] / w, small.shape[0] / h
    with _DETECT_LOCK:
        boxes = _face_boxes(small)
        if len(boxes) > 1:
            raise NoFaceError(
                f"found several faces ({len(boxes)}) in the portrait; use a photo of one person"
            )
        lm = _mesh_near(small, boxes[0] if boxes else None)
    if lm is None:
        if boxes:
            bw = boxes[0][2] / kx
            raise NoFaceError(
                f"the face in the portrait is too small or unclear ({bw:.0f} px wide); use a "
                f"photo where the face is at least {min_face_px} px tall"
            )
        raise NoFaceError("no face found in the portrait; use a clear, front-facing photo")
    lm = lm / np.array([kx, ky], dtype=np.float32)
    size = float(np.linalg.norm(lm[L.FOREHEAD] - lm[L.CHIN]))
    if size < min_face_px:
        raise NoFaceError(
            f"the face in the portrait is too small ({size:.0f} px forehead to chin); use a "
            f"photo where the face is at least {min_face_px} px tall"
        )
    return lm


def _face_boxes(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Face boxes ``(x, y, w, h)`` in pixels found by the full-range detector, largest first."""
    from liveface.engines.warp.facemesh import FULL_RANGE, detect_faces

    h, w = rgb.shape[:2]
    boxes = [
        (d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h)
        for d in detect_faces(rgb, FULL_RANGE)
    ]
    boxes.sort(key=lambda b: -b[2])
    return [b for b in boxes if boxes and b[2] >= SECOND_FACE_RATIO * boxes[0][2]]


def mesh_crop(
    rgb: np.ndarray, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, tuple[float, float], float]:
    """A square crop around a face ``box (x, y, w, h)`` for the face mesh: ``MESH_CROP_FACES``
    face sizes wide, upscaled to at least ``MESH_CROP_MIN_SIDE`` pixels, the image's edges
    replicated past its borders.

    Returns ``(crop, (x0, y0), scale)``: a crop pixel ``p`` is ``p / scale + (x0, y0)`` in ``rgb``.
    """
    side = MESH_CROP_FACES * max(box[2], box[3])
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    x0, y0 = cx - side / 2, cy - side / 2
    scale = max(1.0, MESH_CROP_MIN_SIDE / side)
    out = max(MESH_CROP_MIN_SIDE, round(side * scale))
    m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], dtype=np.float64)
    crop = cv2.warpAffine(
        rgb, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(crop, np.uint8), (x0, y0), scale


def _mesh_near(rgb: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray | None:
    """Run the face mesh on a crop around ``box`` (or the whole image); ``(478, 2)`` or None.

    Raises:
        NoFaceError: the mesh finds several faces.
    """
    from liveface.engines.warp.facemesh import face_mesh

    h, w = rgb.shape[:2]
    x0, y0, scale = 0.0, 0.0, 1.0
    crop = rgb
    if box is not None:
        crop, (x0, y0), scale = mesh_crop(rgb, box)
    faces = face_mesh(crop, max_faces=3)
    if len(faces) > 1:
        raise NoFaceError(
            f"found several faces ({len(faces)}) in the portrait; use a photo of one person"
        )
    if not faces:
        return None
    ch, cw = crop.shape[:2]
    pts: np.ndarray = faces[0] * np.array([cw, ch], dtype=np.float32)
    if pts.shape[0] != L.NUM_LANDMARKS:
        return None
    pts = pts / scale + np.array([x0, y0], dtype=np.float32)
    inside = (pts[:, 0] > -0.25 * w) & (pts[:, 0] < 1.25 * w) & (pts[:, 1] > -0.25 * h)
    return pts if inside.all() else None


def align_face(
    rgb: np.ndarray, lm: np.ndarray, width: int, height: int, face_height: float, center_y: float
) -> AlignedFace:
    """Rotate the eyes level, scale and crop so the face fills ``face_height`` of the frame.

    Args:
        rgb: uint8 ``(h, w, 3)`` portrait.
        lm: ``(478, 2)`` landmarks in ``rgb`` pixels.
        width, height: output size.
        face_height: forehead-to-chin height as a fraction of ``height``.
        center_y: vertical position of the face centre as a fraction of ``height``.
    """
    size = float(np.linalg.norm(lm[L.FOREHEAD] - lm[L.CHIN]))
    scale = face_height * height / size
    src, pts = rgb, lm.astype(np.float64)
    if scale < 0.7:  # strong downscale: shrink first with area averaging so the crop is not aliased
        sw, sh = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
        src = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        pts = pts * np.array([sw / rgb.shape[1], sh / rgb.shape[0]])
        scale = face_height * height / float(np.linalg.norm(pts[L.FOREHEAD] - pts[L.CHIN]))
    left, right = L.eye_centers(pts)
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    center = (pts[L.FOREHEAD] + pts[L.CHIN]) / 2
    rot = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), roll, scale)
    m = np.asarray(rot, np.float64)
    m[:, 2] += np.array([width / 2, center_y * height]) - center
    flags = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR
    image = cv2.warpAffine(src, m, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    out = pts @ m[:, :2].T + m[:, 2]
    return AlignedFace(
        image=np.ascontiguousarray(image),
        landmarks=out.astype(np.float32),
        source_face_px=float(np.linalg.norm(lm[L.FOREHEAD] - lm[L.CHIN])),
    )
