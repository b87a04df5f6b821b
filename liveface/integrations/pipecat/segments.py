"""The server's speech segments as the pipecat service sees them: TTS responses on their way."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import TTSStoppedFrame


class Segments:
    """Which TTS response is being pushed, and which ones the server has not finished playing.

    A response opens a segment with its first audio and closes it with ``SEGMENT_END``; its
    ``TTSStoppedFrame`` is held until the server's ``PLAYBACK_FINISHED`` for that segment, so
    it travels downstream after the response's last frame, as it would after plain TTS audio.
    """

    def __init__(self) -> None:
        #: Audio was pushed since the last ``SEGMENT_END``.
        self.open = False
        #: Audio queued on the server (seconds), from the latest ``ACK``.
        self.queued_s = 0.0
        # Closed segments not finished playing -> the TTSStoppedFrame to release (or None).
        self._playing: dict[int, TTSStoppedFrame | None] = {}
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def playing(self) -> bool:
        """Some closed segment has not finished playing."""
        return bool(self._playing)

    def audio(self) -> bool:
        """Audio is pushed; True when it opens a new segment."""
        new, self.open = not self.open, True
        return new

    def closed(self, segment: int, stopped: TTSStoppedFrame | None) -> None:
        """The server closed the open segment as ``segment``; hold ``stopped`` until it played."""
        self.open = False
        self._playing[segment] = stopped
        self._drained.clear()

    def finished(self, segment: int | None) -> TTSStoppedFrame | None:
        """The segment has played; returns its held frame (None if none, or unknown segment)."""
        stopped = self._playing.pop(segment, None) if segment is not None else None
        if not self._playing:
            self._drained.set()
        return stopped

    def reset(self) -> None:
        """Forget every segment (barge-in, lost session): held frames are dropped."""
        self.open = False
        self._playing.clear()
        self._drained.set()

    async def drained(self) -> None:
        """Wait until every closed segment has finished playing."""
        await self._drained.wait()
