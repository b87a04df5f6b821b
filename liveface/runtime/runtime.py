"""The process-wide runtime: one engine, its worker, the session registry and the metrics.

HTTP/WebRTC and ZeroMQ share one Runtime, so sessions of both transports are batched together on the
one EngineWorker, count against one session limit, and are opened in one place:
:meth:`Runtime.open_session` (admission, portrait preparation, start) and ended in one place:
:meth:`Runtime.close_session`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liveface.engines.base import Engine, SceneRequest
from liveface.errors import BadInputError, ConfigError
from liveface.pipeline.compose import compose_portraits
from liveface.pipeline.image import decode_image
from liveface.pipeline.resample import StreamingResampler
from liveface.pipeline.stream import StreamConfig
from liveface.runtime.config import ServerConfig
from liveface.runtime.degrade import DegradeConfig
from liveface.runtime.events import CloseReason, SessionClosed, SessionEvent
from liveface.runtime.memory import trim_heap
from liveface.runtime.metrics import Metrics
from liveface.runtime.registry import SessionRegistry
from liveface.runtime.session import Session, SessionOptions
from liveface.runtime.worker import EngineWorker


@dataclass
class SessionRequest:
    """What a transport received from a client that wants a session.

    Attributes:
        portrait: an encoded image (bytes, decoded off the event loop), an RGB array, or None
            for the server's default portrait; or several of them, composed side by side into
            one scene with one character each (left to right).
        prompt: optional text prompt.
        engine_options: engine-specific per-session options.
        scene: the characters of a scene (found in the portrait, or boxes); None for one avatar
            (or, with several portraits, one character per portrait).
    """

    portrait: bytes | np.ndarray | Sequence[bytes | np.ndarray] | None = None
    prompt: str | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    scene: SceneRequest | None = None


def _decode(portrait: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    return portrait if isinstance(portrait, np.ndarray) else decode_image(bytes(portrait))


def prepare_portrait(
    request: SessionRequest,
) -> tuple[np.ndarray | None, SceneRequest | None]:
    """Decode the request's portrait(s); several are composed into one scene (blocking).

    Raises:
        BadInputError: an unreadable image, or several portraits with boxes or another count.
    """
    portrait, scene = request.portrait, request.scene
    if portrait is None:
        return None, scene
    if isinstance(portrait, bytes | bytearray | memoryview | np.ndarray):
        return _decode(portrait), scene
    images = [_decode(p) for p in portrait]
    if len(images) == 1 and scene is None:
        return images[0], None
    if scene is not None and (scene.boxes or scene.size != len(images)):
        raise BadInputError(
            f"{len(images)} portraits make {len(images)} characters, one each: send no boxes, "
            "and a character count equal to the number of portraits (or none)"
        )
    composed, boxes = compose_portraits(images)
    return composed, SceneRequest(boxes=boxes)


class Runtime:
    """Owns the engine workers; ``start()`` then ``await aclose()``.

    Args:
        config: the server config.
        engines: one engine, or several alike (e.g. one per engine process); each gets its own
            EngineWorker and a new session goes to the least loaded one.
        default_portrait: RGB ``(h, w, 3)`` used when a client sends none (None: the engine's own).
    """

    def __init__(
        self,
        config: ServerConfig,
        engines: Engine | Sequence[Engine],
        default_portrait: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.engines = [engines] if isinstance(engines, Engine) else list(engines)
        if not self.engines:
            raise ConfigError("the runtime needs at least one engine")
        self.engine = self.engines[0]
        if any(e.spec != self.engine.spec for e in self.engines):
            raise ConfigError("the engines of one runtime must declare the same spec")
        self.default_portrait = default_portrait
        self.metrics = Metrics()
        degrade = DegradeConfig(high=config.degrade_high, low=config.degrade_low)
        self.workers = [
            EngineWorker(e, self.metrics, degrade=degrade, name=f"engine-worker-{i}")
            for i, e in enumerate(self.engines)
        ]
        self.registry = SessionRegistry(config.max_sessions, self.metrics)
        self.started = time.monotonic()

    @property
    def healthy(self) -> bool:
        """Every engine worker (and engine process) is running."""
        return all(w.alive for w in self.workers)

    def start(self) -> None:
        """Warm the engines up, then start their workers.

        One throw-away session on the default portrait per engine (in parallel): it fails early
        on a bad default portrait, and pays the engine's one-time costs (imports of native
        libraries, which hold the GIL and would otherwise stall every live session's event loop
        when the first client arrives).
        """

        def warm(engine: Engine) -> None:
            engine.close(engine.open(self.default_portrait, None, {}))

        with ThreadPoolExecutor(len(self.engines)) as pool:
            list(pool.map(warm, self.engines))
        StreamingResampler(48000, self.engine.spec.sample_rate)  # imports its filter design
        for worker in self.workers:
            worker.start()

    async def aclose(self) -> None:
        """End every session, stop the workers, release the engines."""
        await self.registry.aclose_all()
        for worker in self.workers:
            worker.stop()
        for engine in self.engines:
            engine.shutdown()

    def stream_config(self, *, live: bool, max_pending_s: float | None = None) -> StreamConfig:
        """The pipeline settings of a transport: a live microphone, or pushed audio."""
        config = StreamConfig(delay_ms=self.config.delay_ms, live=live)
        if max_pending_s is not None:
            config = dataclasses.replace(config, max_pending_s=max_pending_s)
        return config

    async def open_session(
        self,
        request: SessionRequest,
        stream: StreamConfig,
        on_event: Callable[[SessionEvent], None] | None = None,
    ) -> Session:
        """Admit, prepare the portrait, start: the one way to open a session.

        The slot is taken first, so a full server costs nothing more; the portrait is decoded
        and the engine state opened off the event loop. On any failure nothing is held.

        Raises:
            CapacityError: the server holds its maximum of sessions.
            BadInputError: the portrait or an option is unusable (e.g. :class:`NoFaceError`).
        """
        self.registry.reserve()
        session: Session | None = None
        try:
            loop = asyncio.get_running_loop()
            portrait, scene = await loop.run_in_executor(None, prepare_portrait, request)
            if portrait is None:
                portrait = self.default_portrait
            worker = min(self.workers, key=lambda w: w.sessions)

            def relay(event: SessionEvent) -> None:
                # A session that ends on its own (its engine failed) frees its slot at once.
                if isinstance(event, SessionClosed) and session is not None:
                    self.registry.discard(session)
                if on_event is not None:
                    on_event(event)

            session = Session(worker, stream, on_event=relay)
            await session.start(
                SessionOptions(portrait, request.prompt, dict(request.engine_options), scene)
            )
        except BaseException:
            self.registry.unreserve()
            if session is not None:
                await session.aclose(CloseReason.OPEN_FAILED)
            raise
        self.registry.add(session)
        return session

    async def close_session(self, session: Session, reason: CloseReason) -> None:
        """End a session and free its slot (idempotent)."""
        try:
            await session.aclose(reason)
        finally:
            self.registry.discard(session)
            trim_heap()
