"""A whole audio track from a file, as the engines take it: mono float32 at one rate."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from liveface.errors import AudioFormatError
from liveface.pipeline.ingest import AudioIngest


def read_audio(path: str | Path, rate: int, *, from_zero: bool = False) -> np.ndarray:
    """Decode the first audio stream of any file ffmpeg reads into mono float32 ``(samples,)``
    at ``rate``, through :class:`AudioIngest` (the one conversion and resampling rule).

    Args:
        from_zero: sample 0 is the file's time 0, as its video frames are timed: a stream that
            starts later gets leading silence, one that starts earlier loses its head.

    Raises:
        AudioFormatError: the file cannot be read, holds no audio stream or does not decode.
    """
    p = Path(path)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as e:
        raise AudioFormatError(f"cannot read audio {p.name}: {e.strerror or e}") from e
    ingest = AudioIngest(rate)
    out: list[np.ndarray] = []
    start: float | None = None
    with container:
        if not container.streams.audio:
            raise AudioFormatError(f"{p.name} has no audio stream")
        try:
            for frame in container.decode(container.streams.audio[0]):
                if start is None:
                    start = float(frame.time) if frame.time is not None else 0.0
                out.append(ingest.push_frame(frame))
        except av.FFmpegError as e:
            raise AudioFormatError(f"{p.name} could not be decoded: {e}") from e
    out.append(ingest.flush())
    audio = np.concatenate(out)
    offset = round((start or 0.0) * rate) if from_zero else 0
    if offset > 0:
        audio = np.concatenate([np.zeros(offset, np.float32), audio])
    elif offset < 0:
        audio = audio[-offset:]
    return audio
