"""The motion-frame cache: a session's recent clean latents, as few conditioning tokens as possible.

A session remembers the last ``MotionConfig.frames`` generated latent frames in one fixed tensor
(:class:`MotionCache`), oldest first. When a chunk is conditioned on them they become tokens in
FramePack style (:class:`MotionLayout`): the newest ``overlap`` frames at full resolution (Soul's
overlap latents), older ones pooled spatially by growing factors (e.g. 2x, then 4x), so that a long
history costs few tokens. Memory and token count depend on the config and the latent grid only,
never on how long the session has run.

Rotary positions (frame, row, column), in token-grid units, fixed for every chunk:

- the reference (pivot) latent at frame 0;
- history slot ``i`` (0 = oldest) at frame ``1 + i``; a token pooled over a window sits at the
  window's centre (e.g. row 0.5 for rows 0 and 1);
- the chunk's new latent frames right after the history, at ``1 + frames``, ``2 + frames``, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from liveface.engines.diffusion import json_config
from liveface.errors import ConfigError

#: Frame position of the reference latent; history and new frames follow it.
REFERENCE_FRAME = 0


@dataclass(frozen=True)
class HistoryLevel:
    """``frames`` older latent frames whose tokens are average-pooled ``pool x pool``."""

    frames: int
    pool: int


@dataclass(frozen=True)
class MotionConfig:
    """Which past latent frames condition a chunk, and how coarsely.

    Attributes:
        overlap: newest latent frames kept at full resolution (Soul copies the last 2).
        levels: older frames, newest level first, each coarser than the one before.
    """

    overlap: int = 2
    levels: tuple[HistoryLevel, ...] = (HistoryLevel(2, 2), HistoryLevel(4, 4))

    def __post_init__(self) -> None:
        levels = tuple(
            lv if isinstance(lv, HistoryLevel) else HistoryLevel(*lv) for lv in self.levels
        )
        object.__setattr__(self, "levels", levels)
        problems = []
        if self.overlap < 1:
            problems.append("overlap must be >= 1 latent frame")
        if any(lv.frames < 1 or lv.pool < 1 for lv in levels):
            problems.append("every history level needs frames >= 1 and pool >= 1")
        if problems:
            raise ConfigError("invalid motion config: " + "; ".join(problems))

    @property
    def frames(self) -> int:
        """Latent frames the cache holds."""
        return self.overlap + sum(lv.frames for lv in self.levels)

    def to_dict(self) -> dict[str, Any]:
        return {"overlap": self.overlap, "levels": [[lv.frames, lv.pool] for lv in self.levels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MotionConfig:
        json_config.check_keys(cls, data, "motion")
        levels = tuple(HistoryLevel(int(f), int(p)) for f, p in data.get("levels", ()))
        return cls(overlap=int(data.get("overlap", 2)), levels=levels)


@dataclass(frozen=True)
class Segment:
    """Consecutive cache slots tokenised with one pooling factor.

    Attributes:
        first: first slot (0 = oldest).
        frames: slots in the segment.
        pool: spatial pooling of their tokens.
    """

    first: int
    frames: int
    pool: int


@dataclass(frozen=True)
class MotionLayout:
    """Token layout of the conditioning segments for one latent grid.

    Attributes:
        config: the motion config.
        channels: latent channels.
        height, width: latent grid (cells).
        patch: the DiT's spatial patch ``(rows, columns)``; tokens are ``height / patch[0]`` by
            ``width / patch[1]`` per frame.
    """

    config: MotionConfig
    channels: int
    height: int
    width: int
    patch: tuple[int, int]

    def __post_init__(self) -> None:
        if self.height % self.patch[0] or self.width % self.patch[1]:
            raise ConfigError(
                f"latent grid {self.height}x{self.width} is not a multiple of the patch "
                f"{self.patch}"
            )

    @property
    def token_rows(self) -> int:
        return self.height // self.patch[0]

    @property
    def token_columns(self) -> int:
        return self.width // self.patch[1]

    @property
    def tokens_per_frame(self) -> int:
        return self.token_rows * self.token_columns

    @property
    def segments(self) -> tuple[Segment, ...]:
        """Oldest (coarsest) first, the full-resolution overlap last."""
        out, slot = [], 0
        for lv in reversed(self.config.levels):
            out.append(Segment(slot, lv.frames, lv.pool))
            slot += lv.frames
        out.append(Segment(slot, self.config.overlap, 1))
        return tuple(out)

    def pooled_size(self, pool: int) -> tuple[int, int]:
        """Token rows and columns of one frame pooled ``pool x pool`` (partial edge windows
        count as one token)."""
        return -(-self.token_rows // pool), -(-self.token_columns // pool)

    @property
    def history_tokens(self) -> int:
        """Conditioning tokens of the history (all segments)."""
        total = 0
        for seg in self.segments:
            rows, cols = self.pooled_size(seg.pool)
            total += seg.frames * rows * cols
        return total

    @property
    def first_new_frame(self) -> int:
        """Frame position of a chunk's first new latent frame."""
        return REFERENCE_FRAME + 1 + self.config.frames

    def pool_tokens(self, grid: torch.Tensor) -> torch.Tensor:
        """Tokenise the history's token grid.

        Args:
            grid: float ``(batch, dim, frames, token_rows, token_columns)``, the patch-embedded
                cache (``frames = config.frames``, oldest first).

        Returns:
            ``(batch, history_tokens, dim)``, segment by segment.
        """
        parts = []
        for seg in self.segments:
            part = grid[:, :, seg.first : seg.first + seg.frames]
            if seg.pool > 1:
                # A window larger than the grid covers all of it (one token along that axis).
                window = (1, min(seg.pool, self.token_rows), min(seg.pool, self.token_columns))
                part = F.avg_pool3d(part, window, stride=window, ceil_mode=True)
            parts.append(part.flatten(2).transpose(1, 2))
        return torch.cat(parts, dim=1)

    def history_positions(self) -> torch.Tensor:
        """float64 ``(history_tokens, 3)`` positions of :meth:`pool_tokens`' output."""
        f = torch.arange(self.config.frames, dtype=torch.float64) + REFERENCE_FRAME + 1
        r = torch.arange(self.token_rows, dtype=torch.float64)
        c = torch.arange(self.token_columns, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(f, r, c, indexing="ij"))  # (3, frames, rows, cols)
        # Pooling the coordinates exactly like the tokens puts each token at its window's centre.
        return self.pool_tokens(grid[None])[0]

    def reference_positions(self) -> torch.Tensor:
        """float64 ``(tokens_per_frame, 3)`` positions of the reference latent's tokens."""
        return self._frame_positions(REFERENCE_FRAME, 1)

    def new_positions(self, frames: int) -> torch.Tensor:
        """float64 ``(frames * tokens_per_frame, 3)`` positions of a chunk's new frames."""
        return self._frame_positions(self.first_new_frame, frames)

    def _frame_positions(self, first: int, frames: int) -> torch.Tensor:
        f = torch.arange(frames, dtype=torch.float64) + first
        r = torch.arange(self.token_rows, dtype=torch.float64)
        c = torch.arange(self.token_columns, dtype=torch.float64)
        return torch.stack(torch.meshgrid(f, r, c, indexing="ij"), dim=-1).reshape(-1, 3)


