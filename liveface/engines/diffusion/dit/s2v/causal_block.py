"""One DiT block of LiveAvatar's causal forward, as two functions around its self-attention.

:func:`pre_attention` (modulated norm, q/k/v projections, RoPE) and :func:`post_attention`
(output projection, text cross-attention, feed-forward) have fixed shapes for a given batch and
resolution, while the attention between them reads caches of a length that grows until the ring
wraps. So these two are what gets compiled (:class:`BlockFunctions` with a
:class:`~liveface.engines.diffusion.backends.compiled.CompileConfig`): the block module is an
argument, so every block of the model shares one compiled graph (its weights are graph inputs;
FP8 weights are dequantised inside it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from liveface.engines.diffusion.backends.compiled import CompileConfig, CompiledStep, Compiler
from liveface.engines.diffusion.dit.attention import KeyValue, compute_dtype
from liveface.engines.diffusion.dit.blocks import DiTBlock, gated_add, modulate
from liveface.engines.diffusion.dit.rope import RotaryTables, apply_rotary

#: Regions are called per block, so CUDA graphs would not remove much host time; matmul tuning does.
DEFAULT_COMPILE = CompileConfig(mode="max-autotune-no-cudagraphs", allow_new_shapes=True)


def _modulations(block: DiTBlock, projected: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The block's six ``(batch, 1, dim)`` modulation vectors from ``(batch, 1, 6, dim)``."""
    return (block.modulation.float()[:, None] + projected).unbind(dim=2)


def pre_attention(
    block: DiTBlock, x: torch.Tensor, projected: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys, values and the keys before RoPE, each ``(batch, heads, tokens, head_dim)``,
    of the float32 residual stream ``x`` ``(batch, tokens, dim)``."""
    e = _modulations(block, projected)
    attn = block.self_attn
    h = modulate(block.norm1(x), e[0], e[1]).to(compute_dtype(attn.q))
    heads = (attn.num_heads, attn.head_dim)
    q = attn.norm_q(attn.q(h)).unflatten(-1, heads)
    k = attn.norm_k(attn.k(h)).unflatten(-1, heads)
    v = attn.v(h).unflatten(-1, heads)
    tables = RotaryTables(cos=cos, sin=sin)
    qr, kr = apply_rotary(q, tables), apply_rotary(k, tables)
    return qr.transpose(1, 2), kr.transpose(1, 2), v.transpose(1, 2), k.transpose(1, 2)


def post_attention(
    block: DiTBlock,
    x: torch.Tensor,
    out: torch.Tensor,
    projected: torch.Tensor,
    text_k: torch.Tensor,
    text_v: torch.Tensor,
    cross_round: torch.dtype | None,
) -> torch.Tensor:
    """The rest of the block after its self-attention ``out`` ``(batch, heads, tokens,
    head_dim)``; returns the float32 residual stream, rounded to the weights' dtype (their block
    ends with ``type_as`` the weights)."""
    e = _modulations(block, projected)
    x = gated_add(x, block.self_attn.o(out.transpose(1, 2).flatten(2)), e[2])
    if cross_round is None:
        h = block.norm3(x)
    else:  # their block casts to bfloat16 before the norm (a hard-coded cast), then again after
        h = block.norm3(x.to(cross_round).float()).to(cross_round)
    x = x + block.cross_attn(h, context=KeyValue(text_k, text_v)).float()
    h = modulate(block.norm2(x), e[3], e[4])
    x = gated_add(x, block.ffn(h.to(compute_dtype(block.ffn[0]))), e[5])
    return x.to(compute_dtype(block.ffn[2])).float()


class BlockFunctions:
    """:func:`pre_attention` and :func:`post_attention`, eager or compiled."""

    def __init__(self) -> None:
        self.steps: dict[str, CompiledStep] = {}

    @property
    def compiled(self) -> bool:
        return any(s.compiled for s in self.steps.values())

    def pre(self, *args: Any) -> Any:
        return self._call("pre", pre_attention, args)

    def post(self, *args: Any) -> Any:
        return self._call("post", post_attention, args)

    def _call(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        step = self.steps.get(name)
        if step is None:
            return fn(*args)
        if step.warmup_seconds is None:  # the first call compiles (engines warm up at start)
            return step.warm_up(*args)
        return step(*args)

    def compile(
        self,
        device: torch.device,
        config: CompileConfig | None = None,
        *,
        compiler: Compiler | None = None,
        cpu: bool = False,
    ) -> str | None:
        """Compile both functions for ``device`` (at their first call); returns why not, or None.

        On the CPU compilation is skipped unless ``cpu`` (inductor's C++ build takes minutes
        there and gains little); a missing toolchain or a failing compile falls back to eager
        PyTorch, logged.
        """
        if device.type != "cuda" and not cpu:
            return "compilation is for CUDA devices (pass cpu=True to compile for the CPU)"
        cfg = config or DEFAULT_COMPILE
        self.steps = {
            name: CompiledStep(fn, cfg, device=device, name=f"LiveAvatar {name}-attention",
                               compiler=compiler)
            for name, fn in (("pre", pre_attention), ("post", post_attention))
        }  # fmt: skip
        return None
