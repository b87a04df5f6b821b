"""Which diffusion engine a checkpoint directory makes, sized by the server: one entry point.

``create_diffusion_engine`` detects the model (Soul-style Wan2.2-5B bundle, Wan2.2-S2V-14B, or
LiveAvatar: the S2V folder with ``liveavatar.safetensors`` or ``--lora``) from the directory and
builds :class:`~.engine.DiffusionEngine`, :class:`~.engine_s2v.S2VEngine` or
:class:`~.engine_liveavatar.LiveAvatarEngine`; ``create_diffusion_engines`` returns every engine a
server runs (LiveAvatar over a pipeline of ranks: one lane per rank).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from liveface.engines.base import Engine
from liveface.engines.diffusion.checkpoint.loading import load_bundle
from liveface.engines.diffusion.engine import DiffusionEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffusionEngineConfig:
    """What the server decides for the diffusion engine; the checkpoint decides the rest.

    Attributes:
        checkpoint: the checkpoint directory (layout: :mod:`.checkpoint.bundle`).
        width, height, fps: output video.
        chunk_frames: video frames per chunk, rounded up to whole latent frames.
        lookahead_ms: audio the engine may read past a chunk's end (0: strictly causal).
        model: ``s2v-14b`` (the official Wan2.2-S2V-14B folder, which sets its own fps and clip
            length), ``liveface`` (a ``liveface.json`` bundle) or None: detected from the
            folder's ``config.json``.
        fp8: store the DiT's block weights in FP8 (S2V, LiveAvatar).
        lora: LiveAvatar's LoRA file (default: ``liveavatar.safetensors`` in the folder).
        pipeline_ranks: LiveAvatar pipeline processes (0: the DiT runs in this process).
        pipeline_launcher: ``spawn`` or ``torchrun``.
    """

    checkpoint: str | None
    width: int = 512
    height: int = 512
    fps: int = 25
    chunk_frames: int = 4
    lookahead_ms: int = 0
    model: str | None = None
    fp8: bool = False
    lora: str | None = None
    pipeline_ranks: int = 0
    pipeline_launcher: str = "spawn"


def create_diffusion_engine(
    config: DiffusionEngineConfig,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    profile: bool = False,
) -> Engine:
    """The diffusion engine for ``config.checkpoint``, sized and timed from ``config``.

    Raises:
        ConfigError: no checkpoint, an incomplete one (says what to download and where), or
            sizes the checkpoint cannot produce.
        CheckpointError: a damaged or mismatching file.
    """
    return create_diffusion_engines(
        config, device=device, dtype=dtype, profile=profile, pipeline=False
    )[0]


def is_liveavatar(config: DiffusionEngineConfig) -> bool:
    """LiveAvatar asked for by name, or an S2V folder with the LoRA in it or given."""
    from liveface.engines.diffusion.checkpoint.liveavatar import find_lora
    from liveface.engines.diffusion.checkpoint.s2v import select_model

    if config.model == "liveavatar":
        return True
    kind = select_model(config.checkpoint, config.model)
    return kind == "s2v" and find_lora(config.checkpoint, config.lora) is not None


def create_diffusion_engines(
    config: DiffusionEngineConfig,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    profile: bool = False,
    pipeline: bool = True,
) -> list[Engine]:
    """The engines of :func:`create_diffusion_engine`; LiveAvatar with ``pipeline_ranks`` gives
    one per rank (``pipeline`` False: always one, in this process)."""
    from liveface.engines.diffusion.checkpoint.s2v import select_model

    if is_liveavatar(config):
        from liveface.engines.diffusion.liveavatar_setup import create_liveavatar_engines

        if config.fps != 16:
            log.warning("LiveAvatar renders 16 fps; the configured %d fps is not used", config.fps)
        return create_liveavatar_engines(
            config.checkpoint, config.lora, width=config.width, height=config.height,
            lookahead_ms=config.lookahead_ms, fp8=config.fp8, device=device, dtype=dtype,
            ranks=config.pipeline_ranks if pipeline else 0, launcher=config.pipeline_launcher,
        )  # fmt: skip
    if select_model(config.checkpoint, config.model) == "s2v":
        from liveface.engines.diffusion.engine_s2v import create_s2v_engine

        return [create_s2v_engine(
            config.checkpoint, width=config.width, height=config.height, fps=config.fps,
            lookahead_ms=config.lookahead_ms, fp8=config.fp8, device=device, dtype=dtype,
        )]  # fmt: skip
    bundle = load_bundle(config.checkpoint, device=device, dtype=dtype)
    per_latent = bundle.vae.temporal_ratio
    stream = bundle.manifest.stream.replace(
        chunk_latents=max(1, math.ceil(config.chunk_frames / per_latent))
    )
    rate = bundle.adapter.config.sample_rate
    return [
        DiffusionEngine(
            bundle,
            width=config.width,
            height=config.height,
            fps=config.fps,
            lookahead=config.lookahead_ms * rate // 1000,
            stream=stream,
            profile=profile,
        )
    ]
