"""Flow-matching samplers on analytic denoisers (no model involved)."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch

import liveface.engines.diffusion.sampling.flow as sampler_module
from liveface.engines.diffusion.sampling.flow import (
    FlowMatchSampler,
    SamplerConfig,
    guided,
    initial_noise,
    sampling_sigmas,
    shift_sigmas,
)
from liveface.errors import ConfigError

SHAPE = (2, 3, 4, 2, 2)  # (batch, channels, frames, height, width)


def dirac(x0: torch.Tensor):
    """Exact velocity when the data is the single point ``x0``: ``v = (x - x0) / sigma``."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # t: (batch,) or per frame (batch, frames)
        sigma = (
            (t / 1000)[:, None, None, None, None]
            if t.dim() == 1
            else (t / 1000)[:, None, :, None, None]
        )
        return (x - x0) / sigma

    return denoise


def gaussian(a: float):
    """Exact velocity for data ``N(0, a^2)``:
    ``v = x (s - (1 - s) a^2) / ((1 - s)^2 a^2 + s^2)``."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (t / 1000).reshape(-1, *([1] * (x.dim() - 1)))
        return x * (s - (1 - s) * a**2) / ((1 - s) ** 2 * a**2 + s**2)

    return denoise


def noise(seed: int = 0) -> torch.Tensor:
    return initial_noise(SHAPE, torch.Generator().manual_seed(seed))


def test_shift_and_schedules_have_known_values():
    torch.testing.assert_close(
        shift_sigmas(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), 5.0),
        torch.tensor([0.0, 2.5 / 3.0, 1.0], dtype=torch.float64),
    )
    euler = sampling_sigmas(SamplerConfig(kind="euler", steps=4, shift=1.0))
    assert euler.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    distilled = FlowMatchSampler(SamplerConfig(timesteps=(1000, 750, 500, 250), shift=5.0))
    torch.testing.assert_close(
        distilled.timesteps,
        torch.tensor([1000.0, 3750 / 4, 2500 / 3, 625.0], dtype=torch.float64),
    )
    # The default distilled schedule is the uniform 4-level one.
    assert torch.equal(FlowMatchSampler(SamplerConfig()).sigmas, distilled.sigmas)


@pytest.mark.parametrize("kind", ["euler", "distilled"])
def test_a_point_mass_is_recovered_exactly(kind):
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    sampler = FlowMatchSampler(SamplerConfig(kind=kind, steps=4, shift=3.0))
    out = sampler.sample(dirac(x0), noise(), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_euler_on_gaussian_data_follows_the_known_recursion():
    a = 0.5
    config = SamplerConfig(kind="euler", steps=4, shift=2.0)
    out = FlowMatchSampler(config).sample(gaussian(a), noise())
    # Each Euler step multiplies x by 1 + (s' - s) c(s), with c the velocity coefficient.
    s = [2 * u / (1 + u) for u in (1.0, 0.75, 0.5, 0.25)] + [0.0]
    factor = math.prod(
        1 + (s1 - s0) * (s0 - (1 - s0) * a**2) / ((1 - s0) ** 2 * a**2 + s0**2)
        for s0, s1 in itertools.pairwise(s)
    )
    torch.testing.assert_close(out, noise() * factor, atol=1e-6, rtol=1e-5)
    # Many steps converge to the exact flow map, x0 = a * noise.
    fine = FlowMatchSampler(SamplerConfig(kind="euler", steps=400, shift=1.0))
    torch.testing.assert_close(fine.sample(gaussian(a), noise()), a * noise(), atol=1e-4, rtol=1e-2)


def test_guidance_scale_one_is_no_guidance():
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    calls = []

    def uncond(x, t):
        calls.append(t)
        return torch.zeros_like(x)

    config = SamplerConfig(kind="euler", steps=3, guidance_scale=1.0)
    plain = FlowMatchSampler(config).sample(dirac(x0), noise())
    with_uncond = FlowMatchSampler(config).sample(dirac(x0), noise(), uncond=uncond)
    assert torch.equal(plain, with_uncond)
    assert not calls


def test_guidance_combines_the_two_predictions():
    def cond(x, t):
        return torch.full_like(x, 2.0)

    def uncond(x, t):
        return torch.full_like(x, 0.5)

    x = torch.zeros(SHAPE)
    assert torch.equal(guided(cond, uncond, 3.0)(x, torch.zeros(2)), torch.full(SHAPE, 5.0))


def test_clean_frames_stay_clean_at_timestep_zero():
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    reference = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    seen = []
    exact = dirac(x0)

    def denoise(x, t):
        seen.append((x.clone(), t.clone()))
        return exact(x, t.clamp_min(1e-3))  # frames at t = 0 are overwritten anyway

    config = SamplerConfig(kind="distilled", timesteps=(1000, 500))
    out = FlowMatchSampler(config).sample(denoise, noise(), clean=reference, clean_frames=mask)
    m = mask[:, None, :, None, None]
    assert torch.equal(torch.where(m, out, 0), torch.where(m, reference, 0))
    torch.testing.assert_close(torch.where(m, 0, out), torch.where(m, 0, x0), atol=1e-5, rtol=0)
    for x, t in seen:
        assert t.shape == (2, 4)
        assert torch.all(t[mask] == 0)
        assert torch.all(t[~mask] > 0)
        assert torch.equal(torch.where(m, x, 0), torch.where(m, reference, 0))


def test_distilled_noise_is_seeded():
    def denoise(x, t):
        return x * 0.3

    config = SamplerConfig(kind="distilled", steps=4)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return FlowMatchSampler(config).sample(denoise, initial_noise(SHAPE, g), generator=g)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_config_round_trip_and_validation():
    c = SamplerConfig(kind="euler", steps=30, shift=5.0, guidance_scale=4.5)
    assert SamplerConfig.from_json(c.to_json()) == c
    d = SamplerConfig(timesteps=(1000, 750, 500, 250))
    assert SamplerConfig.from_json(d.to_json()) == d
    assert d.num_steps == 4
    with pytest.raises(ConfigError, match="timesteps"):
        SamplerConfig(timesteps=(500, 750))
    with pytest.raises(ConfigError, match="kind"):
        SamplerConfig(kind="ddim")


def test_sampler_imports_no_model():
    tree = ast.parse(Path(sampler_module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # Errors and the shared JSON helpers only: no model, no engine glue.
    assert {m for m in imported if m.startswith("liveface")} <= {
        "liveface.errors",
        "liveface.engines.diffusion.json_config",
    }


def test_cheaper_schedules_drop_guidance_then_halve_steps():
    from liveface.engines.diffusion.sampling.flow import cheaper_schedules, describe_schedule

    cfg = SamplerConfig(kind="distilled", timesteps=(1000, 750, 500, 250), guidance_scale=2.0)
    names = [describe_schedule(c) for c in cheaper_schedules(cfg)]
    assert names == ["4 steps, guidance 2", "4 steps", "2 steps", "1 step"]
    assert cheaper_schedules(cfg)[2].timesteps == (1000.0, 500.0)
    euler = cheaper_schedules(SamplerConfig(kind="euler", steps=8))
    assert [c.steps for c in euler] == [8, 4, 2, 1]
