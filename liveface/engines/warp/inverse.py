"""From mixed forward fields to the backward map that a remap needs, fast and exact at the lips.

A remap needs, for every output pixel ``p``, the source pixel ``s`` with ``s + F(s) = p``. The
fixed-point iteration ``s <- p - F(s)`` solves it in a few steps wherever ``F`` is smooth (its
slope stays well under 1 away from the lips). Two things make a frame cheap and still exact:

* ``F`` is smooth over most of the lower face, so it is solved at half resolution and the
  (smooth) displacement is upsampled;
* where the lips part, ``F`` jumps. Pixels around the parting line are solved at full resolution,
  twice, with the field continued smoothly from above and from below the line, and each pixel takes
  the solution of its own side (above or below the deformed lower inner lip).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L
from liveface.engines.warp.mesh import JAW_TRAVEL, MouthMesh

#: Fixed-point steps after the first estimate. The jaw field's steepest slope off the parting line
#: is ~0.3, so three steps leave a small fraction of a pixel.
INVERT_STEPS = 3


def mix_fields(fields: np.ndarray, amounts: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Mix the shape fields: ``out (h, w, c) = sum_k amounts[k] * fields[k]``; returns ``out``.

    ``fields`` is ``(3, h, w, c)``, ``amounts`` ``(3,)``.
    """
    np.multiply(fields[0], np.float32(amounts[0]), out=out)
    for k in range(1, fields.shape[0]):
        if amounts[k] != 0.0:
            cv2.scaleAdd(fields[k], float(amounts[k]), out, dst=out)
    return out


def remap_xy(image: np.ndarray, xy: np.ndarray, border: int) -> np.ndarray:
    """Bilinear ``cv2.remap`` of ``image (h', w', c)`` at points ``xy (h, w, 2)``; ``(h, w, c)``.

    One interleaved float map is faster than two planes; the empty second map says so to OpenCV.
    """
    return cv2.remap(image, xy, np.empty(0, np.float32), cv2.INTER_LINEAR, borderMode=border)


