"""``distill``: the guided many-step teacher -> a few-step student without guidance.

Method: **consistency distillation** (Song et al. 2023) with the guidance folded into the
teacher's ODE solver, as latent consistency models do, on the engine's flow-matching convention.
The student ``f(x, sigma) = x - sigma * v_student(x, sigma)`` predicts the clean latents; for a
training chunk ``x0``, noise ``eps`` and a step ``n`` of the teacher's 25-step (shifted) grid:

    x_n      = (1 - sigma_n) x0 + sigma_n eps
    x_next   = x_n + (sigma_{n+1} - sigma_n) [v_u + w (v_c - v_u)](x_n)   (a guided teacher step)
    loss     = d( f_student(x_n, sigma_n), stopgrad f_ema(x_next, sigma_{n+1}) )

with ``f(x, 0) = x`` at the end of the grid, ``v_c`` / ``v_u`` the teacher with the chunk's audio
and with the zero audio tokens (the engine's guidance), and ``f_ema`` a slowly moving copy of the
student. At every point of a guided teacher trajectory the student so learns the trajectory's end,
and the engine's ``distilled`` sampler (predict ``x0``, re-noise to the next level, 4 levels)
reproduces the teacher's output in 4 calls instead of 2 x 25.

Why this and not DMD2's distribution matching: consistency distillation targets the teacher's own
ODE map, so for a given noise the student's output is the teacher's (which is what can be checked,
chunk by chunk); it needs only the frozen teacher and an EMA copy of the student's trainable
weights next to the shared frozen base (DMD2 adds a trained "fake score" model, a second DiT, and
usually a GAN head), so it fits the same DDP adapter(+LoRA) loop and memory budget; and its
multistep sampler is exactly the engine's ``distilled`` schedule. DMD2 tends to give sharper
one-to-four-step samples at scale, at that cost.

The teacher is the base directory given to ``distill`` (an exported teacher: its adapter, LoRA
merged). The student starts as the teacher; the teacher's and the EMA's weights are kept as plain
tensors and swapped in with :func:`torch.func.functional_call`, so one base DiT serves all three.
"""

from __future__ import annotations

import torch
from torch import nn

from liveface.engines.diffusion.sampling.flow import sampling_sigmas
from liveface.engines.diffusion.streaming.motion import MotionLayout
from liveface.training.batch import Batch
from liveface.training.config import DistillSpec
from liveface.training.model import Models
from liveface.training.objective import Denoiser


class ConsistencyLoss(nn.Module):
    """Per-sample consistency-distillation loss (see the module docstring).

    Args:
        models: the student (its trainable weights start as the teacher's).
        layout, warmup, bf16: as :class:`~.objective.Denoiser`.
        spec: guidance, teacher steps, EMA decay, loss.
    """

    def __init__(
        self, models: Models, layout: MotionLayout, warmup: int, bf16: bool, spec: DistillSpec
    ) -> None:
        super().__init__()
        self.denoiser = Denoiser(models, layout, warmup, bf16)
        self.spec = spec
        self.sigmas: torch.Tensor
        self.register_buffer("sigmas", sampling_sigmas(spec.teacher).float(), persistent=False)
        names = {id(p): n for n, p in self.denoiser.named_parameters()}
        self.names = [names[id(p)] for p in models.trainable().values()]
        params = dict(self.denoiser.named_parameters())
        # The teacher: the student's starting weights, with any fresh LoRA switched off (B = 0).
        self.teacher = {n: params[n].detach().clone() for n in self.names}
        self.ema = {n: t.clone() for n, t in self.teacher.items()}

    def _with(self, weights: dict[str, torch.Tensor], *args: torch.Tensor | Batch) -> torch.Tensor:
        out: torch.Tensor = torch.func.functional_call(self.denoiser, weights, args, strict=False)
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        """float32 ``(B,)`` losses."""
        x0, eps = batch.target, batch.noise
        b = x0.shape[0]
        steps = int(self.sigmas.shape[0]) - 1
        n = (batch.u * steps).long().clamp(0, steps - 1)
        s_n, s_next = self.sigmas[n], self.sigmas[n + 1]
        view = (-1, 1, 1, 1, 1)
        x_n = (1 - s_n.view(view)) * x0 + s_n.view(view) * eps
        ones, zeros = torch.ones(b, device=x0.device), torch.zeros(b, device=x0.device)
        with torch.no_grad():
            both = _repeat(batch, 2)
            v = self._with(
                self.teacher,
                both,
                x_n.repeat(2, 1, 1, 1, 1),
                s_n.repeat(2),
                torch.cat([ones, zeros]),
            )
            v_c, v_u = v[:b], v[b:]
            guided = v_u + self.spec.guidance_scale * (v_c - v_u)
            x_next = x_n + (s_next - s_n).view(view) * guided
            v_ema = self._with(self.ema, batch, x_next, s_next, ones)
            target = x_next - s_next.view(view) * v_ema  # f(x, 0) = x at the grid's end
        pred = x_n - s_n.view(view) * self.denoiser(batch, x_n, s_n, ones)
        d = (pred - target).pow(2)
        if self.spec.huber > 0:
            c = self.spec.huber
            d = (d + c * c).sqrt() - c
        return d.mean(dim=(1, 2, 3, 4))

    @torch.no_grad()
    def after_step(self) -> None:
        """Move the EMA copy towards the student."""
        params = dict(self.denoiser.named_parameters())
        for n, t in self.ema.items():
            t.lerp_(params[n].detach().to(t.dtype), 1 - self.spec.ema)

    def extra_state(self) -> dict[str, torch.Tensor]:
        out = {f"ema.{n}": t.detach().float().cpu().contiguous() for n, t in self.ema.items()}
        out.update(
            {f"teacher.{n}": t.detach().float().cpu().contiguous() for n, t in self.teacher.items()}
        )
        return out

    @torch.no_grad()
    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            self.ema[n].copy_(state[f"ema.{n}"])
            self.teacher[n].copy_(state[f"teacher.{n}"])


def _repeat(batch: Batch, times: int) -> Batch:
    from dataclasses import fields

    return Batch(**{f.name: torch.cat([getattr(batch, f.name)] * times) for f in fields(batch)})
