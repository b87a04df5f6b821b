"""Normalisations and attention layers of the DiT (names follow the official Wan checkpoint).

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`, which picks
the flash / memory-efficient kernels on CUDA. Projections run in the weights' dtype; norms run in
float32 and return the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from liveface.engines.diffusion.dit.rope import RotaryTables, apply_rotary


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in (its weight's, or an FP8 layer's compute dtype)."""
    dtype = getattr(layer, "compute_dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight.dtype


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension with a learned scale ``weight`` ``(dim,)``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., dim)`` -> same shape and dtype."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


class FP32LayerNorm(nn.Module):
    """LayerNorm computed in float32; ``weight``/``bias`` ``(dim,)`` only when ``affine``."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., dim)`` -> float32 of the same shape."""
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), (self.dim,), w, b, self.eps)


@dataclass(frozen=True)
class KeyValue:
    """Projected keys and values of a context, ``(batch, heads, context_tokens, head_dim)`` each.

    A context that stays fixed for a whole session (the prompt) is projected once and reused by
    every denoising step and chunk.
    """

    k: torch.Tensor
    v: torch.Tensor


class Attention(nn.Module):
    """Multi-head attention with ``q, k, v, o`` projections and optional RMS qk-norm.

    Used as self-attention (keys from ``x``, rotary positions applied) and as cross-attention
    (keys from a context, no positions). The qk-norm normalises across all heads at once
    (``norm_q``/``norm_k`` have ``dim`` weights), as in Wan.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qk_norm: bool = True,
        eps: float = 1e-6,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        kv_in = dim if context_dim is None else context_dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_in, dim)
        self.v = nn.Linear(kv_in, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q: nn.Module = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k: nn.Module = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def project_context(self, context: torch.Tensor) -> KeyValue:
        """``context``: ``(batch, context_tokens, context_dim)`` -> keys and values."""
        context = context.to(compute_dtype(self.k))
        k = self._heads(self.norm_k(self.k(context))).transpose(1, 2)
        v = self._heads(self.v(context)).transpose(1, 2)
        return KeyValue(k=k, v=v)

    def self_projections(
        self, x: torch.Tensor, rope: RotaryTables | None = None
    ) -> tuple[torch.Tensor, KeyValue]:
        """Queries, keys and values of ``x`` attending to itself (rotary positions applied).

        Args:
            x: ``(batch, tokens, dim)``.

        Returns:
            queries ``(batch, heads, tokens, head_dim)`` and the tokens' :class:`KeyValue`.
        """
        x = x.to(compute_dtype(self.q))
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(x)))
        v = self._heads(self.v(x))
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        return q.transpose(1, 2), KeyValue(k=k.transpose(1, 2), v=v.transpose(1, 2))

    def attend(
        self, q: torch.Tensor, kv: KeyValue, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``q`` ``(batch, heads, tokens, head_dim)`` over ``kv`` -> ``(batch, tokens, dim)``."""
        out = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask)
        return self.o(out.transpose(1, 2).flatten(2))

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: RotaryTables | None = None,
        context: torch.Tensor | KeyValue | None = None,
        mask: torch.Tensor | None = None,
        prefix: KeyValue | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` to itself (``context=None``) or to a context.

        Args:
            x: ``(batch, tokens, dim)``.
            rope: rotary tables for self-attention (ignored for cross-attention).
            context: ``(batch, context_tokens, context_dim)`` or its projected :class:`KeyValue`.
            mask: optional bool ``(tokens, key_tokens)``, True where attending is allowed; with a
                ``prefix`` the key tokens are the prefix's followed by ``x``'s.
            prefix: self-attention only: keys/values ``(batch, heads, prefix_tokens, head_dim)``
                of tokens computed earlier (conditioning frames) that ``x`` also attends to.

        Returns:
            ``(batch, tokens, dim)`` in the weights' dtype.
        """
        if context is None:
            q, kv = self.self_projections(x, rope)
            if prefix is not None:
                kv = concat_kv(prefix, kv)
        else:
            x = x.to(compute_dtype(self.q))
            q = self._heads(self.norm_q(self.q(x))).transpose(1, 2)
            kv = context if isinstance(context, KeyValue) else self.project_context(context)
        return self.attend(q, kv, mask)


def concat_kv(first: KeyValue, second: KeyValue) -> KeyValue:
    """Keys/values of ``first``'s tokens followed by ``second``'s (along the token axis)."""
    k = torch.cat([first.k, second.k], dim=2)
    return KeyValue(k=k, v=torch.cat([first.v, second.v], dim=2))
