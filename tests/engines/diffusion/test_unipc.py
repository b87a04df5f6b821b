"""The UniPC sampler against values recorded from the official ``FlowUniPCMultistepScheduler``
(``scripts/reference/record_s2v.py``: the same toy flow, seed and schedules)."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.sampling.unipc import UniPCSampler, unipc_schedule

# (steps, shift): (first timesteps, mean, abs mean, every 2nd value of the final sample)
RECORDED = {
    (40, 3.0): ([999, 991, 982, 973], -0.001760629394, 0.3873361325, [
        -0.7718605995, -0.6147096753, -0.4542112052, -0.3567512035, -0.2130539715,
        -0.0479580089, 0.0347821191, 0.1562972069, 0.307929635, 0.4882175326, 0.5577803254,
        0.6451565027]),
    (6, 5.0): ([999, 961, 908, 833], -0.03033156289, 0.1854659899, [
        0.3909088075, 0.2372098714, 0.1631142497, 0.1539031565, 0.0268670619, 0.0384830832,
        -0.0304512233, -0.0365542844, -0.2159701437, -0.2047006488, -0.2543566823,
        -0.3021132648]),
}  # fmt: skip


def toy_flow(target: torch.Tensor):
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.view(-1, 1, 1)
        return (x - target * torch.cos(tt / 250)) / (tt / 1000 + 0.05) + 0.3 * torch.sin(3 * x)

    return denoise


@pytest.mark.parametrize(("steps", "shift"), sorted(RECORDED))
def test_matches_the_official_scheduler(steps: int, shift: float) -> None:
    first, mean, abs_mean, picks = RECORDED[(steps, shift)]
    sampler = UniPCSampler(steps, shift)
    assert sampler.timesteps[:4] == first
    assert len(sampler.timesteps) == steps
    assert sampler.sigmas[-1] == 0.0
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    seen = []
    out = sampler.sample(toy_flow(torch.linspace(-1, 1, 24).view(2, 3, 4)), x, on_step=seen.append)
    assert seen == list(range(steps))
    assert out.mean().item() == pytest.approx(mean, abs=1e-6)
    assert out.abs().mean().item() == pytest.approx(abs_mean, rel=1e-5)
    assert out.flatten()[::2].tolist() == pytest.approx(picks, abs=1e-5)


def test_guidance_combines_two_denoisers_and_one_step_returns_x0() -> None:
    target = torch.zeros(1, 2)
    sampler = UniPCSampler(1, 3.0)
    noise = torch.ones(1, 2)
    # One step from sigma ~1 to 0 is the x0 prediction x - sigma v.
    v = torch.full((1, 2), 0.5)
    out = sampler.sample(lambda x, t: v, noise)
    torch.testing.assert_close(out, noise - sampler.sigmas[0] * v)
    guided = UniPCSampler(1, 3.0, guidance_scale=3.0)
    out = guided.sample(lambda x, t: v, noise, uncond=lambda x, t: target)
    torch.testing.assert_close(out, noise - guided.sigmas[0] * 3.0 * v)
    with pytest.raises(ValueError, match="steps"):
        unipc_schedule(0, 3.0)
