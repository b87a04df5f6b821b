"""Flow-matching samplers. This module imports no model: it drives any denoiser callable.

Conventions (Wan / rectified flow): ``x_sigma = (1 - sigma) * x0 + sigma * noise`` with ``sigma``
from 1 (noise) to 0 (data); the denoiser predicts the velocity ``v = noise - x0`` and is called with
timesteps ``t = sigma * num_train_timesteps``. The timestep shift
``shift * s / (1 + (shift - 1) * s)`` spends more steps at high noise.

Two schedules:

- ``euler``: the classic many-step ODE solver ``x <- x + (sigma_next - sigma) * v``, with optional
  classifier-free guidance;
- ``distilled``: few-step sampling of step-distilled models (e.g. levels 1000, 750, 500, 250):
  predict ``x0 = x - sigma * v`` and re-noise it with fresh seeded noise to the next level.

Clean conditioning frames (a reference latent, motion frames) are supported with ``clean`` and
``clean_frames``: they are written back before every call and get timestep 0, so the denoiser gets
per-frame timesteps ``(batch, frames)``. Callers that want per-token timesteps do it themselves.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from liveface.engines.diffusion.json_config import build, parse_object
from liveface.errors import ConfigError

#: ``denoise(x, timesteps) -> velocity``; ``x`` ``(batch, channels, frames, height, width)``,
#: ``timesteps`` ``(batch,)`` or ``(batch, frames)``.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLER_KINDS = ("euler", "distilled")


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Apply the flow-matching timestep shift to noise levels in ``[0, 1]``."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class SamplerConfig:
    """Which schedule, how many steps and how much guidance.

    Attributes:
        kind: ``euler`` or ``distilled``.
        steps: denoiser calls per sample (per guidance branch); ignored when ``timesteps`` is set.
        shift: timestep shift (1 = none; Wan2.2 TI2V samples with 5).
        timesteps: explicit levels in ``(0, num_train_timesteps]``, decreasing (the distilled
            list, e.g. ``(1000, 750, 500, 250)``); shifted like the uniform ones.
        guidance_scale: classifier-free guidance; 1 calls only the conditional denoiser.
        num_train_timesteps: timestep scale of the model.
    """

    kind: str = "distilled"
    steps: int = 4
    shift: float = 5.0
    timesteps: tuple[float, ...] | None = None
    guidance_scale: float = 1.0
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(float(t) for t in self.timesteps))
        problems = []
        if self.kind not in SAMPLER_KINDS:
            problems.append(f"kind must be one of {', '.join(SAMPLER_KINDS)}")
        if self.steps <= 0:
            problems.append("steps must be positive")
        if self.shift <= 0:
            problems.append("shift must be positive")
        if self.guidance_scale < 0:
            problems.append("guidance_scale must be >= 0")
        ts = self.timesteps
        if ts is not None and (
            not ts
            or any(not 0 < t <= self.num_train_timesteps for t in ts)
            or any(a <= b for a, b in itertools.pairwise(ts))
        ):
            problems.append(
                f"timesteps must decrease strictly within (0, {self.num_train_timesteps}]"
            )
        if problems:
            raise ConfigError("invalid sampler config: " + "; ".join(problems))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps) if self.timesteps is not None else self.steps

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["timesteps"] = None if self.timesteps is None else list(self.timesteps)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplerConfig:
        return build(cls, data, "sampler")

    @classmethod
    def from_json(cls, text: str) -> SamplerConfig:
        return cls.from_dict(parse_object(text, "sampler"))


def cheaper_schedules(config: SamplerConfig) -> list[SamplerConfig]:
    """The schedule and cheaper variants of it, best first, for graceful degradation.

    Guidance is dropped first (it doubles the denoiser calls), then the steps are halved down to
    one; an explicit distilled timestep list keeps every other level, always its first (the pure
    noise level), so each variant stays a valid predict-x0-then-re-noise schedule.
    """
    out = [config]
    cur = config
    if cur.guidance_scale != 1.0:
        cur = dataclasses.replace(cur, guidance_scale=1.0)
        out.append(cur)
    while True:
        if cur.timesteps is not None:
            if len(cur.timesteps) == 1:
                break
            cur = dataclasses.replace(cur, timesteps=cur.timesteps[::2])
        else:
            if cur.steps == 1:
                break
            cur = dataclasses.replace(cur, steps=cur.steps // 2)
        out.append(cur)
    return out


def describe_schedule(config: SamplerConfig) -> str:
    """``"4 steps"``, ``"2 steps, guidance 3.5"``: a quality level's name."""
    steps = len(config.timesteps) if config.timesteps is not None else config.steps
    text = f"{steps} step{'s' if steps != 1 else ''}"
    return text if config.guidance_scale == 1.0 else f"{text}, guidance {config.guidance_scale:g}"


