"""The few-step Euler schedule LiveAvatar samples with (diffusers' ``FlowMatchEulerDiscrete``).

LiveAvatar builds ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3)`` and asks
for 4 steps. That scheduler's levels are not the uniform shifted ones of
:func:`~.flow.sampling_sigmas`: it spaces the timesteps linearly between its own *shifted* largest
and smallest training levels and shifts them once more, all in float32. For 4 steps with shift 3
that gives timesteps 1000, 857.69, 602.15, 8.93. The update is the plain Euler step of
:func:`~.flow.flow_update` (``x + (sigma_next - sigma) * v``).

This module imports no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from liveface.engines.diffusion.sampling.flow import flow_update


@dataclass(frozen=True)
class EulerSchedule:
    """Timesteps ``(steps,)`` and noise levels ``(steps + 1,)`` (ending at 0), float32."""

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    @property
    def steps(self) -> int:
        return self.timesteps.shape[0]

    def update(self, x: torch.Tensor, flow: torch.Tensor, step: int) -> torch.Tensor:
        """Step ``step``'s Euler update of ``x`` with the predicted ``flow`` (same shapes)."""
        sigma, after = float(self.sigmas[step]), float(self.sigmas[step + 1])
        return flow_update("euler", x, flow, sigma, after, step == self.steps - 1, _no_noise)


def _no_noise() -> torch.Tensor:
    raise AssertionError("the Euler update draws no noise")


def _shift(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def euler_discrete_schedule(
    steps: int, shift: float, num_train_timesteps: int = 1000
) -> EulerSchedule:
    """The schedule of ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)``."""
    if steps < 1 or shift <= 0:
        raise ValueError("steps >= 1 and shift > 0 are required")
    n = num_train_timesteps
    train = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()) / n
    train = _shift(train, shift)
    hi, lo = float(train[0]), float(train[-1])  # already shifted (in float32)
    sig = torch.from_numpy(np.linspace(hi * n, lo * n, steps) / n)  # float64, as numpy's
    sigmas = _shift(sig, shift).to(torch.float32)
    return EulerSchedule(
        timesteps=sigmas * n, sigmas=torch.cat([sigmas, torch.zeros(1, dtype=torch.float32)])
    )
