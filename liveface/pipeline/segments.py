"""Speech segments pushed by a client, and the playback events they produce.

A segment opens with the first audio pushed after the previous one ended and closes at
``segment_end``. As the playhead (the audio consumer's position on the media clock) passes a
segment's start and end, ``playback_started`` and ``playback_finished`` are emitted; a ``clear``
finishes the playing segment with ``interrupted=True``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PlaybackKind(enum.Enum):
    STARTED = "playback_started"
    FINISHED = "playback_finished"


@dataclass(frozen=True)
class PlaybackEvent:
    """``position`` is seconds of the segment that were played when the event happened;
    ``character`` is the speaking character of a scene (None in a single-character session)."""

    kind: PlaybackKind
    segment: int
    position: float = 0.0
    interrupted: bool = False
    character: int | None = None


@dataclass
class _Segment:
    id: int
    start: int
    end: int | None = None
    started: bool = False


class SegmentTracker:
    """Tracks segments on a media clock counted in samples at ``sample_rate``; ``character``
    labels the events (a scene's character, None otherwise)."""

    def __init__(self, sample_rate: int, character: int | None = None) -> None:
        self.sample_rate = sample_rate
        self.character = character
        self._segments: list[_Segment] = []
        self._next_id = 0

    @property
    def open(self) -> bool:
        """A segment is being pushed (audio came, its end has not been marked yet)."""
        return bool(self._segments) and self._segments[-1].end is None

    def on_push(self, start: int) -> None:
        """Audio was appended at sample ``start``: opens a segment if none is open."""
        if not self._segments or self._segments[-1].end is not None:
            self._segments.append(_Segment(self._next_id, start))
            self._next_id += 1

    def end_segment(self, end: int) -> int | None:
        """Close the open segment at sample ``end``; returns its id (None if none was open)."""
        if self._segments and self._segments[-1].end is None:
            seg = self._segments[-1]
            seg.end = max(end, seg.start)
            return seg.id
        return None

    def advance(self, playhead: int) -> list[PlaybackEvent]:
        """Events for the playhead having reached sample ``playhead``."""
        events: list[PlaybackEvent] = []
        while self._segments:
            seg = self._segments[0]
            if not seg.started and playhead > seg.start:
                seg.started = True
                events.append(PlaybackEvent(PlaybackKind.STARTED, seg.id, character=self.character))
            if seg.started and seg.end is not None and playhead >= seg.end:
                played = (seg.end - seg.start) / self.sample_rate
                events.append(
                    PlaybackEvent(PlaybackKind.FINISHED, seg.id, played, False, self.character)
                )
                self._segments.pop(0)
                continue
            break
        return events

    def clear(self, playhead: int) -> list[PlaybackEvent]:
        """Drop every queued segment; the one playing finishes as interrupted."""
        events: list[PlaybackEvent] = []
        for seg in self._segments:
            if seg.started:
                played = max(0, playhead - seg.start)
                if seg.end is not None:
                    played = min(played, seg.end - seg.start)
                seconds = played / self.sample_rate
                events.append(
                    PlaybackEvent(PlaybackKind.FINISHED, seg.id, seconds, True, self.character)
                )
        self._segments.clear()
        return events
