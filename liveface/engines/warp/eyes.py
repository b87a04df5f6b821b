"""Blinks: the upper eyelid slides down over the eye, stretching the lid skin above it.

A blink is an occlusion, not a deformation of the eye: the lid covers the iris rather than
squashing it. So each image column of the eye maps independently: rows between the brow and the
moving lid edge sample the lid skin stretched downwards, rows below the lid edge keep the eye as it
is. This is exact at any amount (no linearised field) and costs a small remap per open eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L

#: A closed lid stops this fraction of the eye opening above the lower lid margin.
CLOSED_GAP = 0.08


@dataclass(frozen=True)
class EyeRig:
    """One eye's blink geometry over a box of the output frame.

    Attributes:
        box: ``(y0, y1, x0, x1)`` in output pixels.
        lid_top: float32 ``(bw,)`` box-local row where the stretched lid skin begins (under the
            brow).
        lid_upper: float32 ``(bw,)`` box-local row of the upper lid margin at rest.
        lid_lower: float32 ``(bw,)`` box-local row of the lower lid margin.
        lash: float32 ``(bw,)`` height of the lash band that slides rigidly with the lid margin.
        map_x: float32 ``(bh, bw)`` column of each pixel (blinks move pixels vertically only).
        rows: float32 ``(bh, 1)`` row index of each box row.
    """

    box: tuple[int, int, int, int]
    lid_top: np.ndarray
    lid_upper: np.ndarray
    lid_lower: np.ndarray
    lash: np.ndarray
    map_x: np.ndarray
    rows: np.ndarray

    def render(self, portrait: np.ndarray, frame: np.ndarray, amount: float) -> None:
        """Draw the eye of ``portrait (H, W, 3)`` closed by ``amount`` in [0, 1] into ``frame``."""
        if amount <= 1e-3:
            return
        y0, y1, x0, x1 = self.box
        edge = self.lid_upper + amount * (1.0 - CLOSED_GAP) * (self.lid_lower - self.lid_upper)
        shift = edge - self.lid_upper
        # The lashes and the lid margin (a band just above the margin) slide down rigidly; only
        # the skin above them, up to ``lid_top``, stretches to fill the distance travelled.
        band_end = edge - self.lash
        top = self.lid_top
        scale = (band_end - shift - top) / np.maximum(band_end - top, 1e-3)
        stretched = top + (self.rows - top) * scale
        slid = self.rows - shift
        map_y = np.where(
            self.rows < top,
            self.rows,
            np.where(self.rows < band_end, stretched, np.where(self.rows <= edge, slid, self.rows)),
        )
        map_y = map_y.astype(np.float32)
        # Sample from the whole portrait so lid skin above the box edge is still reachable.
        map_y += np.float32(y0)
        map_x = self.map_x
        patch = cv2.remap(portrait, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        frame[y0:y1, x0:x1] = patch


def build_eye(
    lm: np.ndarray,
    upper: tuple[int, ...],
    lower: tuple[int, ...],
    brow: tuple[int, ...],
    width: int,
    height: int,
) -> EyeRig | None:
    """Blink rig of one eye from landmarks ``lm (478, 2)`` in output pixels; None if off-frame."""
    up, lo = lm[list(upper)], lm[list(lower)]
    eye_w = float(up[:, 0].max() - up[:, 0].min())
    if eye_w < 4.0:
        return None
    brow_y = L.chain_at(lm, brow, np.array([up[:, 0].mean()]))[0]
    x0 = int(np.floor(up[:, 0].min() - 0.1 * eye_w))
    x1 = int(np.ceil(up[:, 0].max() + 0.1 * eye_w)) + 1
    y0 = int(np.floor(min(brow_y, up[:, 1].min() - 0.3 * eye_w)))
    y1 = int(np.ceil(lo[:, 1].max() + 2.0)) + 1
    x0, x1, y0, y1 = max(0, x0), min(width, x1), max(0, y0), min(height, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    xs = np.arange(x0, x1, dtype=np.float64)
    y_up = L.chain_at(lm, upper, xs)
    y_lo = np.maximum(L.chain_at(lm, lower, xs), y_up)
    # Columns past the eye corners have no lid: upper and lower margins coincide there.
    outside = (xs < up[:, 0].min()) | (xs > up[:, 0].max())
    y_lo = np.where(outside, y_up, y_lo)
    y_brow = L.chain_at(lm, brow, xs)
    # The skin that stretches starts a little under the brow, and never lower than 0.6 lid
    # heights above the margin (a tight crease would stretch the lashes into a smear).
    top = np.minimum(y_brow + 0.25 * (y_up - y_brow), y_up - 0.6 * (y_lo - y_up) - 1.0)
    top = np.maximum(top, y0)
    bh, bw = y1 - y0, x1 - x0
    map_x = np.broadcast_to(np.arange(x0, x1, dtype=np.float32), (bh, bw)).copy()
    return EyeRig(
        box=(y0, y1, x0, x1),
        lid_top=(top - y0).astype(np.float32),
        lid_upper=(y_up - y0).astype(np.float32),
        lid_lower=(y_lo - y0).astype(np.float32),
        lash=np.clip(0.3 * (y_lo - y_up), 0.0, 0.5 * (y_up - top)).astype(np.float32),
        map_x=map_x,
        rows=np.arange(bh, dtype=np.float32)[:, None],
    )


def build_eyes(lm: np.ndarray, width: int, height: int) -> list[EyeRig]:
    """Blink rigs of both eyes (those inside the frame)."""
    rigs = [
        build_eye(lm, L.EYE_L_UPPER, L.EYE_L_LOWER, L.BROW_L_LOWER, width, height),
        build_eye(lm, L.EYE_R_UPPER, L.EYE_R_LOWER, L.BROW_R_LOWER, width, height),
    ]
    return [r for r in rigs if r is not None]
