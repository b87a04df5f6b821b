"""The faces of a scene: several characters in one picture, found or declared, and their tiles.

Faces are found by MediaPipe's full-range detector (the one :mod:`.face` counts faces with) and
each gets the face mesh on a crop around it. Characters are the ``count`` largest faces numbered
left to right, or one face per box given (the largest face whose centre lies in the box).

The CPU engine animates each character inside its own *tile*: a full-height vertical band of the
frame, split half way between neighbouring faces, so tiles never overlap and each character's head
motion is pinned at its tile's edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.base import Box, SceneRequest
from liveface.engines.warp import landmarks as L
from liveface.engines.warp.face import _DETECT_LOCK, mesh_crop
from liveface.errors import BadInputError, NoFaceError

#: A tile must be this many face heights wide (forehead to chin) to hold its head and motion.
MIN_TILE_FACES = 1.1
#: Faces smaller than this fraction of the largest are background (posters, passers-by).
BACKGROUND_RATIO = 0.35

Rect = tuple[float, float, float, float]  # x, y, w, h in pixels


@dataclass(frozen=True)
class SceneFace:
    """One character's face in the scene image: ``landmarks`` float32 ``(478, 2)`` pixels."""

    landmarks: np.ndarray

    @property
    def height(self) -> float:
        """Forehead-to-chin distance, pixels."""
        return float(np.linalg.norm(self.landmarks[L.FOREHEAD] - self.landmarks[L.CHIN]))

    @property
    def center_x(self) -> float:
        return float((self.landmarks[L.FOREHEAD, 0] + self.landmarks[L.CHIN, 0]) / 2)


def find_scene_faces(rgb: np.ndarray, scene: SceneRequest, max_side: int) -> list[SceneFace]:
    """The characters' faces of ``rgb (h, w, 3) uint8``, in character order.

    Raises:
        NoFaceError: fewer faces than characters, no face in a box, or a face without a mesh.
    """
    h, w = rgb.shape[:2]
    k = min(1.0, max_side / max(h, w))
    small = rgb
    if k < 1.0:  # detection needs no more than ~1 Mpx; INTER_AREA keeps faces unaliased
        small = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    with _DETECT_LOCK:
        found = _detections(small)
        if scene.boxes:
            rects = [_face_in_box(found, box, sw, sh, i) for i, box in enumerate(scene.boxes)]
        else:
            if len(found) < scene.size:
                raise NoFaceError(
                    f"found {len(found)} face(s) in the portrait, the scene asks for "
                    f"{scene.size}; use a picture where every character's face is clear"
                )
            rects = sorted(found[: scene.size], key=lambda r: r[0] + r[2] / 2)
        faces = []
        for i, rect in enumerate(rects):
            lm = _mesh_in(small, rect)
            if lm is None:
                raise NoFaceError(f"character {i}'s face is too small or unclear for the mesh")
            faces.append(SceneFace((lm / np.float32(k)).astype(np.float32)))
    return faces


def _detections(rgb: np.ndarray) -> list[Rect]:
    """Face boxes in pixels, largest first, background faces left out."""
    from liveface.engines.warp.facemesh import FULL_RANGE, detect_faces

    h, w = rgb.shape[:2]
    rects = [
        (d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h)
        for d in detect_faces(rgb, FULL_RANGE)
    ]
    rects.sort(key=lambda r: -r[2])
    return [r for r in rects if r[2] >= BACKGROUND_RATIO * rects[0][2]]


def _face_in_box(found: list[Rect], box: Box, w: int, h: int, index: int) -> Rect:
    """The largest face whose centre lies in ``box`` (fractions)."""
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    for r in found:  # largest first
        cx, cy = r[0] + r[2] / 2, r[1] + r[3] / 2
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            return r
    raise NoFaceError(f"no face found inside boxes[{index}] {list(box)}; draw it around a face")


def _mesh_in(rgb: np.ndarray, rect: Rect) -> np.ndarray | None:
    """The face mesh ``(478, 2)`` pixels of the face nearest the centre of a crop around ``rect``
    (other faces may show at the crop's edges)."""
    from liveface.engines.warp.facemesh import face_mesh

    crop, (x0, y0), scale = mesh_crop(rgb, rect)
    out = crop.shape[0]
    faces = [f * np.float32(out) for f in face_mesh(crop, max_faces=4)]
    faces = [f for f in faces if f.shape[0] == L.NUM_LANDMARKS]
    if not faces:
        return None
    centre = np.float32(out / 2)
    best = min(faces, key=lambda f: float(np.linalg.norm(f.mean(axis=0) - centre)))
    return best / np.float32(scale) + np.array([x0, y0], np.float32)


def scene_tiles(faces: list[SceneFace], width: int) -> list[tuple[int, int]]:
    """``(x0, x1)`` of each character's tile (full-height bands split half way between
    neighbouring faces), in character order.

    Raises:
        BadInputError: two faces too close side by side for their tiles to hold their heads.
    """
    order = sorted(range(len(faces)), key=lambda i: faces[i].center_x)
    centres = [faces[i].center_x for i in order]
    cuts = [0] + [round((a + b) / 2) for a, b in itertools.pairwise(centres)] + [width]
    tiles: list[tuple[int, int]] = [(0, 0)] * len(faces)
    for k, i in enumerate(order):
        x0, x1 = cuts[k], cuts[k + 1]
        face = faces[i]
        xs = face.landmarks[:, 0]
        if x1 - x0 < MIN_TILE_FACES * face.height or xs.min() < x0 or xs.max() > x1:
            raise BadInputError(
                f"character {i}'s face is too close to its neighbour: the CPU engine needs the "
                "characters side by side, each about a face height clear of the next"
            )
        tiles[i] = (x0, x1)
    return tiles
