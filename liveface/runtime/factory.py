"""Build the configured engine. Imports are deferred so that the CPU server never loads torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveface.engines.base import Engine
from liveface.errors import ConfigError
from liveface.runtime.config import ServerConfig

if TYPE_CHECKING:  # torch is imported only when the diffusion engine is asked for
    from liveface.engines.diffusion.engine import DiffusionEngineConfig


def create_engine(config: ServerConfig) -> Engine:
    """The engine named by ``config.engine``, sized and timed from the config.

    Raises:
        ConfigError: unknown engine, or the diffusion engine without a usable checkpoint.
    """
    if config.engine == "warp":
        from liveface.engines.warp import WarpConfig, WarpEngine

        return WarpEngine(
            WarpConfig(
                width=config.width,
                height=config.height,
                fps=config.fps,
                chunk_frames=config.chunk_frames,
                first_chunk_frames=config.chunk_frames,
                lookahead_ms=config.lookahead_ms,
            )
        )
    if config.engine == "diffusion":
        from liveface.engines.diffusion.engine import create_diffusion_engine

        return create_diffusion_engine(diffusion_config(config))
    raise ConfigError(f"unknown engine {config.engine!r}")


def diffusion_config(config: ServerConfig) -> DiffusionEngineConfig:
    """The diffusion engine's part of the server config."""
    from liveface.engines.diffusion.engine import DiffusionEngineConfig

    return DiffusionEngineConfig(
        checkpoint=config.checkpoint,
        width=config.width,
        height=config.height,
        fps=config.fps,
        chunk_frames=config.chunk_frames,
        lookahead_ms=config.lookahead_ms,
        model=config.model,
        fp8=config.fp8,
    )
