"""Ingest: any incoming PCM -> mono float32 (rate conversion: :mod:`liveface.pipeline.resample`)."""

from __future__ import annotations

import numpy as np

from liveface.errors import AudioFormatError

#: Sample formats accepted on the wire, mapped to numpy dtypes (little endian).
PCM_FORMATS: dict[str, np.dtype] = {
    "s16le": np.dtype("<i2"),
    "s32le": np.dtype("<i4"),
    "f32le": np.dtype("<f4"),
}


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
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0, out=x)
