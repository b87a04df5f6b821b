"""Frame rendering: everything precomputed for one portrait, and the per-frame composition.

Per frame: mix the mouth fields, invert them on the lower-face ROI and remap it, paint the mouth
interior and close the eyes by the blink amount, all at rest pose; then move the head. The head
moves the rest frame as a whole (``headmotion``: warped at key frames, blended between) and the
regions drawn this frame (mouth, eyelids) by the frame's own pose, over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L
from liveface.engines.warp.closure import close_mouth
from liveface.engines.warp.eyes import EyeRig, build_eyes
from liveface.engines.warp.face import AlignedFace
from liveface.engines.warp.headmotion import HeadMotion, HeadView, offset_xy, remap_box
from liveface.engines.warp.idle import HeadFields, build_head_fields
from liveface.engines.warp.interior import MouthInterior, blend, build_interior
from liveface.engines.warp.inverse import MouthWarp, build_mouth_warp, remap_xy
from liveface.engines.warp.mesh import MouthMesh, build_mouth_mesh, mouth_geometry

#: Mouth amplitudes below this are rest: the portrait's own pixels are used unchanged. At 0.01
#: the jaw is a fifth of a pixel from rest, so snapping there is invisible and saves the warp
#: during the long tail of a release.
REST_EPS = 0.01
_NO_MAP = np.empty(0, np.float32)
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
        self._work = rig.portrait.copy()  # the rest frame, with this frame's mouth and lids

    def head_motion(self, every: int) -> HeadMotion:
        """Head-motion frames of this rig's rest frame, warped every ``every`` frames."""
        return HeadMotion(self.rig.head, self.rig.portrait, every)

    def render(
        self,
        shape: np.ndarray,
        blink: float,
        out: np.ndarray,
        head: tuple[HeadMotion, HeadView] | None = None,
    ) -> float:
        """Draw one frame into ``out (H, W, 3) uint8``; returns how far the lips part (pixels).

        Args:
            shape: mouth amplitudes ``(3,)`` (jaw, spread, round) in [0, 1].
            blink: lid closure in [0, 1].
            head: the session's head motion and this frame's view of it, or None to keep the
                head still.
        """
        rig = self.rig
        talking = float(np.max(np.abs(shape))) > REST_EPS
        if head is None:
            np.copyto(out, rig.portrait)
            parting = self._still_mouth(shape, out) if talking else 0.0
            for eye in rig.eyes:
                eye.render(rig.portrait, out, blink)
            return parting
        motion, view = head
        np.copyto(out, view.background)
        work = self._work  # the rest frame, with this frame's eyelids
        lids = [eye.box for eye in rig.eyes if eye.render(rig.portrait, work, blink)]
        for box in lids:
            motion.move(work, box, view, out)
        parting = self._moving_mouth(shape, work, motion, view, out) if talking else 0.0
        for y0, y1, x0, x1 in lids:  # back to rest for the next frame
            work[y0:y1, x0:x1] = rig.portrait[y0:y1, x0:x1]
        return parting

    def _inner(self, shape: np.ndarray) -> np.ndarray:
        """The deformed inner-lip chains ``(2, 11, 2)`` (upper, lower), ROI-local."""
        rig = self.rig
        return rig.inner_rest + np.tensordot(shape.astype(np.float32), rig.inner_disp, 1)

    def _still_mouth(self, shape: np.ndarray, out: np.ndarray) -> float:
        """The mouth of a still head: the ROI warped, the interior painted over it."""
        rig = self.rig
        inner = self._inner(shape)
        back = rig.warp.backward_map(shape, inner[1], self._scratch)
        warped = remap_xy(rig.roi_image, back, cv2.BORDER_REPLICATE)
        parting = rig.interior.composite(warped, inner[0], inner[1])
        y0, y1, x0, x1 = rig.mesh.roi
        out[y0:y1, x0:x1] = warped
        return parting

    def _moving_mouth(
        self,
        shape: np.ndarray,
        source: np.ndarray,
        motion: HeadMotion,
        view: HeadView,
        out: np.ndarray,
    ) -> float:
        """The mouth of a moving head, in one remap: the mouth's map solved where the head's map
        lands, so each pixel is resampled once; the interior layer moves with the head."""
        rig = self.rig
        y0, y1, x0, x1 = rig.mesh.roi
        grown = motion.grow(rig.mesh.roi, view)
        gy0, _, gx0, _ = grown
        shift = motion.shift(view, grown)
        roi = np.s_[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
        inner = self._inner(shape)
        back = rig.warp.backward_map(
            shape, inner[1], self._scratch, np.ascontiguousarray(shift[roi])
        )
        parting, layer = rig.interior.layer(inner[0], inner[1])
        if layer is not None:  # its box grown by the reach, and the shift there, before ...
            ly0, ly1, lx0, lx1 = layer.box
            over = motion.grow((y0 + ly0, y0 + ly1, x0 + lx0, x0 + lx1), view)
            sy0, sy1, sx0, sx1 = over
            paint_xy = shift[sy0 - gy0 : sy1 - gy0, sx0 - gx0 : sx1 - gx0].copy()
        xy = motion.to_absolute(shift, grown)  # ... this turns the shifts into coordinates
        offset_xy(back, x0, y0, xy[roi])  # ROI to frame coordinates
        remap_box(source, xy, grown, out)
        if layer is not None:
            # The layer at the points the head's map lands on, in the layer's own pixels.
            motion.to_absolute(paint_xy, over)
            offset_xy(paint_xy, -(x0 + lx0), -(y0 + ly0), paint_xy)
            paint = cv2.remap(layer.paint, paint_xy, _NO_MAP, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
            alpha = cv2.remap(layer.alpha, paint_xy, _NO_MAP, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0,))  # fmt: skip
            patch = out[sy0:sy1, sx0:sx1]
            patch[...] = blend(patch, paint, alpha)
        return parting
