"""Head motion per frame: the rest frame moved by the head, warped at keys and blended between.

The head's pose changes by a tenth of a pixel or so from one frame to the next (slow sway and
breathing), so the full-frame warp, the costliest step of a frame, need not run for every frame.
With ``every = 2`` the rest frame is warped at every other frame (a *key*) and the frames between
two keys blend them. Two images a few tenths of a pixel apart blend into the image at the middle
pose, so the in-between frame differs from an exact warp by far less than a grey level on average
(``tests/engines/warp/test_head_motion.py`` measures it). ``every = 1`` warps every frame.

The parts of a frame that change besides the head (the mouth and the eyelids) are drawn at rest
and moved by the frame's own pose (the keys' poses interpolated), so they sit exactly where the
head is; see ``Renderer.render``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from liveface.engines.warp.idle import HeadFields, Pose

#: Gives the head pose of a frame from its index (it may be asked for the next key's frame).
PoseAt = Callable[[int], Pose]
_NO_MAP = np.empty(0, np.float32)


@dataclass(frozen=True)
class HeadView:
    """How the head sits in one frame.

    Attributes:
        background: uint8 ``(H, W, 3)`` the rest frame moved by the head (read-only).
        small: float32 ``(h, w, 2)`` the frame's backward shift at ``1 / FIELD_SCALE`` size.
        reach: the largest shift in pixels (how far a moved pixel can come from).
    """

    background: np.ndarray
    small: np.ndarray
    reach: float


@dataclass
class _Key:
    index: int
    image: np.ndarray
    small: np.ndarray
    reach: float


class HeadMotion:
    """One session's head-motion frames of a rest frame; not thread-safe.

    Args:
        fields: the portrait's head-motion fields.
        rest: uint8 ``(H, W, 3)`` the rest frame (read-only).
        every: frames from one key to the next (1: every frame is warped).
    """

    def __init__(self, fields: HeadFields, rest: np.ndarray, every: int) -> None:
        if every < 1:
            raise ValueError(f"key frames every {every} frames")
        self.fields = fields
        self.every = every
        self._rest = rest
        self._keys: list[_Key] = []
        self._spare: list[np.ndarray] = []
        self._blend = np.empty_like(rest)
        self._blend_small = np.empty(fields.basis.shape[1:], np.float32)
        gy, gx = np.mgrid[0 : rest.shape[0], 0 : rest.shape[1]].astype(np.float32)
        self._grid = np.ascontiguousarray(np.stack([gx, gy], axis=-1))  # each pixel's (x, y)

    def view(self, index: int, pose_at: PoseAt) -> HeadView:
        """The head in frame ``index``; ``pose_at`` gives the pose of a key frame when needed
        (the next key's too, a few frames ahead of ``index``)."""
        first = index - index % self.every
        wanted = (first, first + self.every)
        self._spare += [k.image for k in self._keys if k.index not in wanted]
        self._keys = [k for k in self._keys if k.index in wanted]
        k0 = self._key(first, pose_at)
        if index == first:
            return HeadView(k0.image, k0.small, k0.reach)
        k1 = self._key(first + self.every, pose_at)
        a = (index - first) / self.every
        cv2.addWeighted(k0.image, 1.0 - a, k1.image, a, 0.0, dst=self._blend)
        small = self._blend_small
        np.multiply(k0.small, np.float32(1.0 - a), out=small)
        cv2.scaleAdd(k1.small, a, small, dst=small)
        return HeadView(self._blend, small, max(k0.reach, k1.reach))

    def _key(self, index: int, pose_at: PoseAt) -> _Key:
        for key in self._keys:
            if key.index == index:
                return key
        small = self.fields.small_shift(pose_at(index), np.empty_like(self._blend_small))
        image = self._spare.pop() if self._spare else np.empty_like(self._rest)
        cv2.remap(
            self._rest,
            self.fields.upsample(small),
            _NO_MAP,
            cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP,
            dst=image,
            borderMode=cv2.BORDER_REPLICATE,
        )
        reach = float(cv2.norm(small, cv2.NORM_INF)) * math.sqrt(2.0)  # bounds |(dx, dy)|
        key = _Key(index, image, small, reach)
        self._keys.append(key)
        return key

    def grow(self, box: tuple[int, int, int, int], view: HeadView) -> tuple[int, int, int, int]:
        """``box`` grown by the view's reach (in the frame): every pixel that may show it."""
        height, width = self.fields.size
        grow = math.ceil(view.reach) + 1
        y0, y1, x0, x1 = box
        return max(0, y0 - grow), min(height, y1 + grow), max(0, x0 - grow), min(width, x1 + grow)

    def shift(self, view: HeadView, box: tuple[int, int, int, int]) -> np.ndarray:
        """The view's backward shift over ``box``: float32 ``(bh, bw, 2)`` pixels."""
        return self.fields.upsample_box(view.small, box)

    def move(
        self, source: np.ndarray, box: tuple[int, int, int, int], view: HeadView, out: np.ndarray
    ) -> None:
        """Draw the part of ``source`` (a frame at rest pose) inside ``box`` moved by ``view``.

        ``out`` receives every pixel whose source may lie in the box (``grow(box)``); outside the
        boxes drawn this frame, ``source`` must equal the rest frame.
        """
        grown = self.grow(box, view)
        remap_box(source, self.to_absolute(self.shift(view, grown), grown), grown, out)

    def to_absolute(self, shift: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Shifts over ``box`` (in place) to the frame coordinates they sample: ``(bh, bw, 2)``."""
        y0, y1, x0, x1 = box
        return np.add(shift, self._grid[y0:y1, x0:x1], out=shift)


def remap_box(
    source: np.ndarray, xy: np.ndarray, box: tuple[int, int, int, int], out: np.ndarray
) -> None:
    """``out[box]`` = bilinear samples of ``source`` at frame coordinates ``xy (bh, bw, 2)``."""
    y0, y1, x0, x1 = box
    cv2.remap(
        source,
        xy,
        _NO_MAP,
        cv2.INTER_LINEAR,
        dst=out[y0:y1, x0:x1],
        borderMode=cv2.BORDER_REPLICATE,
    )


def offset_xy(xy: np.ndarray, dx: float, dy: float, out: np.ndarray) -> np.ndarray:
    """``out = xy + (dx, dy)`` for ``(h, w, 2)`` float32 points (numpy is slow at this shape)."""
    return np.asarray(cv2.add(xy, (float(dx), float(dy), 0.0, 0.0), dst=out))  # type: ignore[call-overload]
