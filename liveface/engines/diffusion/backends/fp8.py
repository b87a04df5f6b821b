"""FP8 weight-only storage for the DiT's block linears (about half the memory of bfloat16).

Each ``nn.Linear`` of the transformer blocks (attention projections, feed-forward, the audio
injector) is replaced by :class:`Fp8Linear`: its weight stored as float8 e4m3 with one float32
scale per tensor, dequantised to the compute dtype right before its matmul
(:func:`~.precision.fp8_matmul` with ``weight_only``). Embeddings, the timestep path, norms and the
head keep their precision. Applied after loading, so checkpoints keep the official keys.
"""

from __future__ import annotations

import torch
from torch import nn

from liveface.engines.diffusion.backends.precision import fp8_support, quantize_fp8
from liveface.errors import ConfigError


class Fp8Linear(nn.Module):
    """A frozen linear layer with an FP8 weight (``weight_fp8``, ``weight_scale``, ``bias``)."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype
        q, scale = quantize_fp8(linear.weight.detach())
        self.register_buffer("weight_fp8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight ``(out_features, in_features)`` in the compute dtype."""
        return (self.weight_fp8.float() * self.weight_scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> ``(..., out_features)`` in the compute dtype."""
        b = None if self.bias is None else self.bias.to(self.compute_dtype)
        return nn.functional.linear(x.to(self.compute_dtype), self.weight, b)


def quantize_dit_linears(dit: nn.Module, device: torch.device | str) -> int:
    """Swap every ``nn.Linear`` under ``dit.blocks`` (and an S2V ``audio_injector``) for an
    :class:`Fp8Linear`; returns how many.

    Raises:
        ConfigError: this torch has no float8 dtype.
    """
    support = fp8_support(device)
    if not support.storage:
        raise ConfigError(f"FP8 weights are not available: {support.reason}")
    count = 0
    roots = [getattr(dit, name) for name in ("blocks", "audio_injector") if hasattr(dit, name)]
    for root in roots:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Fp8Linear(child))
                    count += 1
    return count
