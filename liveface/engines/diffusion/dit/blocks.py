"""The DiT's transformer block, output head and timestep modulation.

Timestep modulation is held per *segment* of tokens: one segment for a single timestep per sample,
one per token frame for per-frame timesteps (the usual case: conditioning frames at ``t = 0``,
noisy frames at ``t``), or one per token. The modulation tensors then have ``segments`` rows and
broadcast over the ``tokens // segments`` tokens of each segment without being expanded. Segments
of unequal length (Wan-S2V: the noisy tokens at ``t``, then reference and motion tokens at 0) give
their token counts in :attr:`Modulation.sizes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from liveface.engines.diffusion.dit.attention import (
    Attention,
    FP32LayerNorm,
    KeyValue,
    compute_dtype,
    concat_kv,
)
from liveface.engines.diffusion.dit.rope import RotaryTables

#: A function that returns the updated residual stream ``(batch, tokens, dim)``.
StreamHook = Callable[[torch.Tensor], torch.Tensor]

#: Modulation vectors per block: shift, scale, gate (self-attention), shift, scale, gate (FFN).
BLOCK_MODULATIONS = 6
#: Modulation vectors of the output head: shift, scale.
HEAD_MODULATIONS = 2


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Cosine-then-sine embedding of timesteps, as in Wan.

    Args:
        timesteps: any shape ``S`` of (float) timesteps in ``[0, num_train_timesteps]``.

    Returns:
        float32 ``S + (dim,)``.
    """
    half = dim // 2
    t = timesteps.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Apply ``layer`` in float32 whatever the weights' storage dtype."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


@dataclass(frozen=True)
class Modulation:
    """Timestep conditioning of one forward pass, shared by all blocks.

    Attributes:
        embedding: float32 ``(batch, segments, dim)``, the timestep embedding (used by the head).
        projected: float32 ``(batch, segments, 6, dim)``, its projection (used by the blocks).
        sizes: token count of each segment, or None for equal segments (``tokens % segments ==
            0``).
    """

    embedding: torch.Tensor
    projected: torch.Tensor
    sizes: tuple[int, ...] | None = None

    @property
    def segments(self) -> int:
        return self.embedding.shape[1]


