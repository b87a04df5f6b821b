"""Building LiveAvatar engines from a checkpoint folder: one device, or a pipeline of ranks.

``ranks`` 0 runs the DiT in this process (all four steps cycle their caches on one device);
``ranks`` N >= 1 starts N pipeline ranks (:mod:`.parallel`), each loading the DiT with the LoRA on
its own device, and returns N engine *lanes* that share them: each lane gets its own EngineWorker,
so up to N batches are in the pipeline at once (the session side: speech features, VAE, text,
stays in this process; the VAE decodes here, on its own device).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from liveface.engines.base import Engine
from liveface.engines.diffusion.checkpoint.liveavatar import (
    load_liveavatar_dit,
    load_liveavatar_parts,
    locate_liveavatar,
)
from liveface.engines.diffusion.checkpoint.s2v import locate
from liveface.engines.diffusion.dit.s2v.causal import CausalS2V
from liveface.engines.diffusion.engine_liveavatar import (
    BlockDenoiser,
    LiveAvatarEngine,
    LiveAvatarEngineConfig,
    LocalDenoiser,
)
from liveface.engines.diffusion.parallel.group import PipelineConfig, PipelineDenoiser
from liveface.engines.diffusion.streaming.liveavatar import LiveAvatarSampling, StepRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointSource:
    """A rank's model: the S2V DiT of ``root`` with the LoRA merged (picklable)."""

    root: str
    lora: str
    dtype: str | None = None
    fp8: bool = False

    def build(self, device: torch.device) -> CausalS2V:
        dtype = None if self.dtype is None else getattr(torch, self.dtype)
        dit = load_liveavatar_dit(
            locate(self.root), Path(self.lora), device=device, dtype=dtype, fp8=self.fp8
        )
        return CausalS2V(dit)


def create_liveavatar_engines(
    checkpoint: str | Path | None,
    lora: str | Path | None = None,
    *,
    width: int = 704,
    height: int = 384,
    lookahead_ms: int = 0,
    fp8: bool = False,
    ranks: int = 0,
    launcher: str = "spawn",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_batch: int = 4,
    threads: int | None = None,
) -> list[Engine]:
    """LiveAvatar engines for an S2V folder and its LoRA (see the module docstring).

    Raises:
        ConfigError: no S2V folder, parts or the LoRA missing (named), a bad size.
        CheckpointError: a damaged file, or a LoRA that does not fit (keys named).
        EngineError: pipeline ranks that could not start.

    ``threads`` sets the CPU threads of each rank.
    """
    files, lora_path = locate_liveavatar(checkpoint, lora)
    parts = load_liveavatar_parts(files, device=device, dtype=dtype)
    sampling = LiveAvatarSampling()
    config = LiveAvatarEngineConfig(
        width=width, height=height, lookahead_ms=lookahead_ms, max_batch=max_batch,
        sampling=sampling,
    )  # fmt: skip
    denoiser: BlockDenoiser
    if ranks <= 0:
        dit = load_liveavatar_dit(files, lora_path, device=device, dtype=dtype, fp8=fp8)
        denoiser = LocalDenoiser(StepRunner(CausalS2V(dit), sampling, range(sampling.steps)))
        return [LiveAvatarEngine(parts, denoiser, config)]
    name = dtype if isinstance(dtype, str) or dtype is None else str(dtype).removeprefix("torch.")
    source = CheckpointSource(str(files.root), str(lora_path), name, fp8)
    layout = PipelineConfig(ranks=ranks, launcher=launcher, threads=threads)
    pipeline = PipelineDenoiser(source, sampling, layout)
    log.info("LiveAvatar pipeline of %d ranks started (%s)", ranks, launcher)
    return [LiveAvatarEngine(parts, pipeline, config) for _ in range(ranks)]
