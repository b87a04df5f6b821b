"""Which diffusion engine a checkpoint directory makes, sized by the server: one entry point.

``create_diffusion_engine`` detects the model (Soul-style Wan2.2-5B bundle or Wan2.2-S2V-14B) from
the directory and builds :class:`~.engine.DiffusionEngine` or :class:`~.engine_s2v.S2VEngine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from liveface.engines.base import Engine
from liveface.engines.diffusion.checkpoint.loading import load_bundle
from liveface.engines.diffusion.engine import DiffusionEngine


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
        fp8: store the DiT's block weights in FP8 (S2V).
    """

    checkpoint: str | None
    width: int = 512
    height: int = 512
    fps: int = 25
    chunk_frames: int = 4
    lookahead_ms: int = 0
    model: str | None = None
    fp8: bool = False


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
    from liveface.engines.diffusion.checkpoint.s2v import select_model

    if select_model(config.checkpoint, config.model) == "s2v":
        from liveface.engines.diffusion.engine_s2v import create_s2v_engine

        return create_s2v_engine(
            config.checkpoint, width=config.width, height=config.height, fps=config.fps,
            lookahead_ms=config.lookahead_ms, fp8=config.fp8, device=device, dtype=dtype,
        )  # fmt: skip
    bundle = load_bundle(config.checkpoint, device=device, dtype=dtype)
    per_latent = bundle.vae.temporal_ratio
    stream = bundle.manifest.stream.replace(
        chunk_latents=max(1, math.ceil(config.chunk_frames / per_latent))
    )
    rate = bundle.adapter.config.sample_rate
    return DiffusionEngine(
        bundle,
        width=config.width,
        height=config.height,
        fps=config.fps,
        lookahead=config.lookahead_ms * rate // 1000,
        stream=stream,
        profile=profile,
    )
