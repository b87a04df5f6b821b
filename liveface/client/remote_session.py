"""A session on the server as its client sees it: requests out, frames and events in."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from liveface.client.messages import Event, Frame
from liveface.errors import SessionClosedError
from liveface.protocol.messages import MsgType

if TYPE_CHECKING:
    from liveface.client.async_client import AsyncClient

_DTYPE_FORMATS = {
    np.dtype("float32"): "f32le",
    np.dtype("int16"): "s16le",
    np.dtype("int32"): "s32le",
}


class RemoteSession:
    """A session on the server, as seen by its client. Created by :meth:`AsyncClient.open`."""

    def __init__(self, client: AsyncClient, opened: dict[str, Any], queue_size: int) -> None:
        self._client = client
        self.id: str = opened["session"]
        self.width: int = opened["width"]
        self.height: int = opened["height"]
        self.fps: int = opened["fps"]
        self.sample_rate: int = opened["sample_rate"]
        self.format: str = opened["format"]
        self.timeout_s: float = opened["timeout_s"]
        #: The characters (``id``, ``box`` and maybe ``mouth_box``, fractions of the frame);
        #: one filling the frame for a single avatar (and for protocol version 1).
        self.characters: list[dict[str, Any]] = opened.get(
            "characters", [{"id": 0, "box": [0.0, 0.0, 1.0, 1.0]}]
        )
        self.closed = False
        self.close_info: dict[str, Any] | None = None
        #: Frames this client dropped because the application did not read them in time.
        self.dropped_locally = 0
        self._items: deque[Frame | Event] = deque()
        self._limit = max(2, queue_size)
        self._ready = asyncio.Event()
        self._finished = False

    # -- requests ------------------------------------------------------------------------------

    async def push(
        self,
        audio: np.ndarray | bytes,
        rate: int,
        fmt: str | None = None,
        channels: int | None = None,
        wait: bool = True,
        character: int | None = None,
    ) -> dict[str, Any] | None:
        """Send PCM audio; the server resamples it to its rate and paces it.

        Args:
            audio: float32 / int16 / int32 samples, ``(n,)`` or interleaved ``(n, channels)``;
                or raw little-endian bytes with ``fmt`` given.
            rate: the audio's sample rate (8000..192000).
            fmt: ``s16le``, ``s32le`` or ``f32le``; derived from an array's dtype when omitted.
            channels: interleaved channels (averaged to mono by the server).
            wait: wait for the server's ack (``accepted``/``dropped`` samples at the server's rate
                and ``queued_s``, the audio queued but not yet played); None when False.
            character: the scene's character this audio is the voice of (default 0).
        """
        if isinstance(audio, np.ndarray):
            if fmt is None:
                fmt = _DTYPE_FORMATS.get(audio.dtype)
                if fmt is None:
                    audio, fmt = audio.astype(np.float32), "f32le"
            if channels is None:
                channels = audio.shape[1] if audio.ndim == 2 else 1
            dtype = {"f32le": "<f4", "s16le": "<i2", "s32le": "<i4"}[fmt]
            payload = np.ascontiguousarray(audio, dtype=dtype).tobytes()
        else:
            if fmt is None:
                raise ValueError("pass fmt= with raw PCM bytes")
            payload = bytes(audio)
        header = self._header(character)
        header.update(rate=int(rate), format=fmt, channels=channels or 1)
        if not wait:
            await self._client.send(MsgType.AUDIO, header, payload)
            return None
        return (await self._client.request(MsgType.AUDIO, header, payload)).header

    def _header(self, character: int | None) -> dict[str, Any]:
        header: dict[str, Any] = {"session": self.id}
        if character is not None:
            header["character"] = character
        return header

    async def end_segment(self, character: int | None = None) -> int | None:
        """Close the (character's) speech segment being pushed; returns its id (None if none
        was open)."""
        reply = await self._client.request(MsgType.SEGMENT_END, self._header(character))
        segment = reply.header.get("segment")
        return int(segment) if segment is not None else None

    async def clear(self, character: int | None = None) -> dict[str, Any]:
        """Barge-in: the server drops queued audio and frames and returns to idle; with
        ``character``, only that character's queued audio (the others play on)."""
        return (await self._client.request(MsgType.CLEAR, self._header(character))).header

    async def close(self) -> dict[str, Any]:
        """End the session; returns the ``CLOSED`` header (reason and frame counters)."""
        if self.closed:
            return self.close_info or {}
        reply = await self._client.request(MsgType.CLOSE, {"session": self.id})
        return reply.header

    # -- what arrives --------------------------------------------------------------------------

    def _deliver(self, item: Frame | Event) -> None:
        if self._finished:
            return
        if isinstance(item, Event) and item.kind == "closed":
            self.closed = True
            self._finished = True
            self.close_info = item.data
            self._client._forget(self)
        elif isinstance(item, Frame) and len(self._items) >= self._limit:
            oldest = next((x for x in self._items if isinstance(x, Frame)), None)
            if oldest is not None:
                self._items.remove(oldest)
                self.dropped_locally += 1
        self._items.append(item)
        self._ready.set()

    async def next(self) -> Frame | Event:
        """The next frame or event (wrap in ``asyncio.timeout`` to bound the wait).

        Raises:
            SessionClosedError: the session's ``closed`` event was already returned.
        """
        while not self._items:
            if self._finished:
                raise SessionClosedError(f"session {self.id} has ended")
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_ready(self) -> list[Frame | Event]:
        """Everything received and not yet read, without waiting (may be empty)."""
        items = list(self._items)
        self._items.clear()
        return items

    def __aiter__(self) -> RemoteSession:
        return self

    async def __anext__(self) -> Frame | Event:
        try:
            return await self.next()
        except SessionClosedError:
            raise StopAsyncIteration from None
