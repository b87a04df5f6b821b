"""Deterministic weights and inputs shared by the S2V reference tests and
``scripts/reference/record_s2v.py`` (which loads the same values into the official modules)."""

from __future__ import annotations

import math

import torch


def fill_pattern(module: torch.nn.Module, gain: float = 1.0, bias: float = 0.05) -> None:
    """:func:`pattern_state` loaded into ``module``."""
    state = module.state_dict()
    values = pattern_state({k: tuple(v.shape) for k, v in state.items()}, gain, bias)
    with torch.no_grad():
        for name, p in state.items():
            p.copy_(values[name].to(p.dtype))


def pattern_state(
    shapes: dict[str, tuple[int, ...]], gain: float = 1.0, bias: float = 0.05
) -> dict[str, torch.Tensor]:
    """A float64 sine pattern for every named shape, in sorted key order.

    Matrices get ``gain / sqrt(fan_in)``; vectors named ``weight`` (norm scales) ``1 + 0.1 x``;
    other vectors ``bias x``; the audio layer weights ``0.5 + 0.3 x`` (positive before the SiLU, so
    their normalising sum stays away from zero)."""
    out = {}
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        w = torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * 0.61 + i).view(shape)
        if name.endswith("casual_audio_encoder.weights"):
            out[name] = 0.5 + 0.3 * w
        elif len(shape) == 1 and name.endswith("weight"):
            out[name] = 1.0 + 0.1 * w
        elif len(shape) == 1:
            out[name] = bias * w
        else:
            out[name] = w * (gain / math.prod(shape[1:]) ** 0.5)
    return out


def wave(shape: tuple[int, ...], freq: float, phase: float = 0.0) -> torch.Tensor:
    """float32 ``sin(freq * i + phase)`` over ``shape``."""
    i = torch.arange(math.prod(shape), dtype=torch.float64)
    return torch.sin(i * freq + phase).view(shape).float()
