"""Wan-S2V's FramePack motioner (checkpoint prefix ``frame_packer.``) and the S2V token positions.

The last ``sum(zip_buckets)`` (19) motion latent frames, oldest first, are split newest-first into
buckets of 1, 2 and 16 frames, patch-embedded by three Conv3d projections of growing stride:
``proj`` (1, 2, 2) like the DiT's own patches, ``proj_2x`` (2, 4, 4) and ``proj_4x`` (4, 8, 8).
Fewer frames than that are zero-padded at the old end.

Rotary positions (frame, row, column) of an S2V forward, in token order:

======================  =================================  ==========================
segment                 tokens                             frame position
======================  =================================  ==========================
noisy frames            ``F * Hp * Wp``                    0 .. F - 1
reference               ``Hp * Wp``                        30
motion, 1x              ``Hp * Wp``                        -1
motion, 2x              ``(Hp / 2) * (Wp / 2)``            -3
motion, 4x              ``4 * (Hp / 4) * (Wp / 4)``        -19, -14, -9, -4
======================  =================================  ==========================

``Hp, Wp`` = latent height and width / 2. Compressed buckets sit on the full token grid at rows
``int(linspace(0, Hp - 1, n))`` (and likewise columns); a bucket of ``m`` frames compressed ``c``
times takes ``m / c`` frame positions ``-int(linspace(s, s - m + 1, m / c))`` with ``s`` the frames
up to and including the bucket. A negative position rotates by the negative angle.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: RoPE frame index of the reference latent.
REFERENCE_FRAME = 30
#: Temporal/spatial compression of the three buckets, newest first.
COMPRESSION = (1, 2, 4)


def _axis(start: float, stop: float, count: int) -> torch.Tensor:
    """``int(linspace(start, stop, count))`` as float64 (positions of a compressed axis)."""
    return torch.from_numpy(np.linspace(start, stop, count).astype(np.int64)).double()


def box_positions(frames: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float64 ``(len(frames) * len(rows) * len(cols), 3)`` positions in (frame, row, col) order."""
    grid = torch.meshgrid(frames.double(), rows.double(), cols.double(), indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, 3)


def noisy_positions(frames: int, rows: int, cols: int) -> torch.Tensor:
    """Positions of the noisy tokens (frames 0 .. frames - 1)."""
    return box_positions(torch.arange(frames), torch.arange(rows), torch.arange(cols))


def reference_positions(rows: int, cols: int) -> torch.Tensor:
    """Positions of the reference latent's tokens (frame :data:`REFERENCE_FRAME`)."""
    return box_positions(torch.tensor([REFERENCE_FRAME]), torch.arange(rows), torch.arange(cols))


def motion_positions(buckets: tuple[int, ...], rows: int, cols: int) -> torch.Tensor:
    """Positions of :class:`FramePackMotioner`'s tokens for a token grid of ``rows x cols``."""
    parts, upto = [], 0
    for frames, c in zip(buckets, COMPRESSION, strict=True):
        upto += frames
        n = frames // c
        f = -_axis(upto, upto - frames + 1, n)
        r, w = _axis(0, rows - 1, rows // c), _axis(0, cols - 1, cols // c)
        parts.append(box_positions(f, r, w))
    return torch.cat(parts)


class FramePackMotioner(nn.Module):
    """Motion latents -> FramePack tokens (keys ``proj``, ``proj_2x``, ``proj_4x``)."""

    def __init__(self, channels: int, dim: int, buckets: tuple[int, int, int]) -> None:
        super().__init__()
        self.buckets = buckets
        self.proj = nn.Conv3d(channels, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(channels, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(channels, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    @property
    def frames(self) -> int:
        """Motion latent frames the motioner reads (the newest ones)."""
        return sum(self.buckets)

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens for a latent grid of ``height x width`` cells."""
        rows, cols = height // 2, width // 2
        return sum(
            (f // c) * (rows // c) * (cols // c)
            for f, c in zip(self.buckets, COMPRESSION, strict=True)
        )

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, frames, height, width)`` oldest first -> ``(batch, tokens, dim)``,
        the 1x bucket's tokens first, then 2x, then 4x (height and width multiples of 8)."""
        b, c, t, h, w = motion.shape
        if h % 8 or w % 8:
            raise ValueError(f"FramePack needs latent height and width divisible by 8, got {h}x{w}")
        n = self.frames
        padded = motion.new_zeros(b, c, n, h, w)
        keep = min(n, t)
        if keep:
            padded[:, :, n - keep :] = motion[:, :, t - keep :]
        b1, b2, b4 = self.buckets
        x4, x2, x1 = padded.split([b4, b2, b1], dim=2)
        weight = self.proj.weight
        parts = [
            proj(x.to(weight.dtype)).flatten(2).transpose(1, 2)
            for proj, x in ((self.proj, x1), (self.proj_2x, x2), (self.proj_4x, x4))
        ]
        return torch.cat(parts, dim=1)
