"""The process-wide runtime: one engine, its worker, the session registry and the metrics.

HTTP/WebRTC and ZeroMQ share one Runtime, so sessions of both transports are batched together on the
one EngineWorker and count against one session limit.
"""

from __future__ import annotations

import time

import numpy as np

from liveface.engines.base import Engine
from liveface.pipeline.resample import StreamingResampler
from liveface.runtime.config import ServerConfig
from liveface.runtime.degrade import DegradeConfig
from liveface.runtime.metrics import Metrics
from liveface.runtime.registry import SessionRegistry
from liveface.runtime.worker import EngineWorker


class Runtime:
    """Owns the engine worker; ``start()`` then ``await aclose()``.

    Args:
        config: the server config.
        engine: the engine (built by the caller; tests pass their own).
        default_portrait: RGB ``(h, w, 3)`` used when a client sends none (None: the engine's own).
    """

    def __init__(
        self, config: ServerConfig, engine: Engine, default_portrait: np.ndarray | None = None
    ) -> None:
        self.config = config
        self.engine = engine
        self.default_portrait = default_portrait
        self.metrics = Metrics()
        self.worker = EngineWorker(
            engine,
            self.metrics,
            degrade=DegradeConfig(high=config.degrade_high, low=config.degrade_low),
        )
        self.registry = SessionRegistry(config.max_sessions, self.metrics)
        self.started = time.monotonic()

    def start(self) -> None:
        """Warm the engine up, then start its worker.

        One throw-away session on the default portrait: it fails early on a bad default
        portrait, and pays the engine's one-time costs (imports of native libraries, which hold
        the GIL and would otherwise stall every live session's event loop when the first client
        arrives).
        """
        self.engine.close(self.engine.open(self.default_portrait, None, {}))
        StreamingResampler(48000, self.engine.spec.sample_rate)  # imports its filter design
        self.worker.start()

    async def aclose(self) -> None:
        """End every session, stop the worker, release the engine."""
        await self.registry.aclose_all()
        self.worker.stop()
        self.engine.shutdown()