def modulate(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    sizes: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``x * (1 + scale) + shift`` per segment.

    Args:
        x: float32 ``(batch, tokens, dim)``.
        shift, scale: float32 ``(batch, segments, dim)``.
        sizes: tokens per segment (None: equal segments).
    """
    if sizes is not None:
        parts = x.split(sizes, dim=1)
        return torch.cat(
            [
                torch.addcmul(shift[:, i : i + 1], p, 1 + scale[:, i : i + 1])
                for i, p in enumerate(parts)
            ],
            dim=1,
        )
    b, n, d = x.shape
    xs = x.view(b, shift.shape[1], -1, d)
    return torch.addcmul(shift[:, :, None], xs, 1 + scale[:, :, None]).view(b, n, d)


def gated_add(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, sizes: tuple[int, ...] | None = None
) -> torch.Tensor:
    """``x + y * gate`` per segment; ``x`` float32 ``(batch, tokens, dim)``, ``y`` any dtype."""
    if sizes is not None:
        gated = [p.float() * gate[:, i : i + 1] for i, p in enumerate(y.split(sizes, dim=1))]
        return x + torch.cat(gated, dim=1)
    b, n, d = x.shape
    seg = gate.shape[1]
    out = torch.addcmul(x.view(b, seg, -1, d), y.float().view(b, seg, -1, d), gate[:, :, None])
    return out.view(b, n, d)


class DiTBlock(nn.Module):
    """Self-attention (rotary, qk-norm), text cross-attention, FFN, 6-way timestep modulation.

    Submodule names equal the official ``WanAttentionBlock``: ``self_attn``, ``norm3``,
    ``cross_attn``, ``ffn.0``, ``ffn.2``, ``modulation``; ``norm1``/``norm2`` carry no weights.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        *,
        qk_norm: bool,
        cross_attn_norm: bool,
        eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps)
        self.self_attn = Attention(dim, num_heads, qk_norm=qk_norm, eps=eps)
        self.norm3: nn.Module = (
            FP32LayerNorm(dim, eps, affine=True) if cross_attn_norm else nn.Identity()
        )
        self.cross_attn = Attention(dim, num_heads, qk_norm=qk_norm, eps=eps)
        self.norm2 = FP32LayerNorm(dim, eps)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, BLOCK_MODULATIONS, dim) / math.sqrt(dim))

    def forward(
        self,
        x: torch.Tensor,
        mod: Modulation,
        rope: RotaryTables,
        text: KeyValue | torch.Tensor,
        after_cross_attn: StreamHook | None = None,
        self_attn_mask: torch.Tensor | None = None,
        prefix: KeyValue | None = None,
    ) -> torch.Tensor:
        """One block.

        Args:
            x: float32 residual stream ``(batch, tokens, dim)``.
            mod: the forward pass's timestep modulation.
            rope: rotary tables for the ``tokens``.
            text: projected text ``(batch, text_len, dim)`` or its per-block keys and values.
            after_cross_attn: optional hook run between the cross-attention and the FFN (where
                Soul-style audio attention sits).
            self_attn_mask: optional bool ``(tokens, key_tokens)`` (frame-causal models).
            prefix: keys/values ``(batch, heads, prefix_tokens, head_dim)`` of conditioning tokens
                computed once per chunk (:meth:`forward_with_kv`); the tokens attend to them
                before their own.

        Returns:
            float32 ``(batch, tokens, dim)``.
        """
        return self._run(x, mod, rope, text, after_cross_attn, self_attn_mask, prefix)[0]

    def forward_with_kv(
        self,
        x: torch.Tensor,
        mod: Modulation,
        rope: RotaryTables,
        text: KeyValue | torch.Tensor,
        prefix: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """:meth:`forward` that also returns the self-attention keys/values of ``x``'s own tokens
        ``(batch, heads, tokens, head_dim)``, for later tokens to attend to."""
        return self._run(x, mod, rope, text, None, None, prefix)

    def self_kv(self, x: torch.Tensor, mod: Modulation, rope: RotaryTables) -> KeyValue:
        """Only the self-attention keys/values of ``x`` (what :meth:`forward_with_kv` returns),
        without running the rest of the block."""
        e = (self.modulation.float()[:, None] + mod.projected).unbind(dim=2)
        normed = modulate(self.norm1(x), e[0], e[1], mod.sizes)
        return self.self_attn.self_projections(normed, rope)[1]

    def _run(
        self,
        x: torch.Tensor,
        mod: Modulation,
        rope: RotaryTables,
        text: KeyValue | torch.Tensor,
        after_cross_attn: StreamHook | None,
        self_attn_mask: torch.Tensor | None,
        prefix: KeyValue | None,
    ) -> tuple[torch.Tensor, KeyValue]:
        e = (self.modulation.float()[:, None] + mod.projected).unbind(dim=2)
        sizes = mod.sizes
        q, own = self.self_attn.self_projections(modulate(self.norm1(x), e[0], e[1], sizes), rope)
        keys = own if prefix is None else concat_kv(prefix, own)
        x = gated_add(x, self.self_attn.attend(q, keys, self_attn_mask), e[2], sizes)
        x = x + self.cross_attn(self.norm3(x), context=text).float()
        if after_cross_attn is not None:
            x = after_cross_attn(x)
        h = modulate(self.norm2(x), e[3], e[4], sizes)
        y = self.ffn(h.to(compute_dtype(self.ffn[0])))
        return gated_add(x, y, e[5], sizes), own


class Head(nn.Module):
    """Final modulated LayerNorm and linear projection to ``patch_volume * out_dim`` channels."""

    def __init__(self, dim: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps)
        self.head = nn.Linear(dim, out_channels)
        self.modulation = nn.Parameter(torch.randn(1, HEAD_MODULATIONS, dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor, mod: Modulation) -> torch.Tensor:
        """``x``: float32 ``(batch, tokens, dim)`` -> float32 ``(batch, tokens, out_channels)``."""
        shift, scale = (self.modulation.float()[:, None] + mod.embedding[:, :, None]).unbind(2)
        # The official head runs in float32 (autocast disabled); it is a small matmul.
        return linear_fp32(self.head, modulate(self.norm(x), shift, scale, mod.sizes))
