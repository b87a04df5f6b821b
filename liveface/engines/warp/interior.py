"""The inside of the mouth: a painted cavity with teeth, composited where the lips part.

Where the jaw has opened the lips, the warped portrait has no real pixels (see ``mesh``), so this
layer is drawn inside the deformed inner-lip polygon: a dark cavity, the upper teeth hanging from
the upper lip, a hint of the lower teeth and the tongue when the mouth is wide open. Whatever the
portrait showed between its lips as photographed (a smile's teeth, which ``closure`` covered for
the rest frame) is shown again where it was, on top of the painting: teeth sit on the skull and do
not move with the lips, so a smiling photo keeps its own teeth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp import landmarks as L

# Reference colours (RGB, for skin like SKIN_REFERENCE), matched to the portrait's skin at open.
CAVITY = np.array([58.0, 20.0, 24.0], np.float32)
TONGUE = np.array([150.0, 68.0, 74.0], np.float32)
TEETH = np.array([216.0, 202.0, 184.0], np.float32)
#: The lower teeth sit in the mouth's shadow.
LOWER_SHADE = 0.68
#: The skin the reference colours were chosen for, its colourfulness, and the luma weights.
SKIN_REFERENCE = np.array([196.0, 152.0, 124.0], np.float32)
SKIN_CHROMA = 0.3
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: Visible height of the upper incisors and lower teeth, in mouth half-widths.
UPPER_TEETH = 0.17
LOWER_TEETH = 0.1
#: Tooth edges across the mouth, in units of the inner half-width (perspective narrows the sides).
TOOTH_EDGES = np.array([-0.74, -0.55, -0.3, 0.0, 0.3, 0.55, 0.74], np.float32)
#: Lip parting (pixels, beyond the rest opening) over which the painted interior fades in.
FADE_IN_PX = 3.0


@dataclass
class MouthInterior:
    """Precomputed parts of the interior layer over a box around the mouth.

    Attributes:
        box: ``(y0, y1, x0, x1)`` ROI-local, large enough for the widest-open mouth.
        keep: float32 ``(bh, bw)`` weight of the portrait's own opening (1 shows its pixels).
        own: float32 ``(bh, bw, 3)`` the photographed portrait's pixels in the box.
        rest_gap: float32 ``(11,)`` rest distance between paired inner-lip points.
        half_width: rest mouth half-width (outer corners), pixels.
        colors: float32 ``(3, 3)`` cavity, tongue and teeth colours for this portrait.
    """

    box: tuple[int, int, int, int]
    keep: np.ndarray
    own: np.ndarray
    rest_gap: np.ndarray
    half_width: float
    colors: np.ndarray

    def composite(self, roi: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:
        """Paint the interior into ``roi (h, w, 3) uint8`` in place; returns the parting in px.

        Args:
            roi: the warped lower-face region.
            upper, lower: deformed inner-lip chains ``(11, 2)`` (x, y), ROI-local, corner to corner.
        """
        parting = float(np.max(lower[:, 1] - upper[:, 1] - self.rest_gap))
        fade = min(1.0, parting / FADE_IN_PX)
        if fade <= 0.0:
            return parting
        # Work only on the part of the box the mouth covers now (a pixel of margin for the edges).
        by0, by1, bx0, bx1 = self.box
        poly = np.concatenate([upper, lower[::-1]])
        x0 = max(bx0, int(np.floor(poly[:, 0].min())) - 1)
        x1 = min(bx1, int(np.ceil(poly[:, 0].max())) + 2)
        y0 = max(by0, int(np.floor(poly[:, 1].min())) - 1)
        y1 = min(by1, int(np.ceil(poly[:, 1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            return parting
        h, w = y1 - y0, x1 - x0
        origin = np.array([x0, y0], np.float32)
        mask = np.zeros((h, w), np.uint8)
        pts = np.round((poly - origin) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], (255,), cv2.LINE_AA, shift=4)
        alpha = mask.astype(np.float32) * (fade / 255.0)
        paint = self._paint(upper - origin, lower - origin, h, w)
        sub = np.s_[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        paint += self.keep[sub][..., None] * (self.own[sub] - paint)
        patch = roi[y0:y1, x0:x1].astype(np.float32)
        patch += alpha[..., None] * (paint - patch)
        roi[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
        return parting

    def _paint(self, up: np.ndarray, lo: np.ndarray, bh: int, bw: int) -> np.ndarray:
        """The interior colours ``(bh, bw, 3)`` float32 for the given box-local lip chains."""
        xs = np.arange(bw, dtype=np.float32)
        ys = np.arange(bh, dtype=np.float32)[:, None]
        y_top = _chain_y(up, xs)[None, :]
        y_bot = _chain_y(lo, xs)[None, :]
        xl, xr = float(up[0, 0]), float(up[-1, 0])
        half = max(2.0, (xr - xl) / 2)
        s = ((xs - (xl + xr) / 2) / half)[None, :]
        gap = np.maximum(y_bot - y_top, 1.0)
        u = (ys - y_top) / gap
        cavity, tongue, teeth = self.colors
        r = self.half_width
        # Cavity: darkest in the middle of the opening, a little light from the lips' edges.
        depth = 0.55 + 0.45 * np.clip(np.abs(2.0 * u - 1.0), 0.0, 1.0) ** 2
        out = cavity * depth[..., None]
        # Tongue low in a wide-open mouth.
        wt = (
            np.clip((u - 0.55) / 0.35, 0, 1)
            * np.clip(1 - s**2, 0, 1)
            * np.clip(gap / (0.45 * r), 0, 1)
        )
        out += (tongue - out) * (0.8 * wt)[..., None]
        # Lower teeth, just above the lower lip, in the middle only.
        lt_h = LOWER_TEETH * r * np.clip((gap - 0.3 * r) / (0.3 * r), 0, 1)
        wl = np.clip((ys - (y_bot - lt_h)) / 1.5, 0, 1) * np.clip(1 - (s / 0.45) ** 2, 0, 1)
        out += (teeth * LOWER_SHADE - out) * (0.6 * wl)[..., None]
        # Upper teeth hang from the upper lip; edges between teeth, darker towards the corners.
        ut_h = UPPER_TEETH * r * np.sqrt(np.clip(1 - (s / 0.85) ** 2, 0, 1))
        wu = np.clip((y_top + ut_h - ys) / 1.2, 0, 1) * (ut_h > 1.0)
        dist = np.min(np.abs(s[..., None] - TOOTH_EDGES), axis=-1) * half
        seams = 1.0 - 0.1 * np.exp(-((dist / 0.7) ** 2))
        under_lip = 0.6 + 0.4 * np.clip((ys - y_top) / (0.5 * UPPER_TEETH * r), 0, 1)
        shade = (1.0 - 0.5 * s**2) * seams * under_lip
        out += (teeth * shade[..., None] - out) * wu[..., None]
        return out


def _chain_y(chain: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y of a lip chain ``(k, 2)`` at columns ``xs``, flat beyond its ends."""
    order = np.argsort(chain[:, 0], kind="stable")
    return np.interp(xs, chain[order, 0], chain[order, 1]).astype(np.float32)


