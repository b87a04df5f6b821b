"""Lower-face mesh: landmark motions of the mouth shapes and their dense displacement fields.

Three mouth shapes drive the lower face: jaw opening, lip spread and lip rounding. For each, every
landmark gets a displacement (pixels at full amplitude) from a small geometric model of the jaw and
lips. A Delaunay mesh of the landmarks inside a lower-face region of interest (ROI), closed by a
ring of fixed points on the ROI border, turns these into dense *forward* fields by piecewise-affine
(barycentric) interpolation. Forward fields are exactly linear in the shape amplitudes, so a frame
only mixes them; ``inverse`` turns the mix into the backward map a remap needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from liveface.engines.warp import landmarks as L

#: Lower-lip travel at full jaw opening, as a fraction of the forehead-to-chin height.
JAW_TRAVEL = 0.09
#: Share of the jaw's travel that the mouth corners follow.
CORNER_JAW = 0.3
#: Mouth-corner travel at full spread / rounding, as a fraction of the mouth half-width.
SPREAD_TRAVEL = 0.16
ROUND_TRAVEL = 0.3
#: How far each lip closes towards the other at the sides of a fully rounded mouth, and opens in
#: the middle, as fractions of the mouth half-width.
ROUND_SIDES = 0.07
ROUND_MIDDLE = 0.04
#: Number of mouth shapes (jaw, spread, round) and their order in every array below.
SHAPES = ("jaw", "spread", "round")


@dataclass(frozen=True)
class MouthGeometry:
    """The rest mouth in output pixels: centre column, half-width, lip-contact line."""

    xc: float
    half_width: float
    inner_half_width: float
    face_height: float
    line_x: np.ndarray  # (k,) sorted columns of the lip-contact line
    line_y: np.ndarray  # (k,) its rows

    def line(self, x: np.ndarray) -> np.ndarray:
        """Row of the lip-contact line at columns ``x``, extended flat past the corners."""
        return np.interp(x, self.line_x, self.line_y)


def mouth_geometry(lm: np.ndarray, face_height: float) -> MouthGeometry:
    """Measure the rest mouth from ``lm (478, 2)``."""
    left, right = lm[L.LIPS_OUTER_UPPER[0]], lm[L.LIPS_OUTER_UPPER[-1]]
    il, ir = lm[L.LIPS_INNER_UPPER[0]], lm[L.LIPS_INNER_UPPER[-1]]
    contact = (lm[list(L.LIPS_INNER_UPPER)] + lm[list(L.LIPS_INNER_LOWER)]) / 2
    order = np.argsort(contact[:, 0])
    return MouthGeometry(
        xc=float((left[0] + right[0]) / 2),
        half_width=float(max(4.0, (right[0] - left[0]) / 2)),
        inner_half_width=float(max(3.0, (ir[0] - il[0]) / 2)),
        face_height=face_height,
        line_x=contact[order, 0].astype(np.float64),
        line_y=contact[order, 1].astype(np.float64),
    )


def _lip_sets(lm: np.ndarray) -> tuple[set[int], set[int]]:
    """Mesh points on or inside the upper lip and the lower lip."""
    upper_poly = lm[list(L.LIPS_OUTER_UPPER + L.LIPS_INNER_UPPER[::-1])].astype(np.float32)
    lower_poly = lm[list(L.LIPS_OUTER_LOWER + L.LIPS_INNER_LOWER[::-1])].astype(np.float32)
    upper = set(L.LIPS_OUTER_UPPER + L.LIPS_INNER_UPPER)
    lower = set(L.LIPS_OUTER_LOWER + L.LIPS_INNER_LOWER)
    corners = {
        L.LIPS_OUTER_UPPER[0],
        L.LIPS_OUTER_UPPER[-1],
        L.LIPS_INNER_UPPER[0],
        L.LIPS_INNER_UPPER[-1],
    }
    for i in range(L.MESH_POINTS):
        if i in upper or i in lower:
            continue
        p = (float(lm[i, 0]), float(lm[i, 1]))
        if cv2.pointPolygonTest(upper_poly, p, False) > 0:
            upper.add(i)
        elif cv2.pointPolygonTest(lower_poly, p, False) > 0:
            lower.add(i)
    return upper - corners, lower - corners


def shape_displacements(lm: np.ndarray, geo: MouthGeometry) -> np.ndarray:
    """Landmark motion of each mouth shape at full amplitude, float32 ``(3, 478, 2)`` pixels."""
    n = lm.shape[0]
    x, y = lm[:, 0].astype(np.float64), lm[:, 1].astype(np.float64)
    r, face = geo.half_width, geo.face_height
    u = (x - geo.xc) / r
    au = np.minimum(np.abs(u), 1.0)
    below = (y - geo.line(x)) / face  # >0 under the lip-contact line
    upper, lower = _lip_sets(lm)
    is_up = np.zeros(n, bool)
    is_up[list(upper)] = True
    is_lo = np.zeros(n, bool)
    is_lo[list(lower)] = True
    inner = np.zeros(n, bool)
    inner[list(L.LIPS_INNER_UPPER[1:-1] + L.LIPS_INNER_LOWER[1:-1])] = True
    t_inner = np.minimum(np.abs(x - geo.xc) / geo.inner_half_width, 1.0)
    t = np.where(inner, t_inner, au)

    # Jaw: the lower jaw moves down almost rigidly; the lower lip opens in a lens shape (corners
    # at 0.3), tissue beside the mouth follows less and less towards the ears.
    lip_w = CORNER_JAW + (1.0 - CORNER_JAW) * (1.0 - t**2)
    lip_out = CORNER_JAW + (1.0 - CORNER_JAW) * (1.0 - au**2)
    w_in = 1.0 - (1.0 - lip_out) * np.exp(-np.maximum(below, 0.0) / 0.07)
    w_side = np.exp(-(((np.maximum(np.abs(u), 1.0) - 1.0) / 0.9) ** 2))
    w_jaw = np.where(below > 0.0, w_in * w_side, 0.0)
    # Skin around each corner follows it, so the corner does not tear away from the cheek.
    corners = lm[[L.LIPS_OUTER_UPPER[0], L.LIPS_OUTER_UPPER[-1]]].astype(np.float64)
    d_corner = np.min(np.linalg.norm(lm[:, None, :] - corners[None], axis=2), axis=1)
    w_jaw = np.maximum(w_jaw, CORNER_JAW * np.exp(-((d_corner / (0.4 * r)) ** 2)))
    w_jaw = np.where(is_lo, lip_w, w_jaw)
    # The upper lip lifts a little in the middle and follows the corners near them.
    w_jaw = np.where(is_up, CORNER_JAW * t**4 - 0.05 * (1.0 - t**2), w_jaw)
    for c in (
        L.LIPS_OUTER_UPPER[0],
        L.LIPS_OUTER_UPPER[-1],
        L.LIPS_INNER_UPPER[0],
        L.LIPS_INNER_UPPER[-1],
    ):
        w_jaw[c] = CORNER_JAW
    jaw = np.zeros((n, 2))
    jaw[:, 1] = JAW_TRAVEL * face * w_jaw
    # The corners draw in slightly as the jaw drops.
    jaw[:, 0] = -0.06 * JAW_TRAVEL * face * np.clip(u, -1, 1) * (is_lo | is_up)

    # Spread and round move the corners sideways: the lips stretch linearly between the corners,
    # the cheeks follow with a falloff; everything fades with vertical distance from the mouth.
    g = np.where(np.abs(u) <= 1.0, u, np.sign(u) * np.exp(-(((np.abs(u) - 1.0) / 0.55) ** 2)))
    dv = (y - geo.line(x)) / r
    vert = np.where(dv < 0, np.exp(-((dv / 0.7) ** 2)), np.exp(-((dv / 1.2) ** 2)))
    spread = np.zeros((n, 2))
    spread[:, 0] = SPREAD_TRAVEL * r * g * vert
    spread[:, 1] = -0.3 * SPREAD_TRAVEL * r * g**2 * vert  # corners lift in a spread (smile)
    rnd = np.zeros((n, 2))
    rnd[:, 0] = -ROUND_TRAVEL * r * g * vert
    # Rounded lips push forward and look fuller: outer contours move away from the contact line.
    pout = 0.15 * ROUND_TRAVEL * r * (1.0 - au**2)
    rnd[list(L.LIPS_OUTER_UPPER[1:-1]), 1] = -pout[list(L.LIPS_OUTER_UPPER[1:-1])]
    rnd[list(L.LIPS_OUTER_LOWER[1:-1]), 1] = pout[list(L.LIPS_OUTER_LOWER[1:-1])]
    # Pursed lips meet at the sides and part in the middle: the opening turns from a wide lens
    # into a rounder hole.
    side = np.clip((t - 0.3) / 0.5, 0.0, 1.0)
    side = side * side * (3.0 - 2.0 * side)
    purse = ROUND_SIDES * r * side - ROUND_MIDDLE * r * (1.0 - t**2) * inner
    rnd[:, 1] += np.where(is_up, purse, 0.0) - np.where(is_lo, purse, 0.0)
    out = np.stack([jaw, spread, rnd]).astype(np.float32)
    out[:, L.MESH_POINTS :] = 0.0  # iris points are not part of the mouth mesh
    return out


@dataclass(frozen=True)
class MouthMesh:
    """Dense forward fields of the mouth shapes over the lower-face ROI.

    Attributes:
        roi: ``(y0, y1, x0, x1)`` of the region in output pixels.
        fields: float32 ``(3, h, w, 2)`` forward displacement (dx, dy) of each shape at full
            amplitude, ``h = y1 - y0``, ``w = x1 - x0``; zero on the ROI border.
        grid: float32 ``(h, w, 2)`` pixel coordinates (x, y) of the ROI, ROI-local.
        displacements: float32 ``(3, 478, 2)`` landmark motions (see :func:`shape_displacements`).
    """

    roi: tuple[int, int, int, int]
    fields: np.ndarray
    grid: np.ndarray
    displacements: np.ndarray


def lower_face_roi(lm: np.ndarray, face: float, width: int, height: int) -> tuple[int, ...]:
    """``(y0, y1, x0, x1)``: from above the nose tip to under the chin, oval plus margin.

    Both sides are even, so the half-resolution solve in ``inverse`` lines up exactly.
    """
    oval = lm[list(L.FACE_OVAL)]
    x0 = max(0, int(np.floor(oval[:, 0].min() - 0.08 * face)))
    x1 = min(width, int(np.ceil(oval[:, 0].max() + 0.08 * face)))
    y0 = max(0, int(np.floor(lm[L.NOSE_TIP, 1] - 0.1 * face)))
    y1 = min(height, int(np.ceil(lm[L.CHIN, 1] + 0.32 * face)))
    return y0, y1 - (y1 - y0) % 2, x0, x1 - (x1 - x0) % 2


def build_mouth_mesh(lm: np.ndarray, geo: MouthGeometry, width: int, height: int) -> MouthMesh:
    """Triangulate the lower face and rasterise the shape fields (done once per session)."""
    face = geo.face_height
    y0, y1, x0, x1 = lower_face_roi(lm, face, width, height)
    h, w = y1 - y0, x1 - x0
    disp = shape_displacements(lm, geo)
    local = lm[: L.MESH_POINTS].astype(np.float64) - (x0, y0)
    margin = 2.0
    keep = (
        (local[:, 0] > margin)
        & (local[:, 0] < w - 1 - margin)
        & (local[:, 1] > margin)
        & (local[:, 1] < h - 1 - margin)
    )
    ring = _border_ring(h, w, step=max(8.0, 0.06 * face))
    pts = np.concatenate([local[keep], ring])
    vals = np.concatenate([disp[:, : L.MESH_POINTS][:, keep], np.zeros((3, len(ring), 2))], axis=1)
    tri = Delaunay(pts)
    gy, gx = np.mgrid[0:h, 0:w]
    grid = np.stack([gx, gy], axis=-1).astype(np.float32)
    flat = grid.reshape(-1, 2).astype(np.float64)
    simplex = tri.find_simplex(flat)
    inside = simplex >= 0
    s = np.where(inside, simplex, 0)
    trans = tri.transform[s]  # (p, 3, 2): barycentric transform of each pixel's triangle
    b = np.einsum("pij,pj->pi", trans[:, :2], flat - trans[:, 2])
    bary = np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)  # (p, 3)
    verts = tri.simplices[s]  # (p, 3)
    fields = np.einsum("pk,spkc->spc", bary, vals[:, verts])
    fields[:, ~inside] = 0.0
    fields = np.ascontiguousarray(fields.reshape(3, h, w, 2), dtype=np.float32)
    _anchor_rest_opening(fields, lm - np.array([x0, y0], dtype=np.float32))
    return MouthMesh(roi=(y0, y1, x0, x1), fields=fields, grid=grid, displacements=disp)


def _border_ring(h: int, w: int, step: float) -> np.ndarray:
    """Fixed points along the ROI border (corners included), ``(k, 2)`` ROI-local (x, y)."""
    nx, ny = max(2, round((w - 1) / step) + 1), max(2, round((h - 1) / step) + 1)
    xs, ys = np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)
    top = np.stack([xs, np.zeros(nx)], 1)
    bottom = np.stack([xs, np.full(nx, h - 1.0)], 1)
    left = np.stack([np.zeros(ny - 2), ys[1:-1]], 1)
    right = np.stack([np.full(ny - 2, w - 1.0), ys[1:-1]], 1)
    return np.concatenate([top, bottom, left, right])


def _anchor_rest_opening(fields: np.ndarray, lm_local: np.ndarray) -> None:
    """Make what shows between the lips at rest (teeth, dark gap) move with the upper lip.

    Teeth sit on the upper jaw: pixels inside the rest inner-lip polygon (grown by a pixel, which
    also covers the hairline gap of a closed mouth) take the field of the upper lip's inner edge in
    their column, so the lips part at the lower inner contour and nothing in between is stretched.
    """
    _, h, w, _ = fields.shape
    poly = lm_local[list(L.LIPS_INNER_UPPER + L.LIPS_INNER_LOWER[::-1])]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 8).astype(np.int32)], (1,), cv2.LINE_8, shift=3)
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero(grown)
    if rows.size == 0:
        return
    top = L.chain_at(lm_local, L.LIPS_INNER_UPPER, cols.astype(np.float64))
    src_rows = np.clip(np.floor(top).astype(np.int64) - 1, 0, h - 1)
    fields[:, rows, cols] = fields[:, src_rows, cols]