def sampling_sigmas(config: SamplerConfig) -> torch.Tensor:
    """Noise levels ``(num_steps + 1,)`` float64, decreasing, ending at 0."""
    if config.timesteps is not None:
        base = torch.tensor(config.timesteps, dtype=torch.float64) / config.num_train_timesteps
    else:
        base = torch.linspace(1.0, 0.0, config.steps + 1, dtype=torch.float64)[:-1]
    return torch.cat([shift_sigmas(base, config.shift), torch.zeros(1, dtype=torch.float64)])


def initial_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """float32 Gaussian noise of ``shape`` drawn from ``generator`` (seeded per session)."""
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def guided(cond: Denoiser, uncond: Denoiser | None, scale: float) -> Denoiser:
    """Classifier-free guidance ``v_u + scale * (v_c - v_u)``; scale 1 (or no ``uncond``) is
    exactly the conditional denoiser and costs one call."""
    if uncond is None or scale == 1.0:
        return cond

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_u = uncond(x, t).float()
        return v_u + scale * (cond(x, t).float() - v_u)

    return denoise


def flow_update(
    kind: str,
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: float,
    sigma_next: float,
    last: bool,
    renoise: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """One step of a schedule, the update rule every sampler here shares.

    ``euler``: ``x + (sigma_next - sigma) * v``. ``distilled``: predict ``x0 = x - sigma * v`` and,
    unless this is the ``last`` step, re-noise it to ``sigma_next`` with ``renoise()`` (fresh noise
    of ``x``'s shape, drawn only when needed so that generators advance as the schedule says).
    """
    if kind == "euler":
        return x + (sigma_next - sigma) * v
    x0 = x - sigma * v
    if last:
        return x0
    return (1 - sigma_next) * x0 + sigma_next * renoise()


class FlowMatchSampler:
    """Runs a :class:`SamplerConfig` schedule with a denoiser callable."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.sigmas = sampling_sigmas(config)

    @property
    def timesteps(self) -> torch.Tensor:
        """Timesteps the denoiser sees, ``(num_steps,)`` float64."""
        return self.sigmas[:-1] * self.config.num_train_timesteps

    def sample(
        self,
        denoise: Denoiser,
        noise: torch.Tensor,
        *,
        uncond: Denoiser | None = None,
        clean: torch.Tensor | None = None,
        clean_frames: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoise ``noise`` to a clean sample.

        Args:
            denoise: conditional denoiser.
            noise: ``(batch, channels, frames, height, width)`` start noise (sigma = 1).
            uncond: unconditional denoiser for guidance (used when ``guidance_scale != 1``).
            clean: latents of the conditioning frames, same shape as ``noise``.
            clean_frames: bool ``(batch, frames)``, True where ``clean`` holds a conditioning frame.
            generator: source of the re-noising noise of the distilled schedule.

        Returns:
            float32 ``(batch, channels, frames, height, width)``; conditioning frames equal
            ``clean`` there.
        """
        cfg = self.config
        model = guided(denoise, uncond, cfg.guidance_scale)
        x = noise.float()
        b, frames = x.shape[0], x.shape[2]
        mask = None
        if clean_frames is not None:
            if clean is None or clean.shape != noise.shape:
                raise ValueError("clean_frames needs clean latents of the noise's shape")
            if tuple(clean_frames.shape) != (b, frames):
                raise ValueError(f"clean_frames must be (batch, frames) = {(b, frames)}")
            mask = clean_frames.to(x.device, torch.bool)
        clean32 = None if clean is None else clean.to(x.device, torch.float32)
        sigmas = self.sigmas.tolist()
        for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
            x = self._put_clean(x, clean32, mask)
            t = torch.full((b,), s * cfg.num_train_timesteps, device=x.device)
            if mask is not None:
                t = t[:, None].masked_fill(mask, 0.0)
            v = model(x, t).float()
            x = flow_update(
                cfg.kind, x, v, s, s_next, i == len(sigmas) - 2,
                lambda: initial_noise(tuple(noise.shape), generator, noise.device),
            )  # fmt: skip
        return self._put_clean(x, clean32, mask)

    @staticmethod
    def _put_clean(
        x: torch.Tensor, clean: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if mask is None or clean is None:
            return x
        return torch.where(mask[:, None, :, None, None], clean, x)