def invert_field(field: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Solve ``s + F(s) = p`` at every pixel ``p`` of ``field (h, w, 2)``; returns ``s (h, w, 2)``.

    Everything is in the field's own pixel units: ``grid (h, w, 2)`` holds each pixel's (x, y).
    Starts from ``p - F(p)``.
    """
    src = grid - field
    for _ in range(INVERT_STEPS):
        np.subtract(grid, remap_xy(field, src, cv2.BORDER_REPLICATE), out=src)
    return src


def _pixel_grid(h: int, w: int) -> np.ndarray:
    """float32 ``(h, w, 2)`` of each pixel's (x, y)."""
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.ascontiguousarray(np.stack([gx, gy], axis=-1))


@dataclass
class WarpScratch:
    """Per-session work buffers of :meth:`MouthWarp.backward_map` (float32)."""

    half: np.ndarray  # (h / 2, w / 2, 2)
    up: np.ndarray  # (bh, bw, 2)
    low: np.ndarray  # (bh, bw, 2)


@dataclass(frozen=True)
class MouthWarp:
    """Everything a frame needs to turn mouth-shape amounts into a backward map of the ROI.

    Attributes:
        grid: float32 ``(h, w, 2)`` ROI pixel coordinates (x, y).
        half_fields: float32 ``(3, h / 2, w / 2, 2)`` the shape fields at the centres of 2x2
            pixel blocks, in half-resolution pixels.
        half_grid: float32 ``(h / 2, w / 2, 2)`` half-resolution pixel coordinates.
        tear_box: ``(y0, y1, x0, x1)`` ROI-local box around the lips' parting line.
        tear_up, tear_low: float32 ``(3, bh, bw, 2)`` the fields in the box continued smoothly
            across the parting line from above and from below.
        tear_grid: float32 ``(bh, bw, 2)`` box-local pixel coordinates.
    """

    grid: np.ndarray
    half_fields: np.ndarray
    half_grid: np.ndarray
    tear_box: tuple[int, int, int, int]
    tear_up: np.ndarray
    tear_low: np.ndarray
    tear_grid: np.ndarray

    def new_scratch(self) -> WarpScratch:
        """Work buffers for one session."""
        return WarpScratch(
            half=np.empty(self.half_grid.shape, np.float32),
            up=np.empty(self.tear_up.shape[1:], np.float32),
            low=np.empty(self.tear_low.shape[1:], np.float32),
        )

    def backward_map(
        self, amounts: np.ndarray, lower_lip: np.ndarray, scratch: WarpScratch
    ) -> np.ndarray:
        """Where each ROI pixel samples the rest ROI for shape ``amounts (3,)``; ``(h, w, 2)``.

        Args:
            amounts: jaw, spread and round amplitudes.
            lower_lip: the deformed lower inner lip ``(11, 2)``, ROI-local: the parting line.
            scratch: this session's buffers.
        """
        h, w = self.grid.shape[:2]
        src = invert_field(mix_fields(self.half_fields, amounts, scratch.half), self.half_grid)
        src -= self.half_grid
        src *= 2.0  # half-resolution pixels to ROI pixels
        # Block centres line up with cv2.resize's sampling, so the upsampling is unbiased.
        back = np.asarray(cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
        back += self.grid
        y0, y1, x0, x1 = self.tear_box
        grid = self.tear_grid
        up = invert_field(mix_fields(self.tear_up, amounts, scratch.up), grid)
        low = invert_field(mix_fields(self.tear_low, amounts, scratch.low), grid)
        order = np.argsort(lower_lip[:, 0], kind="stable")
        cut = np.interp(grid[0, :, 0] + x0, lower_lip[order, 0], lower_lip[order, 1]) - y0
        below = grid[:, :, 1:] > cut[None, :, None].astype(np.float32)
        np.copyto(up, low, where=below)
        up += np.array([x0, y0], np.float32)
        back[y0:y1, x0:x1] = up
        return back


def build_mouth_warp(mesh: MouthMesh, lm_local: np.ndarray, face: float) -> MouthWarp:
    """Precompute the half-resolution fields and the parting-line fields of a mouth mesh.

    Args:
        mesh: the full-resolution fields (ROI sides must be even).
        lm_local: rest landmarks ``(478, 2)``, ROI-local.
        face: forehead-to-chin height in pixels.
    """
    fields = mesh.fields
    _, h, w, _ = fields.shape
    # A 2x2 block average of a piecewise-linear field is its value at the block centre.
    half = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for f in fields]
    box, tear_up, tear_low = _tear_fields(fields, lm_local, face)
    y0, y1, x0, x1 = box
    return MouthWarp(
        grid=mesh.grid,
        half_fields=np.ascontiguousarray(np.stack(half) * 0.5, dtype=np.float32),
        half_grid=_pixel_grid(h // 2, w // 2),
        tear_box=box,
        tear_up=tear_up,
        tear_low=tear_low,
        tear_grid=_pixel_grid(y1 - y0, x1 - x0),
    )


def _tear_fields(
    fields: np.ndarray, lm_local: np.ndarray, face: float
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """The box around the lips' parting line and the two one-sided fields in it.

    Between the inner corners, the field from above takes the value of the upper lip's inner edge
    (which the rest opening already follows) all the way down; the field from below takes the value
    just under the lower lip's inner edge all the way up. Elsewhere both equal ``fields``.
    Returns ``((y0, y1, x0, x1), up (3, bh, bw, 2), low (3, bh, bw, 2))``.
    """
    _, h, w, _ = fields.shape
    up = lm_local[list(L.LIPS_INNER_UPPER)]
    lo = lm_local[list(L.LIPS_INNER_LOWER)]
    pad = 0.06 * face + 3.0
    x0 = max(0, int(np.floor(min(up[:, 0].min(), lo[:, 0].min()) - pad)))
    x1 = min(w, int(np.ceil(max(up[:, 0].max(), lo[:, 0].max()) + pad)) + 1)
    y0 = max(0, int(np.floor(up[:, 1].min() - 0.03 * face - 3.0)))
    # Pixels well under the lowest lower lip can still land on the parting line while solving.
    y1 = min(h, int(np.ceil(lo[:, 1].max() + 1.4 * JAW_TRAVEL * face + 4.0)) + 1)
    xs = np.arange(x0, x1)
    inside = (xs > min(up[0, 0], up[-1, 0])) & (xs < max(up[0, 0], up[-1, 0]))
    rows = np.arange(y0, y1)[:, None]
    from_up = np.clip(np.floor(L.chain_at(lm_local, L.LIPS_INNER_UPPER, xs)) - 1, 0, h - 1)
    from_lo = np.clip(np.ceil(L.chain_at(lm_local, L.LIPS_INNER_LOWER, xs)) + 2, 0, h - 1)
    halves = []
    for src_row, region in (
        (from_up, (rows >= from_up[None, :]) & inside[None, :]),
        (from_lo, (rows <= from_lo[None, :]) & inside[None, :]),
    ):
        part = fields[:, y0:y1, x0:x1].copy()
        r, c = np.nonzero(region)
        part[:, r, c] = fields[:, src_row[c].astype(np.int64), xs[c]]
        halves.append(np.ascontiguousarray(part, dtype=np.float32))
    return (y0, y1, x0, x1), halves[0], halves[1]
