"""Reading talking-head videos with PyAV: frames at the model's frame rate, 16 kHz mono speech.

Any container and codec ffmpeg reads (mp4, mkv, webm, ...), any frame rate and audio rate. Times
are taken from the container's timestamps, so video sample ``n`` of the output is the source frame
nearest to ``n / fps`` seconds and audio sample ``k`` sits at ``k / rate`` seconds on the same clock
(the audio is padded or trimmed so that its sample 0 is time 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from liveface.errors import AudioFormatError, BadInputError
from liveface.pipeline import audio_file


class MediaError(BadInputError):
    """A video cannot be read (unknown format, no video stream, decode error)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` finds.

    Attributes:
        duration: seconds of video.
        fps: the source frame rate (average).
        width, height: source frame size.
        has_audio: whether an audio stream exists.
    """

    duration: float
    fps: float
    width: int
    height: int
    has_audio: bool


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"cannot read {path}: {e}") from e


def probe(path: str | Path) -> VideoInfo:
    """Duration, frame rate, size and audio presence of a video file.

    Raises:
        MediaError: unreadable, or no video stream.
    """
    p = Path(path)
    with _open(p) as c:
        if not c.streams.video:
            raise MediaError(f"{p} has no video stream")
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 0) or 25.0
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        else:
            duration = (s.frames or 0) / rate
        return VideoInfo(
            duration, rate, s.codec_context.width, s.codec_context.height, bool(c.streams.audio)
        )


def read_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The first audio stream as mono float32 ``(samples,)`` at ``rate``, sample 0 at time 0
    (as the video frames are timed).

    Raises:
        MediaError: unreadable, no audio stream, or a decode error.
    """
    try:
        return audio_file.read_audio(path, rate, from_zero=True)
    except AudioFormatError as e:
        raise MediaError(f"{path}: {e}") from e


def iter_frames(
    path: str | Path, fps: int, *, start: float = 0.0, stop: float | None = None
) -> Iterator[np.ndarray]:
    """Frames resampled to ``fps``: output ``n`` is the source frame nearest ``start + n / fps``.

    Yields uint8 RGB ``(height, width, 3)`` frames until ``stop`` (seconds, exclusive) or the end
    of the video.

    Raises:
        MediaError: unreadable, no video stream, or a decode error.
    """
    p = Path(path)
    with _open(p) as c:
        if not c.streams.video:
            raise MediaError(f"{p} has no video stream")
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if start > 0 and s.time_base is not None:
            c.seek(int(start / s.time_base), stream=s, backward=True, any_frame=False)
        n = 0
        prev: av.VideoFrame | None = None
        prev_t = 0.0
        cached: np.ndarray | None = None
        try:
            for frame in c.decode(s):
                if frame.time is None:
                    continue
                t = float(frame.time)
                while prev is not None:
                    tn = start + n / fps
                    if stop is not None and tn >= stop:
                        return
                    if tn >= (prev_t + t) / 2:  # this frame is nearer than the previous one
                        break
                    if cached is None:
                        cached = prev.to_ndarray(format="rgb24")
                    yield cached
                    n += 1
                prev, prev_t, cached = frame, t, None
        except av.FFmpegError as e:
            raise MediaError(f"{p}: video could not be decoded ({e})") from e
        if prev is None:
            return
        # The last frame lasts one source frame interval.
        rate = float(s.average_rate or s.guessed_rate or fps)
        end = prev_t + 1.0 / rate if stop is None else min(stop, prev_t + 1.0 / rate)
        last = prev.to_ndarray(format="rgb24")
        while start + n / fps < end - 1e-9:
            yield last
            n += 1


def thumbnails(path: str | Path, fps: int, size: int = 32) -> np.ndarray:
    """Small grey frames at ``fps`` for shot detection, uint8 ``(frames, size, size)``."""
    out = [
        cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)
        for f in iter_frames(path, fps)
    ]
    return np.stack(out) if out else np.zeros((0, size, size), np.uint8)