def _match_skin(
    colors: np.ndarray, image: np.ndarray, lm_local: np.ndarray, half_width: float
) -> np.ndarray:
    """Scale reference ``colors (k, 3)`` to the brightness and colourfulness of the skin.

    The skin is sampled under the lower lip of ``image (h, w, 3)``; a dark photo gets a darker
    mouth, a black-and-white photo a grey one.
    """
    h, w = image.shape[:2]
    chin = lm_local[[L.LIPS_OUTER_LOWER[5], L.CHIN]].mean(axis=0)
    cx, cy = int(np.clip(chin[0], 0, w - 1)), int(np.clip(chin[1], 0, h - 1))
    k = max(2, int(0.15 * half_width))
    patch = image[max(0, cy - k) : cy + k + 1, max(0, cx - k) : cx + k + 1].reshape(-1, 3)
    skin = np.median(patch, axis=0).astype(np.float32) if patch.size else SKIN_REFERENCE
    luma = float(skin @ LUMA)
    chroma = float(skin.max() - skin.min()) / max(luma, 1.0)
    gain = float(np.clip(luma / float(SKIN_REFERENCE @ LUMA), 0.55, 1.25))
    saturation = float(np.clip(chroma / SKIN_CHROMA, 0.0, 1.0))
    grey = (colors @ LUMA)[:, None]
    out = (grey + saturation * (colors - grey)) * gain
    return np.minimum(out, 245.0).astype(np.float32)


