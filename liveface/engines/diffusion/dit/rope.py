"""Three-axis rotary position embedding with per-token positions.

Each token carries a position ``(frame, row, column)``; the head channels are split into three
groups (frame gets ``head_dim - 4 * (head_dim // 6)`` channels, row and column
``2 * (head_dim // 6)`` each, as in Wan) and each group is rotated by its own axis. Adjacent
channel pairs ``(2i, 2i + 1)`` form one complex number, as in the official implementation.

Positions are inputs rather than being derived from the grid, so conditioning tokens (a reference
latent, motion frames) can be placed where the caller wants them, also at negative or fractional
frame positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Position axes, in the order of the last dimension of a positions tensor.
AXES = ("frame", "row", "column")


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of (frame, row, column) within one head; they sum to ``head_dim``."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def grid_positions(
    frames: int,
    height: int,
    width: int,
    *,
    frame_offset: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Positions of a token grid in row-major (frame, row, column) order.

    Returns:
        ``(frames * height * width, 3)`` int64 positions; frame positions start at ``frame_offset``.
    """
    f = torch.arange(frames, device=device) + frame_offset
    h = torch.arange(height, device=device)
    w = torch.arange(width, device=device)
    grid = torch.stack(torch.meshgrid(f, h, w, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


@dataclass(frozen=True)
class RotaryTables:
    """Cosines and sines for every token, shared by all blocks of one forward pass.

    Attributes:
        cos, sin: float32 ``(batch or 1, tokens, 1, head_dim // 2)``.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.cos.shape[1]


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> RotaryTables:
    """Build the rotation tables for ``positions``.

    Args:
        positions: ``(tokens, 3)`` or ``(batch, tokens, 3)`` (frame, row, column), int or float.
        head_dim: channels per head (even).
        theta: frequency base.
    """
    if positions.dim() == 2:
        positions = positions.unsqueeze(0)
    if positions.dim() != 3 or positions.shape[-1] != len(AXES):
        raise ValueError(
            f"positions must be (tokens, 3) or (batch, tokens, 3), got {tuple(positions.shape)}"
        )
    angles = []
    # float64 keeps large positions exact before the cos/sin, as the official code does.
    pos = positions.to(torch.float64)
    for axis, axis_dim in enumerate(rope_axis_dims(head_dim)):
        exponent = torch.arange(0, axis_dim, 2, dtype=torch.float64, device=pos.device) / axis_dim
        inv_freq = theta**-exponent
        angles.append(pos[..., axis, None] * inv_freq)
    angle = torch.cat(angles, dim=-1).unsqueeze(2)
    return RotaryTables(cos=angle.cos().float(), sin=angle.sin().float())


def apply_rotary(x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
    """Rotate channel pairs of ``x`` by the tables' angles.

    Args:
        x: ``(batch, tokens, heads, head_dim)`` with ``tokens == tables.num_tokens``.

    Returns:
        Same shape and dtype as ``x``.
    """
    n = tables.num_tokens
    if x.shape[1] != n:
        raise ValueError(f"{x.shape[1]} tokens but rotary tables for {n}")
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = tables.cos, tables.sin
    out = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)
