"""The flow-matching UniPC multistep sampler of the official Wan pipelines (imports no model).

Wan samples with UniPC (predictor-corrector, B(h) = e^h - 1 "bh2", order 2, data prediction,
lower order at the final step) adapted to flow matching: the model predicts the velocity ``v``,
the data prediction is ``x0 = x - sigma v`` and ``alpha = 1 - sigma``. The schedule is the one of
the official ``set_timesteps(steps, shift=shift)``:

- ``sigma_max = 0.999`` (the training schedule's first level, rounded to float32), levels
  ``linspace(sigma_max, 0, steps + 1)[:-1]`` shifted by ``shift s / (1 + (shift - 1) s)``, then 0;
- the model sees the integer timesteps ``int(1000 sigma)`` (truncated), the update uses the
  float32 sigmas.

With ``lambda = log(alpha / sigma)`` and ``h = lambda_next - lambda``, one step is (data
prediction, ``m`` the newest x0 prediction, ``D = (m_prev - m) / r`` with ``r`` the previous step's
relative ``lambda`` distance):

- predictor: ``x' = sigma_next / sigma x - alpha_next (e^-h - 1) m - alpha_next B(h) rho_p D``
  (``rho_p = 1/2``; first-order, ``D`` absent, on the first and the last step);
- corrector (from the second step on, with the new prediction ``m_new`` at ``x'``): the same update
  from the previous point with the coefficients ``rho_c`` solved from the order conditions and the
  extra term ``rho_c[-1] (m_new - m)``.

The step rule is the same for every sample of a batch, so one stream per sample costs nothing here:
UniPC draws no noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from liveface.engines.diffusion.sampling.flow import Denoiser, guided

#: Called after each step with the step index (progress bars).
StepHook = Callable[[int], None]
#: Order of the solver (the official default).
ORDER = 2


def unipc_schedule(
    steps: int, shift: float, num_train_timesteps: int = 1000
) -> tuple[list[float], list[int]]:
    """``(sigmas, timesteps)``: ``steps + 1`` float32-rounded levels ending at 0, and the
    ``steps`` integer timesteps the model sees."""
    if steps < 1 or shift <= 0:
        raise ValueError("steps must be >= 1 and shift > 0")
    sigma_max = float(np.float32(1.0 - 1.0 / num_train_timesteps))
    s = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    timesteps = (s * num_train_timesteps).astype(np.int64).tolist()
    sigmas = np.concatenate([s, [0.0]]).astype(np.float32).astype(np.float64).tolist()
    return sigmas, timesteps


def _lam(sigma: float) -> float:
    """``log(alpha / sigma)`` with ``alpha = 1 - sigma`` (+inf at sigma 0), in float32 as the
    official code computes it."""
    if sigma == 0.0:
        return math.inf
    a, s = np.float32(1.0 - sigma), np.float32(sigma)
    return float(np.log(a, dtype=np.float32) - np.log(s, dtype=np.float32))


def _bh2(
    hh: float, order: int, rks: Sequence[float]
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``h phi_1``, ``B(h)``, the matrix ``R`` (``rks**i`` rows) and vector ``b`` of UniPC."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1 if math.isfinite(hh) else -1.0
    b_h = math.expm1(hh)
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial if math.isfinite(hh) else -1 / factorial
    return h_phi_1, b_h, np.array(rows), np.array(b)


class UniPCSampler:
    """Runs the schedule on a denoiser; the state of one sampling run lives in :meth:`sample`."""

    def __init__(
        self, steps: int, shift: float, guidance_scale: float = 1.0, num_train_timesteps: int = 1000
    ) -> None:
        self.steps = steps
        self.shift = shift
        self.guidance_scale = guidance_scale
        self.num_train_timesteps = num_train_timesteps
        self.sigmas, self.timesteps = unipc_schedule(steps, shift, num_train_timesteps)

    def _update(
        self,
        x: torch.Tensor,
        i: int,
        m: torch.Tensor,
        prev: tuple[torch.Tensor, int] | None,
        order: int,
        correction: torch.Tensor | None,
    ) -> torch.Tensor:
        """From ``x`` at level ``i`` to level ``i + 1`` with the newest prediction ``m``; ``prev``
        is the earlier prediction and its level (order 2); ``correction`` the corrector's new
        prediction (None: predictor)."""
        s0, t = self.sigmas[i], self.sigmas[i + 1]
        lam0 = _lam(s0)
        h = _lam(t) - lam0
        rks, d1 = [], None
        if order == 2 and prev is not None:
            rk = (_lam(self.sigmas[prev[1]]) - lam0) / h
            rks.append(rk)
            d1 = (prev[0] - m) / rk
        rks.append(1.0)
        h_phi_1, b_h, r_mat, b_vec = _bh2(-h, order, rks)
        alpha_t = 1.0 - t
        out = (t / s0) * x - (alpha_t * h_phi_1) * m
        if correction is None:
            if d1 is not None:
                out = out - (alpha_t * b_h * 0.5) * d1
            return out
        rhos = [0.5] if order == 1 else np.linalg.solve(r_mat, b_vec).tolist()
        res = rhos[-1] * (correction - m)
        if d1 is not None:
            res = res + rhos[0] * d1
        return out - (alpha_t * b_h) * res

    def sample(
        self,
        denoise: Denoiser,
        noise: torch.Tensor,
        *,
        uncond: Denoiser | None = None,
        on_step: StepHook | None = None,
    ) -> torch.Tensor:
        """Denoise ``noise`` (sigma 1) to a clean float32 sample of the same shape.

        ``denoise(x, timesteps)`` gets ``timesteps`` ``(batch,)`` (integer values, float dtype).
        """
        model = guided(denoise, uncond, self.guidance_scale)
        x = noise.float()
        b = x.shape[0]
        history: list[tuple[torch.Tensor, int]] = []  # (x0 prediction, level), newest last
        last: tuple[torch.Tensor, int, int] | None = None  # (x before the step, its level, order)
        for i, t in enumerate(self.timesteps):
            v = model(x, torch.full((b,), float(t), device=x.device)).float()
            m = x - self.sigmas[i] * v
            if last is not None:
                x_prev, level, order = last
                newest = history[-1]
                before = history[-2] if len(history) > 1 else None
                x = self._update(x_prev, level, newest[0], before, order, m)
            history = [*history[-1:], (m, i)]
            order = min(ORDER, len(self.timesteps) - i, len(history))
            last = (x, i, order)
            x = self._update(x, i, m, history[-2] if len(history) > 1 else None, order, None)
            if on_step is not None:
                on_step(i)
        return x
