"""Build the configured engine. Imports are deferred so that the CPU server never loads torch."""

from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from liveface.engines.base import Engine
from liveface.errors import ConfigError
from liveface.runtime.config import ServerConfig

if TYPE_CHECKING:  # torch is imported only when the diffusion engine is asked for
    from liveface.engines.diffusion.factory import DiffusionEngineConfig


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
        from liveface.engines.diffusion.factory import create_diffusion_engine

        return create_diffusion_engine(diffusion_config(config))
    raise ConfigError(f"unknown engine {config.engine!r}")


def diffusion_config(config: ServerConfig) -> DiffusionEngineConfig:
    """The diffusion engine's part of the server config."""
    from liveface.engines.diffusion.factory import DiffusionEngineConfig

    return DiffusionEngineConfig(
        checkpoint=config.checkpoint,
        width=config.width,
        height=config.height,
        fps=config.fps,
        chunk_frames=config.chunk_frames,
        lookahead_ms=config.lookahead_ms,
        model=config.model,
        fp8=config.fp8,
        lora=config.lora,
        pipeline_ranks=config.pipeline_ranks,
        pipeline_launcher=config.pipeline_launcher,
    )


def create_engines(config: ServerConfig) -> list[Engine]:
    """The engines a server runs: one in this process, or ``config.processes()`` children.

    Children start in parallel (each imports its native libraries and builds its engine).

    Raises:
        ConfigError: as :func:`create_engine`; EngineError when a child cannot start.
    """
    n = config.processes()
    if n == 0 and config.engine == "diffusion":
        from liveface.engines.diffusion.factory import create_diffusion_engines

        return create_diffusion_engines(diffusion_config(config))  # LiveAvatar: one per rank
    if n == 0:
        return [create_engine(config)]
    from liveface.runtime.engine_process import ProcessEngine

    inner = dataclasses.replace(config, engine_processes=0)
    factory = functools.partial(create_engine, inner)
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(ProcessEngine, factory, f"engine-{i}") for i in range(n)]
        engines: list[Engine] = []
        errors: list[BaseException] = []
        for f in futures:
            try:
                engines.append(f.result())
            except BaseException as e:
                errors.append(e)
    if errors:
        for engine in engines:
            engine.shutdown()
        raise errors[0]
    return engines
