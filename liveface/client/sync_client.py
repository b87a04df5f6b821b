"""A blocking ZeroMQ client: the asyncio client run on a private event loop in a thread.

    with SyncClient("tcp://127.0.0.1:5555") as client:
        session = client.open(format="jpeg")
        session.push(pcm_int16, rate=16000)
        session.end_segment()
        for item in session:                # Frame and Event objects until the session closes
            ...

The background loop owns the socket, so pings keep the client alive while the caller blocks or
does slow work, and every call is a request handed to that loop (thread-safe).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np

from liveface.client.async_client import DEFAULT_ADDRESS, AsyncClient, Portrait
from liveface.client.messages import Event, Frame
from liveface.client.remote_session import RemoteSession
from liveface.errors import SessionClosedError

T = TypeVar("T")


class SyncSession:
    """A session seen through :class:`SyncClient`; mirrors :class:`RemoteSession`."""

    def __init__(self, client: SyncClient, remote: RemoteSession) -> None:
        self._client = client
        self.remote = remote
        self.id = remote.id
        self.width, self.height, self.fps = remote.width, remote.height, remote.fps
        self.sample_rate = remote.sample_rate
        self.format = remote.format
        self.characters = remote.characters

    @property
    def closed(self) -> bool:
        return self.remote.closed

    def push(
        self,
        audio: np.ndarray | bytes,
        rate: int,
        fmt: str | None = None,
        channels: int | None = None,
        wait: bool = True,
        character: int | None = None,
    ) -> dict[str, Any] | None:
        """See :meth:`RemoteSession.push`."""
        return self._client._call(self.remote.push(audio, rate, fmt, channels, wait, character))

    def end_segment(self, character: int | None = None) -> int | None:
        return self._client._call(self.remote.end_segment(character))

    def clear(self, character: int | None = None) -> dict[str, Any]:
        return self._client._call(self.remote.clear(character))

    def close(self) -> dict[str, Any]:
        return self._client._call(self.remote.close())

    def next(self, timeout: float | None = None) -> Frame | Event:
        """The next frame or event (TimeoutError after ``timeout`` s; SessionClosedError at end)."""
        return self._client._call(self._next(limit_s=timeout))

    async def _next(self, limit_s: float | None) -> Frame | Event:
        async with asyncio.timeout(limit_s):
            return await self.remote.next()

    def take_ready(self) -> list[Frame | Event]:
        """Everything received and not yet read, without waiting (may be empty)."""
        return self._client._call(self._take_ready())

    async def _take_ready(self) -> list[Frame | Event]:
        return self.remote.take_ready()

    def __iter__(self) -> Iterator[Frame | Event]:
        while True:
            try:
                yield self.next()
            except SessionClosedError:
                return


class SyncClient:
    """Blocking client; the keyword arguments are those of :class:`AsyncClient`.

    Connects on construction; call :meth:`close` (or use ``with``) to stop its thread.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="liveface-zmq-client", daemon=True
        )
        self._thread.start()
        self._client = AsyncClient(address, **kwargs)
        try:
            self._call(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def ping(self) -> list[str]:
        """Round trip to the server; returns the ids of this client's sessions."""
        return self._call(self._client.ping())

    def open(
        self,
        portrait: Portrait | list[Portrait] | None = None,
        prompt: str | None = None,
        options: dict[str, Any] | None = None,
        format: str = "rgb",
        jpeg_quality: int | None = None,
        **scene: Any,
    ) -> SyncSession:
        """Open a session (see :meth:`AsyncClient.open`; ``scene``: its ``characters``,
        ``boxes`` and ``character_audio``)."""
        opening = self._client.open(portrait, prompt, options, format, jpeg_quality, **scene)
        return SyncSession(self, self._call(opening))

    def close(self) -> None:
        """Close the sessions, the socket and the background thread. Idempotent."""
        if self._thread.is_alive():
            try:
                self._call(self._client.aclose())
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
