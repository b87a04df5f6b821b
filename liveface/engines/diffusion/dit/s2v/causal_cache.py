"""LiveAvatar's per-session key/value caches: a rolling cache per denoising step and one sink.

Shapes follow from the model config and the latent grid alone (:class:`CausalLayout`), so a
session's memory is fixed when it opens and stays so however long it streams:

- :class:`RollingCache` - one per denoising step: every DiT block's self-attention keys (RoPE
  applied) and values of the last ``clip_frames`` latent frames, as that step computed them from
  its own noisy input. Block ``n`` writes its tokens at token ``(n * block_tokens) % capacity``
  and attends to what is written so far; once the ring has wrapped it attends to all of it
  (LiveAvatar's ``current_start % kv_cache_size``).
- :class:`SinkCache` - one per session (all steps share it): the keys (*without* RoPE) and values
  of the reference and motion tokens, computed once at t = 0. Their positions are kept so the keys
  can be rotated again at every call, with the reference moved along with the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CausalLayout:
    """Token counts of the block-causal stream.

    Attributes:
        rows, cols: token grid of one latent frame (latent height / 2, width / 2).
        block_frames: latent frames denoised together (LiveAvatar: 3).
        clip_frames: latent frames the rolling cache holds (LiveAvatar: 12, one clip).
    """

    rows: int
    cols: int
    block_frames: int = 3
    clip_frames: int = 12

    def __post_init__(self) -> None:
        if min(self.rows, self.cols, self.block_frames) <= 0:
            raise ValueError("rows, cols and block_frames must be positive")
        if self.clip_frames % self.block_frames:
            raise ValueError(
                f"clip_frames {self.clip_frames} must be a multiple of block_frames "
                f"{self.block_frames}"
            )

    @property
    def per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def block_tokens(self) -> int:
        return self.block_frames * self.per_frame

    @property
    def capacity(self) -> int:
        """Tokens of one rolling cache."""
        return self.clip_frames * self.per_frame

    @property
    def blocks_per_clip(self) -> int:
        return self.clip_frames // self.block_frames


class RollingCache:
    """One session's keys/values of one denoising step, for every DiT block.

    Attributes:
        k, v: ``(layers, 1, heads, capacity, head_dim)``; keys with RoPE applied.
        blocks: blocks written so far (the next block is number ``blocks``).
    """

    def __init__(
        self,
        layout: CausalLayout,
        layers: int,
        heads: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.layout = layout
        shape = (layers, 1, heads, layout.capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.blocks = 0

    def span(self, block: int) -> tuple[int, int]:
        """Where block ``block`` writes (start token) and how many tokens it then attends to."""
        lay = self.layout
        start = block * lay.block_tokens
        if start >= lay.capacity:  # the ring has wrapped: every slot holds a recent block
            return start % lay.capacity, lay.capacity
        return start, start + lay.block_tokens

    def check_next(self, block: int) -> None:
        """Blocks must come in order: one that skips or repeats would attend to wrong keys."""
        if block != self.blocks:
            raise ValueError(f"block {block} given to a step cache expecting block {self.blocks}")

    def write(self, layer: int, block: int, k: torch.Tensor, v: torch.Tensor) -> int:
        """Store block ``block``'s keys/values ``(1, heads, block_tokens, head_dim)`` of
        ``layer``; returns how many cached tokens the block attends to (its own included)."""
        start, active = self.span(block)
        n = k.shape[2]
        self.k[layer, :, :, start : start + n] = k
        self.v[layer, :, :, start : start + n] = v
        return active

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


@dataclass
class SinkCache:
    """The reference and motion tokens' keys and values for every DiT block, at t = 0.

    The reference's keys are kept without RoPE and rotated at every call to where the stream has
    moved it. The motion tokens' positions never move, so their keys are rotated once at prefill
    (the very rotation each call would apply) and kept so.

    Attributes:
        reference_k: ``(layers, 1, heads, reference_tokens, head_dim)`` keys *before* RoPE.
        motion_k: ``(layers, 1, heads, motion_tokens, head_dim)`` keys with RoPE applied.
        v: ``(layers, 1, heads, reference_tokens + motion_tokens, head_dim)`` values.
        positions: float64 ``(tokens, 3)`` RoPE positions as prefilled (reference first).
    """

    reference_k: torch.Tensor
    motion_k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor

    @property
    def reference_tokens(self) -> int:
        return self.reference_k.shape[3]

    @property
    def tokens(self) -> int:
        return self.v.shape[3]

    def nbytes(self) -> int:
        parts = (self.reference_k, self.motion_k, self.v)
        return sum(t.numel() * t.element_size() for t in parts) + self.positions.numel() * 8

    @staticmethod
    def reference_frame(frame: int, offset: int, reference_frame: int) -> int:
        """RoPE frame of the reference for a block starting at latent frame ``frame`` with the
        drawn ``offset``: ``reference_frame + max(0, frame - reference_frame + offset)``."""
        return reference_frame + max(0, frame - reference_frame + offset)

    def rolled_positions(self, frame: int, offset: int, reference_frame: int) -> torch.Tensor:
        """All sink positions for such a block (the motion tokens' do not move)."""
        pos = self.positions.clone()
        pos[: self.reference_tokens, 0] = self.reference_frame(frame, offset, reference_frame)
        return pos


def sink_offsets(generator: torch.Generator, count: int, low: int = 4, high: int = 30) -> list[int]:
    """``count`` sink offsets in ``low..high`` (LiveAvatar draws one per forward) from a
    session's seeded generator, so that a stream is reproducible."""
    return torch.randint(low, high + 1, (count,), generator=generator).tolist()