def build_interior(
    image: np.ndarray,
    lm_local: np.ndarray,
    extremes: list[np.ndarray],
    roi_shape: tuple[int, int],
    half_width: float,
    original: np.ndarray,
    opening: np.ndarray | None,
) -> MouthInterior:
    """Precompute the interior layer for one portrait.

    Args:
        image: the rest frame's ROI, uint8 ``(h, w, 3)``.
        lm_local: rest landmarks ``(478, 2)``, ROI-local.
        extremes: landmark sets ``(478, 2)`` at the widest mouth shapes, to size the box.
        roi_shape: ``(h, w)`` of the ROI.
        half_width: rest mouth half-width in pixels.
        original: the portrait's ROI as photographed, uint8 ``(h, w, 3)``.
        opening: float32 ``(h, w)``, where ``original`` showed its opening; None to take the
            rest inner-lip polygon (a portrait whose lips were not closed).
    """
    h, w = roi_shape
    chains = list(L.LIPS_INNER_UPPER + L.LIPS_INNER_LOWER)
    pts = np.concatenate([lm_local[chains]] + [e[chains] for e in extremes])
    pad = 3
    x0 = max(0, int(np.floor(pts[:, 0].min())) - pad)
    x1 = min(w, int(np.ceil(pts[:, 0].max())) + pad + 1)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - pad)
    y1 = min(h, int(np.ceil(pts[:, 1].max())) + pad + 1)
    if opening is not None:  # the photographed opening may reach past the rest frame's lips
        rows, cols = np.nonzero(opening > 0.0)
        if rows.size:
            y0, y1 = min(y0, int(rows.min())), max(y1, int(rows.max()) + 1)
            x0, x1 = min(x0, int(cols.min())), max(x1, int(cols.max()) + 1)
    up = lm_local[list(L.LIPS_INNER_UPPER)] - (x0, y0)
    lo = lm_local[list(L.LIPS_INNER_LOWER)] - (x0, y0)
    bh, bw = y1 - y0, x1 - x0
    ys = np.arange(bh, dtype=np.float32)[:, None]
    if opening is None:
        mask = np.zeros((bh, bw), np.uint8)
        poly = np.concatenate([up, lo[::-1]])
        cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], (255,), cv2.LINE_AA, shift=4)
        own = mask.astype(np.float32) / 255.0
    else:
        own = opening[y0:y1, x0:x1].astype(np.float32)
    # Fade the photographed opening out towards its bottom: the lower teeth and the lower lip's
    # inner edge there belong to the jaw, which moves away from them.
    inside = own > 0.5
    any_col = inside.any(axis=0)
    y_top = np.where(any_col, np.argmax(inside, axis=0), 0).astype(np.float32)[None, :]
    y_bot = np.where(any_col, bh - 1 - np.argmax(inside[::-1], axis=0), 0).astype(np.float32)
    u = (ys - y_top) / np.maximum(y_bot[None, :] - y_top, 1.0)
    keep = own * np.clip((0.8 - u) / 0.3, 0, 1)
    colors = _match_skin(np.stack([CAVITY, TONGUE, TEETH]), image, lm_local, half_width)
    rest_gap = lm_local[list(L.LIPS_INNER_LOWER), 1] - lm_local[list(L.LIPS_INNER_UPPER), 1]
    return MouthInterior(
        box=(y0, y1, x0, x1),
        keep=keep.astype(np.float32),
        own=original[y0:y1, x0:x1].astype(np.float32),
        rest_gap=rest_gap.astype(np.float32),
        half_width=float(half_width),
        colors=colors.astype(np.float32),
    )
