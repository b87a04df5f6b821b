"""The causal chunker: cuts a session's audio into engine chunks.

A chunk covering frames ``[f, f + n)`` animates samples ``[start, end)`` with
``start = spec.frame_start(f)`` and ``end = spec.frame_start(f + n)``. It is released only once
the audio up to ``end + spec.lookahead`` has arrived, and its window never holds a sample past
that point: this is the causality guarantee the tests check.
"""

from __future__ import annotations

from collections.abc import Callable

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.pipeline.audio_ring import AudioRing

#: Decides whether ``[start, end)`` holds speech; it may only look at samples before ``limit``.
VoicedFn = Callable[[int, int], bool]


class Chunker:
    """Cuts chunks from an :class:`AudioRing` as audio arrives.

    Args:
        spec: the engine's declaration (chunk sizes, context, lookahead).
        ring: the session's input audio; the chunker only reads it.
        voiced: voice-activity oracle over sample ranges.
    """

    def __init__(self, spec: EngineSpec, ring: AudioRing, voiced: VoicedFn) -> None:
        self.spec = spec
        self._ring = ring
        self._voiced = voiced
        self._index = 0
        self._next_frame = 0
        self.epoch = 0

    @property
    def next_frame(self) -> int:
        """Media-clock index of the first frame of the next chunk."""
        return self._next_frame

    @property
    def next_start(self) -> int:
        """Media-clock sample where the next chunk starts."""
        return self.spec.frame_start(self._next_frame)

    def next_bounds(self) -> tuple[int, int]:
        """``(start, end)`` samples of the next chunk."""
        n = self.spec.chunk_frames_at(self._index)
        return self.spec.frame_start(self._next_frame), self.spec.frame_start(self._next_frame + n)

    def needed_until(self) -> int:
        """The sample index the input must reach before the next chunk can be cut."""
        return self.next_bounds()[1] + self.spec.lookahead

    def pop_ready(self, release_until: int | None = None) -> list[AudioChunk]:
        """Cut every chunk whose audio (plus lookahead) has arrived.

        Args:
            release_until: if given, only chunks ending at or before this sample are cut (used to
                pace audio that arrives faster than real time).
        """
        out: list[AudioChunk] = []
        spec = self.spec
        while True:
            start, end = self.next_bounds()
            limit = end + spec.lookahead
            if limit > self._ring.end:
                break
            if release_until is not None and end > release_until:
                break
            window = self._ring.read(start - spec.left_context, limit)
            n = spec.chunk_frames_at(self._index)
            out.append(
                AudioChunk(
                    index=self._index,
                    first_frame=self._next_frame,
                    num_frames=n,
                    start=start,
                    end=end,
                    window=window,
                    context=spec.left_context,
                    voiced=self._voiced(start, end),
                    epoch=self.epoch,
                )
            )
            self._index += 1
            self._next_frame += n
        return out

    def rewind(self, frame: int) -> None:
        """Restart cutting at ``frame`` (<= the next frame) under a new epoch (barge-in)."""
        if frame > self._next_frame:
            raise ValueError(f"cannot rewind forward to frame {frame} (next is {self._next_frame})")
        self._next_frame = frame
        self.epoch += 1
        # A steady-state chunk follows: the short first chunk is only for the session's start.
        self._index = max(self._index, 1)
