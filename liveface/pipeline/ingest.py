"""Ingest: any incoming audio -> mono float32 at the engine's rate, one rule for every transport.

Every source (the WebRTC microphone, PCM pushed over ZeroMQ, a file for the offline render) goes
through one :class:`AudioIngest`:

- samples of any format (``s16le``, ``s32le``, ``f32le`` bytes, or a decoded PyAV frame of any
  sample format, planar or packed) and any channel count are decoded and mixed to mono;
- they are resampled with the streaming polyphase resampler (0.5 ms delay, no bursts);
- when the input rate changes, the old filter's tail is flushed *before* the new block (it is
  the end of the audio that came at the old rate), then a filter for the new rate starts;
- :meth:`AudioIngest.flush` returns the filter's tail at a segment's or a file's end, so the
  segment plays whole;
- timestamped input (:meth:`AudioIngest.push_frame` with ``pts``, e.g. RTP timestamps) is
  *placed* by its timestamps: a gap (lost packets) is filled with silence of the gap's length and
  counted as concealed, a block that overlaps audio already placed (a duplicate or a late packet)
  is trimmed and counted as dropped. So a lost packet never shifts what follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from liveface.errors import AudioFormatError
from liveface.pipeline.resample import StreamingResampler

if TYPE_CHECKING:  # PyAV is only needed by callers that have frames
    import av

#: Sample formats accepted on the wire, mapped to numpy dtypes (little endian).
PCM_FORMATS: dict[str, np.dtype] = {
    "s16le": np.dtype("<i2"),
    "s32le": np.dtype("<i4"),
    "f32le": np.dtype("<f4"),
}
#: Full scale of PyAV's integer sample formats.
_INT_SCALE = {"s16": 32767.0, "s32": 2147483647.0, "s64": 9223372036854775807.0}
#: A timestamp jump larger than this is a new stream (a restarted sender), not lost packets.
MAX_CONCEAL_S = 1.0


def pcm_to_float(data: bytes | np.ndarray, fmt: str, channels: int) -> np.ndarray:
    """Decode interleaved PCM into mono float32 ``(samples,)`` in [-1, 1].

    Channels are averaged. NaN and infinities (from a broken float source) become 0, and values are
    clipped to [-1, 1], so one bad packet cannot poison the model's input.

    Raises:
        AudioFormatError: unknown format, bad channel count, or a byte count that does not divide
            into whole frames.
    """
    if fmt not in PCM_FORMATS:
        raise AudioFormatError(f"unknown sample format {fmt!r}; use one of {sorted(PCM_FORMATS)}")
    if not 1 <= channels <= 8:
        raise AudioFormatError(f"channels must be 1..8, got {channels}")
    dtype = PCM_FORMATS[fmt]
    if isinstance(data, np.ndarray):
        raw = data.astype(dtype, copy=False).reshape(-1)
    else:
        frame_bytes = dtype.itemsize * channels
        if len(data) % frame_bytes:
            raise AudioFormatError(
                f"{len(data)} bytes is not a whole number of {fmt} frames of {channels} channel(s)"
            )
        raw = np.frombuffer(data, dtype=dtype)
    if raw.shape[0] % channels:
        raise AudioFormatError("sample count is not a multiple of the channel count")
    if dtype.kind == "i":
        x = raw.astype(np.float32) / float(np.iinfo(dtype).max)
    else:
        x = raw.astype(np.float32)
    return _clean(x.reshape(-1, channels).mean(axis=1) if channels > 1 else x)


def frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded PyAV frame of any sample format (planar or packed) -> mono float32 in [-1, 1]."""
    fmt = frame.format
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    rows = x.reshape(channels, -1) if fmt.is_planar else x.reshape(-1, channels).T
    if x.dtype.kind == "f":
        mono = rows.mean(axis=0, dtype=np.float32) if channels > 1 else rows[0].astype(np.float32)
    else:
        # Sum integer channels exactly, then scale once (no float64 round trip).
        total = rows.sum(axis=0, dtype=np.int64) if channels > 1 else rows[0].astype(np.int64)
        name = fmt.name.rstrip("p")
        if name == "u8":
            mono = (total.astype(np.float32) - 128.0 * channels) / (128.0 * channels)
        else:
            mono = total.astype(np.float32) / (_INT_SCALE[name] * channels)
    return _clean(mono)


