"""Deterministic weights and inputs shared by the S2V reference tests and
``scripts/reference/record_s2v.py`` (which loads the same values into the official modules)."""

from __future__ import annotations

import math

import torch


def fill_pattern(module: torch.nn.Module, gain: float = 1.0, bias: float = 0.05) -> None:
    """A sine pattern over every tensor of ``module``'s state dict, in sorted key order.

    Matrices get ``gain / sqrt(fan_in)``; vectors named ``weight`` (norm scales) ``1 + 0.1 x``;
    other vectors ``bias x``; the audio layer weights ``0.5 + 0.3 x`` (positive before the SiLU, so
    their normalising sum stays away from zero)."""
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(module.state_dict().items())):
            w = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.61 + i).view(p.shape)
            if name.endswith("casual_audio_encoder.weights"):
                value = 0.5 + 0.3 * w
            elif p.ndim == 1 and name.endswith("weight"):
                value = 1.0 + 0.1 * w
            elif p.ndim == 1:
                value = bias * w
            else:
                value = w * (gain / p[0].numel() ** 0.5)
            p.copy_(value.to(p.dtype))


def wave(shape: tuple[int, ...], freq: float, phase: float = 0.0) -> torch.Tensor:
    """float32 ``sin(freq * i + phase)`` over ``shape``."""
    i = torch.arange(math.prod(shape), dtype=torch.float64)
    return torch.sin(i * freq + phase).view(shape).float()
