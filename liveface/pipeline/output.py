"""The output buffer: engine results waiting for their media-clock due time.

Video frames are held by frame index and audio by sample range; the video and audio consumers read
independently (each track pulls at its own cadence) from the same clock. Nothing here sleeps.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from liveface.engines.base import EngineSpec, VideoChunk


@dataclass
class OutputStats:
    """Counters a session exports to metrics."""

    frames_out: int = 0
    frames_repeated: int = 0  # due, not there: the last frame was shown again
    frames_late: int = 0  # arrived after their due time and were dropped
    frames_overflow: int = 0  # dropped because the buffer was full
    audio_underrun_samples: int = 0  # due, not there: silence was played


class OutputBuffer:
    """Holds generated frames and the audio they animate until the pacer takes them.

    Args:
        spec: the engine's declaration (fps, sample rate).
        max_frames: most frames held; when full the oldest are dropped (counted).
    """

    def __init__(self, spec: EngineSpec, max_frames: int) -> None:
        self.spec = spec
        self.max_frames = max_frames
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        # Audio pieces as (start sample, samples); kept sorted by start, non-overlapping.
        self._audio: list[tuple[int, np.ndarray]] = []
        self._min_epoch = 0
        self._video_head = 0  # next frame index the video consumer will ask for
        self._audio_head = 0  # next sample the audio consumer will ask for
        self.last_frame: np.ndarray | None = None
        self.stats = OutputStats()

    @property
    def video_head(self) -> int:
        return self._video_head

    @property
    def audio_head(self) -> int:
        return self._audio_head

    def buffered_frames(self) -> int:
        return len(self._frames)

    def first_buffered(self) -> int | None:
        """Index of the oldest frame held, or None."""
        return min(self._frames) if self._frames else None

    def put(self, chunk: VideoChunk) -> bool:
        """Store a chunk's frames and audio; returns False when it was stale and dropped."""
        if chunk.epoch < self._min_epoch:
            return False
        for i, frame in enumerate(chunk.frames):
            n = chunk.first_frame + i
            if n < self._video_head:
                self.stats.frames_late += 1
                continue
            self._frames[n] = frame
        while len(self._frames) > self.max_frames:
            n, _ = self._frames.popitem(last=False)
            self.stats.frames_overflow += 1
        self._put_audio(chunk.start, chunk.audio)
        return True

    def put_audio_only(self, start: int, audio: np.ndarray) -> None:
        """Audio whose frames were never generated (a dropped chunk): it still plays, in sync."""
        self._put_audio(start, audio)

    def _put_audio(self, start: int, audio: np.ndarray) -> None:
        if audio.shape[0] == 0 or start + audio.shape[0] <= self._audio_head:
            return
        if start < self._audio_head:
            audio = audio[self._audio_head - start :]
            start = self._audio_head
        self._audio.append((start, np.asarray(audio, dtype=np.float32)))
        self._audio.sort(key=lambda p: p[0])
        # Bound audio like video: a little more than the frames held.
        horizon = self.spec.frame_start(self.max_frames + 1)
        while self._audio and self._audio[-1][0] - self._audio[0][0] > horizon:
            self._audio.pop(0)

    def take_frame(self, n: int) -> tuple[np.ndarray | None, bool]:
        """The frame due now (index ``n``), or the last one again when it is missing.

        Returns:
            ``(frame, fresh)``: ``frame`` is None only before any frame ever arrived; ``fresh`` is
            False when a frame was repeated.
        """
        for old in sorted(k for k in self._frames if k < n):
            # Too late to show, but the freshest picture there is: it is what a repeat shows.
            self.last_frame = self._frames.pop(old)
            self.stats.frames_late += 1
        self._video_head = n + 1
        frame = self._frames.pop(n, None)
        if frame is not None:
            self.last_frame = frame
            self.stats.frames_out += 1
            return frame, True
        if self.last_frame is not None:
            self.stats.frames_repeated += 1
        return self.last_frame, False

    def take_audio(self, start: int, count: int) -> np.ndarray:
        """Samples ``[start, start + count)``; missing parts are silence (counted)."""
        out = np.zeros(count, dtype=np.float32)
        stop = start + count
        filled = 0
        keep: list[tuple[int, np.ndarray]] = []
        for s, x in self._audio:
            e = s + x.shape[0]
            if e <= start:
                continue  # already played
            if s < stop:
                a, b = max(s, start), min(e, stop)
                out[a - start : b - start] = x[a - s : b - s]
                filled += b - a
            if e > stop:
                keep.append((s, x))
        self._audio = keep
        self._audio_head = stop
        self.stats.audio_underrun_samples += count - filled
        return out

    def cut(self, frame: int, epoch: int) -> None:
        """Drop everything from ``frame`` on and refuse chunks older than ``epoch`` (barge-in)."""
        self._min_epoch = epoch
        for n in [k for k in self._frames if k >= frame]:
            del self._frames[n]
        sample = self.spec.frame_start(frame)
        kept: list[tuple[int, np.ndarray]] = []
        for s, x in self._audio:
            if s < sample:
                kept.append((s, x[: max(0, sample - s)]))
        self._audio = kept
