"""The closed rest mouth: a portrait that shows teeth or parted lips gets closed lips in silence.

Talking only ever opens the mouth from its rest pose, so the rest pose has to be closed. When the
portrait's lips are apart, this module rewrites the lower face once per session:

* the opening is measured from the pixels, not only from the landmarks (the face mesh often puts a
  smile's inner lip contour a pixel or two inside the teeth, and reports a small gap for closed
  lips): per column, the run of pixels between the lips that are not lip-coloured (teeth are
  brighter and less red, the cavity darker);
* the jaw rises by a share of the opening (the lower lip, chin and the skin under them move up, the
  neck stretches a little), and both lips stretch over the rest of it to meet on a contact line,
  which gets the faint shadow real closed lips have. Nothing between the lips is sampled, so no
  tooth is smeared into the lips.

Every motion is vertical, so each column is a monotone 1D map: the backward map of the remap and
the forward map of the landmarks are exact inverses of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from liveface.engines.warp import landmarks as L
from liveface.engines.warp.mesh import lower_face_roi, mouth_geometry

#: Openings under this (fraction of the forehead-to-chin height) are a closed mouth's contact line.
MIN_OPENING = 0.012
#: Share of the opening the jaw closes; the lips stretch over the rest.
JAW_SHARE = 0.6
#: How far past the landmark contour (share of each lip's thickness) a colour cue may take the
#: opening (a dark one takes it up to the outer contour).
SCAN_INTO_LIP = 0.35
#: A column is open when at least this share of the rows between the landmark contours is foreign.
OPEN_SHARE = 0.5
#: Share of the mouth's half-width, at each inner corner, over which the opening fades to nothing.
CORNER_TAPER = 0.06
#: Lip colour tolerances (OpenCV 8-bit Lab units, see :func:`measure_opening`).
BRIGHTER = 25.0
DARKER = 35.0
MIN_REDNESS_STEP = 6.0
#: Darkening at the middle of the lips' contact line, and its half-width in face heights.
CONTACT_SHADE = 0.22
CONTACT_WIDTH = 0.012


@dataclass(frozen=True)
class ClosedMouth:
    """The portrait with its mouth closed.

    Attributes:
        image: uint8 RGB ``(H, W, 3)``, equal to the input outside ``box``.
        landmarks: float32 ``(478, 2)``; both inner lip contours lie on the contact line.
        rest_gap: the opening found between the lips in the middle of the mouth, pixels (0 for
            a closed mouth).
        box: ``(y0, y1, x0, x1)`` the region that was rewritten (empty when nothing was).
        opening: float32 ``(H, W)``, 1 where the input showed its opening (teeth, cavity), soft
            at the edges; None when nothing was closed.
    """

    image: np.ndarray
    landmarks: np.ndarray
    rest_gap: float
    box: tuple[int, int, int, int]
    opening: np.ndarray | None = None


def close_mouth(image: np.ndarray, lm: np.ndarray, face_height: float) -> ClosedMouth:
    """Close the lips of ``image (H, W, 3) uint8`` with landmarks ``lm (478, 2)`` (see module)."""
    h, w = image.shape[:2]
    unchanged = ClosedMouth(image, lm, 0.0, (0, 0, 0, 0))
    if not _frontal_enough(lm):
        return unchanged
    y0, y1, x0, x1 = lower_face_roi(lm, face_height, w, h)
    xs = np.arange(x0, x1, dtype=np.float64)
    lips = measure_opening(image, lm, xs, face_height)
    gap = lips.gap
    if gap.max(initial=0.0) < MIN_OPENING * face_height:
        return unchanged
    geo = mouth_geometry(lm, face_height)
    rows = np.arange(y0, y1, dtype=np.float64)[:, None]
    # The jaw's rise: lens-shaped like the opening at the lower lip, the width of the chin lower
    # down, nothing above the lips' contact line; it fades out towards the ROI's bottom edge.
    r = geo.half_width
    middle = np.abs(xs - geo.xc) <= 0.35 * r
    central = float(np.median(gap[middle])) if middle.any() else 0.0
    # The jaw rises by a share of the opening in the middle of the mouth; at the sides the lower
    # lip rises as far as the (smaller) opening there allows. Dark corners of a closed smile
    # must not lift the chin.
    lift_lip = JAW_SHARE * np.minimum(gap, central)
    peak = JAW_SHARE * central
    broad = np.exp(-((np.maximum(np.abs(xs - geo.xc) - r, 0.0) / (0.9 * r)) ** 2))
    broad *= _smoothstep(np.minimum(xs - x0, x1 - 1 - xs) / (0.1 * face_height))  # ROI sides stay
    line = geo.line(xs)
    chin = float(lm[L.CHIN, 1])
    depth = max(chin - float(line.max()), 1.0)
    bottom = float(y1 - 1)

    def lift(s: np.ndarray) -> np.ndarray:
        beta = _smoothstep((s - line) / depth)
        fade = _smoothstep((bottom - s) / max(bottom - chin, 1.0))
        return np.where(s >= line, (lift_lip * (1.0 - beta) + peak * broad * beta) * fade, 0.0)

    src = rows + lift(rows)
    for _ in range(6):  # s - lift(s) = y; the lift's slope is far under 1, so this converges
        src = rows + lift(src)
    # Lips: the upper lip's band [ou, top] stretches down to the contact line c, the lower lip's
    # band [bottom, od] (risen by the jaw) up to it.
    ou, od, top, bot = lips.ou, lips.od, lips.top, lips.bottom
    thick_u, thick_l = top - ou, od - bot
    share = np.clip(thick_u / np.maximum(thick_u + thick_l, 1e-6), 0.3, 0.7)
    contact = top + (gap - lift_lip) * share
    od_out = od - lift(od[None, :])[0]
    mouth = gap > 0.0
    upper = mouth & (rows >= ou) & (rows <= contact)
    lower = mouth & (rows > contact) & (rows <= od_out)
    src = np.where(upper, ou + (rows - ou) * (top - ou) / np.maximum(contact - ou, 1e-6), src)
    src = np.where(
        lower, od - (od_out - rows) * (od - bot) / np.maximum(od_out - contact, 1e-6), src
    )
    map_x = np.broadcast_to(xs[None, :], src.shape).astype(np.float32)
    roi = cv2.remap(
        image,
        np.ascontiguousarray(map_x),
        src.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # The contact line's shadow, as strong as the lips are closed there.
    sigma = CONTACT_WIDTH * face_height
    strength = CONTACT_SHADE * np.clip(gap / (MIN_OPENING * face_height), 0.0, 1.0)
    shade = 1.0 - strength * np.exp(-(((rows - contact) / sigma) ** 2))
    roi = np.clip(roi.astype(np.float32) * shade[..., None].astype(np.float32) + 0.5, 0, 255)
    out = image.copy()
    out[y0:y1, x0:x1] = roi.astype(np.uint8)
    moved = _forward(lm, src, xs, float(y0))
    # The inner contours meet on the contact line wherever the lips were apart.
    for chain in (L.LIPS_INNER_UPPER, L.LIPS_INNER_LOWER):
        idx = list(chain)
        px = moved[idx, 0].astype(np.float64)
        closed = np.interp(px, xs, gap) > 0.0
        moved[idx, 1] = np.where(closed, np.interp(px, xs, contact), moved[idx, 1])
    # Where the teeth were: the interior shows them again when the mouth opens (teeth do not
    # move with the lips).
    edge = np.minimum(rows - top + 0.5, bot - rows + 0.5)
    opening = np.zeros((h, w), np.float32)
    opening[y0:y1, x0:x1] = np.where(mouth, np.clip(edge, 0.0, 1.0), 0.0)
    return ClosedMouth(out, moved, central, (y0, y1, x0, x1), opening)


def _frontal_enough(lm: np.ndarray) -> bool:
    """Whether every lip contour runs left to right, so that columns cut each once.

    In a face turned far to one side the far half of the mouth folds behind the near one; such a
    portrait keeps its own mouth.
    """
    chains = (L.LIPS_OUTER_UPPER, L.LIPS_OUTER_LOWER, L.LIPS_INNER_UPPER, L.LIPS_INNER_LOWER)
    return all(bool(np.all(np.diff(lm[list(c), 0]) > 0.0)) for c in chains)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _forward(lm: np.ndarray, src: np.ndarray, xs: np.ndarray, y0: float) -> np.ndarray:
    """Where each landmark goes under the per-column backward map ``src (rows, cols)``.

    Each column maps output rows to source rows monotonically, so a point's new row is found by
    interpolating the inverse; points in a collapsed span (the opening) land on the contact line.
    Points outside the mapped columns do not move.
    """
    out = lm.astype(np.float32).copy()
    rows = y0 + np.arange(src.shape[0], dtype=np.float64)
    col = np.round(lm[:, 0] - xs[0]).astype(np.int64)
    for i in np.nonzero((col >= 0) & (col < xs.size))[0]:
        s = src[:, col[i]]
        y = float(lm[i, 1])
        if s[0] <= y <= s[-1]:
            # In a collapsed span several rows share the source interval's ends; any is fine.
            out[i, 1] = np.interp(y, s, rows)
    return out


@dataclass(frozen=True)
class _Opening:
    """The opening between the lips, per column of the ROI.

    Attributes:
        ou, od: outer upper and outer lower lip contour rows ``(k,)``.
        top, bottom: the last lip rows above and below the opening ``(k,)``.
        gap: ``bottom - top`` where the lips are apart, 0 where they touch ``(k,)``.
    """

    ou: np.ndarray
    od: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    gap: np.ndarray


def measure_opening(image: np.ndarray, lm: np.ndarray, xs: np.ndarray, face: float) -> _Opening:
    """Find the opening of ``image (H, W, 3)`` at columns ``xs (k,)`` (see module docstring).

    Each lip's colour comes from the middle of its band. A pixel is foreign to a lip when it
    is much darker, and, in a colour photo whose lips are clearly redder than what shows between
    them, less red; in a grey photo, when it is much brighter than both lips. Per column, the
    opening spans the landmarks' gap where most of it is foreign to both lips (else only the
    foreign run in it), grown into each lip while its pixels stay foreign to that lip. A grey
    photo cannot tell a bright lip from teeth, so there the landmarks' gap is taken as open.
    """
    h = image.shape[0]
    ou, u, d, od = (
        np.clip(L.chain_at(lm, c, xs), 0, h - 1)
        for c in (L.LIPS_OUTER_UPPER, L.LIPS_INNER_UPPER, L.LIPS_INNER_LOWER, L.LIPS_OUTER_LOWER)
    )
    d = np.maximum(d, u)
    corners = lm[[L.LIPS_INNER_UPPER[0], L.LIPS_INNER_UPPER[-1]], 0]
    inside = (xs > corners.min()) & (xs < corners.max())
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    cols = xs.astype(np.int64)

    def core(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Lab ``(3,)`` of the middle 60% of the band between two contours.

        Lightness is the upper quartile rather than the median: when the face mesh takes part of
        a dark opening for lip, the lip's own, lighter pixels still set the reference.
        """
        a = np.ceil(lo + 0.2 * (hi - lo)).astype(np.int64)
        b = np.floor(lo + 0.8 * (hi - lo)).astype(np.int64)
        pix = [lab[a[i] : b[i] + 1, cols[i]] for i in np.nonzero(inside)[0]]
        pix = [p for p in pix if p.size]
        if not pix:
            return np.full(3, np.nan, np.float32)
        allpix = np.concatenate(pix)
        out = np.median(allpix, axis=0)
        out[0] = np.percentile(allpix[:, 0], 75)
        return out

    up_lip, low_lip, between = core(ou, u), core(d, od), core(u, d)
    if np.isnan(up_lip).any() or np.isnan(low_lip).any():
        return _Opening(ou=ou, od=od, top=u, bottom=u, gap=np.zeros(xs.size))
    if np.isnan(between).any():
        between = (up_lip + low_lip) / 2
    redder = min(up_lip[1], low_lip[1]) - between[1] >= MIN_REDNESS_STEP
    brightest = max(up_lip[0], low_lip[0]) + BRIGHTER

    def foreign(pix: np.ndarray, lip: np.ndarray, dark_only: bool) -> np.ndarray:
        out = pix[:, 0] < lip[0] - DARKER
        if dark_only:
            return out
        if redder:
            return out | (pix[:, 1] < (lip[1] + between[1]) / 2)
        return out | (pix[:, 0] > brightest)

    mid = (u + d) / 2
    raw = np.zeros(xs.size)
    for i in np.nonzero(inside)[0]:
        # The whole column between the outer contours is read; colour may claim pixels up to
        # SCAN_INTO_LIP into a lip, darkness (a cavity is never lip) up to its outer edge.
        lo, hi = int(np.ceil(ou[i])) + 1, int(np.floor(od[i]))
        if hi - lo < 2:
            continue
        pix = lab[lo:hi, cols[i]]
        rows = np.arange(lo, hi)
        reach = (rows >= u[i] - SCAN_INTO_LIP * (u[i] - ou[i])) & (
            rows <= d[i] + SCAN_INTO_LIP * (od[i] - d[i])
        )
        to_up = foreign(pix, up_lip, False) & reach | foreign(pix, up_lip, True)
        to_low = foreign(pix, low_lip, False) & reach | foreign(pix, low_lip, True)
        seeds = np.nonzero((rows >= np.round(u[i])) & (rows <= np.round(d[i])))[0]
        hit = seeds[to_up[seeds] & to_low[seeds]]
        if seeds.size > 1 and (not redder or hit.size >= OPEN_SHARE * seeds.size):
            # Open here: everything between the landmark contours goes, and whatever foreign
            # pixels continue past them (the mesh often sits inside a smile's teeth).
            a, b = int(seeds.min()), int(seeds.max())
        elif hit.size:
            # Mostly lip between the contours: only the foreign run (a closed mouth's dark
            # contact line, or a thin slit) counts.
            a, b = int(hit.min()), int(hit.max())
        else:
            continue
        while a > 0 and to_up[a - 1]:
            a -= 1
        while b < pix.shape[0] - 1 and to_low[b + 1]:
            b += 1
        raw[i] = b - a + 1.0
        mid[i] = lo + (a + b) / 2
    # Smooth along the mouth (pixel noise would make the contact line ragged) and let the opening
    # vanish at the inner corners, where the lips of any photo meet.
    sigma = max(1.0, 0.008 * face)
    gap = gaussian_filter1d(raw, sigma) * _corner_taper(xs, inside)
    mid = gaussian_filter1d(mid, sigma)
    # A lip keeps at least a pixel of its own texture.
    top = np.maximum(mid - gap / 2, ou + 1.0)
    bottom = np.minimum(mid + gap / 2, od - 1.0)
    gap = np.where(gap > 0.05, np.maximum(bottom - top, 0.0), 0.0)
    return _Opening(ou=ou, od=od, top=top, bottom=bottom, gap=gap)


def _corner_taper(xs: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """1 over the middle of the mouth, falling to 0 at the inner corners, ``(k,)``."""
    if not inside.any():
        return np.zeros(xs.size)
    left, right = float(xs[inside].min()), float(xs[inside].max())
    half = max((right - left) / 2, 1.0)
    t = np.abs(xs - (left + right) / 2) / half
    return np.where(inside, np.clip((1.0 - t) / CORNER_TAPER, 0.0, 1.0), 0.0)
