"""Flow-matching sampling for a batch of independent streams. Imports no model.

:class:`~liveface.engines.diffusion.sampling.flow.FlowMatchSampler` draws the noise of a whole batch
from one generator, so a sample's noise depends on which other samples share its batch. A
streaming engine batches whichever sessions happen to be ready, and a session's frames must not
change with that: here every sample draws its start noise and its re-noising noise from its own
generator, in the same order as ``FlowMatchSampler`` does for a batch of one (so one stream gives
exactly ``FlowMatchSampler``'s result). Same schedules (``euler``, ``distilled``), same timestep
convention, optional guidance through :func:`~liveface.engines.diffusion.sampling.flow.guided`.

No host synchronisation happens in the loop: sigmas are Python floats computed up front.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from liveface.engines.diffusion.sampling.flow import (
    Denoiser,
    SamplerConfig,
    flow_update,
    guided,
    initial_noise,
    sampling_sigmas,
)

#: Called after each denoiser evaluation with the step index (profiling hooks).
StepHook = Callable[[int], None]


class StreamSampler:
    """Runs a :class:`SamplerConfig` schedule with one noise generator per sample."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.sigmas: list[float] = sampling_sigmas(config).tolist()

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def _noise(
        self, shape: tuple[int, ...], generators: Sequence[torch.Generator], device: torch.device
    ) -> torch.Tensor:
        return torch.cat([initial_noise((1, *shape), g, device) for g in generators])

    def sample(
        self,
        denoise: Denoiser,
        shape: tuple[int, ...],
        generators: Sequence[torch.Generator],
        *,
        device: torch.device | str,
        uncond: Denoiser | None = None,
        on_step: StepHook | None = None,
    ) -> torch.Tensor:
        """Denoise fresh noise to clean latents.

        Args:
            denoise: ``denoise(x, timesteps)`` -> velocity; ``x`` ``(batch,) + shape``,
                timesteps ``(batch,)``.
            shape: one sample's shape ``(channels, frames, height, width)``.
            generators: one per sample, on ``device``.
            uncond: unconditional denoiser for guidance (when ``guidance_scale != 1``).
            on_step: called with the step index after each denoiser call.

        Returns:
            float32 ``(batch,) + shape``.
        """
        cfg = self.config
        dev = torch.device(device)
        model = guided(denoise, uncond, cfg.guidance_scale)
        x = self._noise(shape, generators, dev)
        last = len(self.sigmas) - 2
        for i, (s, s_next) in enumerate(itertools.pairwise(self.sigmas)):
            t = torch.full((x.shape[0],), s * cfg.num_train_timesteps, device=dev)
            v = model(x, t).float()
            if on_step is not None:
                on_step(i)
            x = flow_update(
                cfg.kind, x, v, s, s_next, i == last, lambda: self._noise(shape, generators, dev)
            )
        return x