def _clean(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0, out=x)


@dataclass
class IngestStats:
    """What the ingest did to its input, in output samples."""

    samples_in: int = 0  # output samples made from received audio
    concealed: int = 0  # silence put where timestamps showed a gap (lost packets)
    dropped: int = 0  # received audio that overlapped audio already placed (duplicates, late)


class AudioIngest:
    """One session's audio input: any format, rate and channel count -> mono float32 at ``rate``.

    Args:
        rate: the output rate (the engine's, 16 kHz).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.stats = IngestStats()
        self._resampler: StreamingResampler | None = None
        self._next_pts: int | None = None  # the input timestamp the next block should carry

    @property
    def in_rate(self) -> int | None:
        """The current input rate (None before any audio)."""
        return None if self._resampler is None else self._resampler.in_rate

    def push(self, x: np.ndarray, rate: int) -> np.ndarray:
        """Mono float32 ``(n,)`` at ``rate`` -> the output samples it makes available.

        Raises:
            AudioFormatError: a rate outside 8..192 kHz.
        """
        out = self._resample(x, rate)
        self.stats.samples_in += out.shape[0]
        return out

    def push_pcm(self, data: bytes | np.ndarray, fmt: str, channels: int, rate: int) -> np.ndarray:
        """Interleaved PCM (see :func:`pcm_to_float`) at ``rate`` -> output samples."""
        return self.push(pcm_to_float(data, fmt, channels), rate)

    def push_frame(self, frame: av.AudioFrame, pts: int | None = None) -> np.ndarray:
        """A decoded PyAV frame -> output samples, placed by ``pts`` when given.

        ``pts`` counts input samples (an RTP timestamp at the input rate). When it is ahead of
        where the previous frame ended, the gap is concealed with silence; when it is behind, the
        overlapping head of the frame is dropped; a jump of more than :data:`MAX_CONCEAL_S`
        (either way) restarts the placement.
        """
        x = frame_to_float(frame)
        rate = int(frame.sample_rate)
        prev = self._next_pts if self.in_rate == rate else None
        gap = 0 if pts is None or prev is None else pts - prev
        if abs(gap) > MAX_CONCEAL_S * rate:
            gap = 0  # a restarted sender: place from here on
        end = None if pts is None else pts + x.shape[0]
        if end is not None and prev is not None and gap < 0:
            skip = min(-gap, x.shape[0])
            self.stats.dropped += skip * self.rate // rate
            x = x[skip:]
            end = max(end, prev)
        filler = np.zeros(0, np.float32)
        if gap > 0:
            filler = self._resample(np.zeros(gap, np.float32), rate)
            self.stats.concealed += filler.shape[0]
        self._next_pts = end
        out = self.push(x, rate)
        return np.concatenate([filler, out]) if filler.shape[0] else out

    def count_dropped(self, samples: int) -> None:
        """Audio dropped before it reached the ingest (e.g. a jitter buffer's late packets)."""
        self.stats.dropped += samples

    def flush(self) -> np.ndarray:
        """The resampler's tail (end of a segment or of a file); the next block starts afresh."""
        resampler, self._resampler = self._resampler, None
        self._next_pts = None
        if resampler is None:
            return np.zeros(0, np.float32)
        tail = resampler.push(np.zeros(0, np.float32), last=True)
        self.stats.samples_in += tail.shape[0]
        return tail

    def _resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        """Resample with the filter for ``rate``; a new rate flushes the old filter's tail first."""
        old = self._resampler
        if old is not None and old.in_rate == rate:
            return old.push(x)
        self._resampler = StreamingResampler(rate, self.rate)  # AudioFormatError for a bad rate
        y = self._resampler.push(x)
        if old is None:
            return y
        return np.concatenate([old.push(np.zeros(0, np.float32), last=True), y])