class MotionCache:
    """One session's last clean latents, ``(1, channels, frames, height, width)``, oldest first.

    Allocated once; :meth:`push` shifts in place, so the tensor (and its bytes) never changes size.
    """

    def __init__(
        self, layout: MotionLayout, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        self.layout = layout
        shape = (1, layout.channels, layout.config.frames, layout.height, layout.width)
        self.latents = torch.zeros(shape, device=device, dtype=dtype)
        #: Frames pushed since the last :meth:`reset` (statistics only).
        self.pushed = 0

    @property
    def frames(self) -> int:
        return self.latents.shape[2]

    @property
    def tokens(self) -> int:
        """Conditioning tokens the history costs per chunk."""
        return self.layout.history_tokens

    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size()

    def reset(self, reference: torch.Tensor) -> None:
        """Forget the past: every slot holds the reference latent ``(1, channels, 1, h, w)``
        (a still portrait "before" the session)."""
        self._check(reference)
        self.latents.copy_(reference.expand_as(self.latents))
        self.pushed = 0

    def push(self, latents: torch.Tensor) -> None:
        """Append new clean latents ``(1, channels, k, h, w)``; the oldest ``k`` drop out."""
        self._check(latents)
        k, n = latents.shape[2], self.frames
        if k >= n:
            self.latents.copy_(latents[:, :, k - n :])
        else:
            self.latents[:, :, : n - k] = self.latents[:, :, k:].clone()
            self.latents[:, :, n - k :] = latents
        self.pushed += k

    def _check(self, latents: torch.Tensor) -> None:
        want = (1, self.layout.channels, self.layout.height, self.layout.width)
        got = (latents.shape[0], latents.shape[1], *latents.shape[3:])
        if latents.dim() != 5 or got != want:
            raise ValueError(f"latents {tuple(latents.shape)} do not fit the cache {want}")
