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
    compile: bool = True

    def build(self, device: torch.device) -> CausalS2V:
        dtype = None if self.dtype is None else getattr(torch, self.dtype)
        dit = load_liveavatar_dit(
            locate(self.root), Path(self.lora), device=device, dtype=dtype, fp8=self.fp8
        )
        causal = CausalS2V(dit)
        if self.compile:
            causal.functions.compile(device)  # CUDA only; eager elsewhere
        return causal


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
    lanes: int | None = None,
    compile: bool = True,
) -> list[Engine]:
    """LiveAvatar engines for an S2V folder and its LoRA (see the module docstring).

    Raises:
        ConfigError: no S2V folder, parts or the LoRA missing (named), a bad size.
        CheckpointError: a damaged file, or a LoRA that does not fit (keys named).
        EngineError: pipeline ranks that could not start.

    ``threads`` sets the CPU threads of each rank. ``lanes`` (without ranks): engines sharing
    the one-device DiT; default 2 on CUDA (decode overlaps denoising), 1 on the CPU.
    ``compile``: compile the blocks' dense parts on CUDA (the CPU runs eagerly); the DiT warms
    up with one block before serving on CUDA.
    """
    files, lora_path = locate_liveavatar(checkpoint, lora)
    parts = load_liveavatar_parts(files, device=device, dtype=dtype)
    sampling = LiveAvatarSampling()
    config = LiveAvatarEngineConfig(
        width=width, height=height, lookahead_ms=lookahead_ms, max_batch=max_batch,
        sampling=sampling,
    )  # fmt: skip
    denoiser: BlockDenoiser
    latent = (height // 8, width // 8)
    name = dtype if isinstance(dtype, str) or dtype is None else str(dtype).removeprefix("torch.")
    source = CheckpointSource(str(files.root), str(lora_path), name, fp8, compile)
    if ranks <= 0:
        causal = source.build(parts.device)
        runner = StepRunner(causal, sampling, range(sampling.steps))
        if causal.functions.steps or parts.device.type == "cuda":
            runner.warm_up(*latent)
        denoiser = LocalDenoiser(runner)
        if lanes is None:
            lanes = 2 if parts.device.type == "cuda" else 1
        return [LiveAvatarEngine(parts, denoiser, config) for _ in range(max(1, lanes))]
    layout = PipelineConfig(ranks=ranks, launcher=launcher, threads=threads, warm_up=latent)
    pipeline = PipelineDenoiser(source, sampling, layout)
    log.info("LiveAvatar pipeline of %d ranks started (%s)", ranks, launcher)
    return [LiveAvatarEngine(parts, pipeline, config) for _ in range(ranks)]
