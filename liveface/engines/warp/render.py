"""Frame rendering: everything precomputed for one portrait, and the per-frame composition.

Per frame: mix the mouth fields, invert them on the lower-face ROI and remap it, paint the mouth
interior, close the eyes by the blink amount, then move the head with one full-frame remap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L
from liveface.engines.warp.closure import close_mouth
from liveface.engines.warp.eyes import EyeRig, build_eyes
from liveface.engines.warp.face import AlignedFace
from liveface.engines.warp.idle import HeadFields, Pose, build_head_fields
from liveface.engines.warp.interior import MouthInterior, build_interior
from liveface.engines.warp.inverse import MouthWarp, build_mouth_warp, remap_xy
from liveface.engines.warp.mesh import MouthMesh, build_mouth_mesh, mouth_geometry

#: Mouth amplitudes below this are rest: the portrait's own pixels are used unchanged. At 0.01
#: the jaw is a fifth of a pixel from rest, so snapping there is invisible and saves the warp
#: during the long tail of a release.
REST_EPS = 0.01
_INNER = (list(L.LIPS_INNER_UPPER), list(L.LIPS_INNER_LOWER))


@dataclass(frozen=True)
class FaceRig:
    """Everything per portrait that makes a frame cheap (read-only once built).

    Attributes:
        portrait: uint8 RGB ``(H, W, 3)``, the rest frame: the aligned portrait with its lips
            closed (see ``closure``).
        original: uint8 RGB ``(H, W, 3)``, the aligned portrait as it came.
        original_landmarks: float32 ``(478, 2)`` its landmarks in output pixels.
        rest_gap: how far the portrait's own lips were apart, pixels (0 if closed).
        landmarks: float32 ``(478, 2)`` rest landmarks in output pixels (of ``portrait``).
        mesh: lower-face fields; ``roi_image`` is ``portrait`` cut to ``mesh.roi``.
        warp: the per-frame solver of the mesh's backward map.
        interior: the mouth-interior painter.
        eyes: blink rigs of the visible eyes.
        head: head-motion fields.
        inner_rest: float32 ``(2, 11, 2)`` rest inner-lip chains (upper, lower), ROI-local.
        inner_disp: float32 ``(3, 2, 11, 2)`` their motion per mouth shape.
        mouth_box: ``(y0, y1, x0, x1)`` output pixels that can show the mouth interior.
    """

    portrait: np.ndarray
    original: np.ndarray
    original_landmarks: np.ndarray
    rest_gap: float
    landmarks: np.ndarray
    mesh: MouthMesh
    warp: MouthWarp
    roi_image: np.ndarray
    interior: MouthInterior
    eyes: list[EyeRig]
    head: HeadFields
    inner_rest: np.ndarray
    inner_disp: np.ndarray
    mouth_box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames."""
        return self.portrait.shape[0], self.portrait.shape[1]


def build_rig(face: AlignedFace) -> FaceRig:
    """Close the portrait's mouth, then precompute the mouth mesh, interior, eyes and head."""
    h, w = face.image.shape[:2]
    closed = close_mouth(face.image, face.landmarks, face.face_height)
    image, lm = closed.image, closed.landmarks
    geo = mouth_geometry(lm, face.face_height)
    mesh = build_mouth_mesh(lm, geo, w, h)
    y0, y1, x0, x1 = mesh.roi
    local: np.ndarray = lm - np.array([x0, y0], np.float32)
    d = mesh.displacements
    extremes = [local + d[0] + d[1], local + d[0] + d[2], local + d[1], local + d[2]]
    roi_image = np.ascontiguousarray(image[y0:y1, x0:x1])
    original = face.image[y0:y1, x0:x1]
    opening = None if closed.opening is None else closed.opening[y0:y1, x0:x1]
    interior = build_interior(
        roi_image, local, extremes, (y1 - y0, x1 - x0), geo.half_width, original, opening
    )
    by0, by1, bx0, bx1 = interior.box
    return FaceRig(
        portrait=image,
        original=face.image,
        original_landmarks=face.landmarks,
        rest_gap=closed.rest_gap,
        landmarks=lm,
        mesh=mesh,
        warp=build_mouth_warp(mesh, local, face.face_height),
        roi_image=roi_image,
        interior=interior,
        eyes=build_eyes(lm, w, h),
        head=build_head_fields(lm, face.face_height, w, h),
        inner_rest=np.stack([local[_INNER[0]], local[_INNER[1]]]).astype(np.float32),
        inner_disp=np.stack([d[:, _INNER[0]], d[:, _INNER[1]]], axis=1).astype(np.float32),
        mouth_box=(y0 + by0, y0 + by1, x0 + bx0, x0 + bx1),
    )


class Renderer:
    """Draws frames of one rig; owns the scratch buffers, so one per session (not thread-safe)."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self._scratch = rig.warp.new_scratch()
        self._head_small = np.empty(rig.head.basis.shape[1:], np.float32)
        self._work = np.empty(rig.portrait.shape, np.uint8)

    def render(self, shape: np.ndarray, blink: float, pose: Pose | None, out: np.ndarray) -> float:
        """Draw one frame into ``out (H, W, 3) uint8``; returns how far the lips part (pixels).

        Args:
            shape: mouth amplitudes ``(3,)`` (jaw, spread, round) in [0, 1].
            blink: lid closure in [0, 1].
            pose: head pose, or None to keep the head still.
        """
        rig = self.rig
        frame = self._work if pose is not None else out
        np.copyto(frame, rig.portrait)
        parting = 0.0
        if float(np.max(np.abs(shape))) > REST_EPS:
            mesh = rig.mesh
            inner = rig.inner_rest + np.tensordot(shape.astype(np.float32), rig.inner_disp, 1)
            back = rig.warp.backward_map(shape, inner[1], self._scratch)
            warped = remap_xy(rig.roi_image, back, cv2.BORDER_REPLICATE)
            parting = rig.interior.composite(warped, inner[0], inner[1])
            y0, y1, x0, x1 = mesh.roi
            frame[y0:y1, x0:x1] = warped
        for eye in rig.eyes:
            eye.render(rig.portrait, frame, blink)
        if pose is not None:
            shift = rig.head.backward_shift(pose, self._head_small)
            cv2.remap(
                frame,
                shift,
                np.empty(0, np.float32),
                cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP,
                dst=out,
                borderMode=cv2.BORDER_REPLICATE,
            )
        return parting
