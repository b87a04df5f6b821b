"""Offline rendering: an audio file + a portrait -> an mp4 with the audio muxed in.

The same chunker and engine contract as the live path, driven as fast as the engine goes.
"""

from __future__ import annotations

import fractions
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

from liveface.engines.base import ClipRenderer, Engine, VideoChunk
from liveface.errors import AudioFormatError, BadInputError
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from liveface.pipeline.resample import StreamingResampler
from liveface.pipeline.vad import VoiceActivity

MUX_RATE = 48000


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """Decode any audio file ffmpeg reads into mono float32 ``(samples,)`` at ``rate``.

    Raises:
        AudioFormatError: the file cannot be read or holds no audio stream.
    """
    p = Path(path)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as e:
        raise AudioFormatError(f"cannot read audio {p}: {e}") from e
    with container:
        if not container.streams.audio:
            raise AudioFormatError(f"{p} has no audio stream")
        stream = container.streams.audio[0]
        out: list[np.ndarray] = []
        resampler: StreamingResampler | None = None
        try:
            for frame in container.decode(stream):
                x = frame.to_ndarray().astype(np.float32)
                if frame.format.is_planar:
                    x = x.mean(axis=0)
                else:
                    x = x.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                if frame.format.name.startswith("s16"):
                    x /= 32768.0
                elif frame.format.name.startswith("s32"):
                    x /= 2147483648.0
                elif frame.format.name.startswith("u8"):
                    x = (x - 128.0) / 128.0
                if resampler is None:
                    resampler = StreamingResampler(frame.sample_rate, rate)
                out.append(resampler.push(np.nan_to_num(x)))
        except av.FFmpegError as e:
            raise AudioFormatError(f"{p} could not be decoded: {e}") from e
        if resampler is not None:
            out.append(resampler.push(np.zeros(0, np.float32), last=True))
    audio = np.concatenate(out) if out else np.zeros(0, np.float32)
    return np.clip(audio, -1.0, 1.0)


def render(
    engine: Engine,
    audio_path: str | Path,
    out_path: str | Path,
    portrait: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Render ``audio_path`` with ``engine`` into ``out_path`` (H.264 + AAC); returns frame count.

    Args:
        progress: called as ``progress(done_frames, total_frames)``.
    """
    spec = engine.spec
    audio = read_audio(audio_path, spec.sample_rate)
    if audio.shape[0] == 0:
        raise BadInputError(f"{audio_path} holds no audio samples")
    total_frames = spec.frame_at(audio.shape[0] - 1) + 1
    # Pad so the last chunk (and its lookahead) is whole.
    pad = spec.frame_start(total_frames + spec.chunk_frames) + spec.lookahead - audio.shape[0]
    padded = np.concatenate([audio, np.zeros(max(0, pad), np.float32)])
    ring = AudioRing(padded.shape[0] + 1)
    vad = VoiceActivity(spec.sample_rate)
    ring.append(padded)
    vad.push(padded)
    chunker = Chunker(spec, ring, vad.voiced)
    mux_audio = StreamingResampler(spec.sample_rate, MUX_RATE)

    # Engines with a whole-clip offline path (ClipRenderer) render the file their own way.
    whole = isinstance(engine, ClipRenderer)
    state = None if whole else engine.open(portrait, None, {})

    def results() -> Iterator[VideoChunk]:
        if isinstance(engine, ClipRenderer):
            yield from engine.render_clips(audio, portrait, None, progress)
            return
        for chunk in chunker.pop_ready():
            if chunk.first_frame >= total_frames:
                break
            assert state is not None
            yield engine.generate([(state, chunk)])[0]

    try:
        with av.open(str(out_path), mode="w") as container:
            vstream = container.add_stream("libx264", rate=spec.fps)
            vstream.width, vstream.height = spec.width, spec.height
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": "20", "preset": "veryfast"}
            astream = container.add_stream("aac", rate=MUX_RATE)
            astream.layout = "mono"
            done = 0
            for result in results():
                if result.first_frame >= total_frames:
                    break
                for i, frame in enumerate(result.frames):
                    if result.first_frame + i >= total_frames:
                        break
                    vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                    vf.pts = result.first_frame + i
                    container.mux(vstream.encode(vf))
                    done += 1
                _mux_audio(container, astream, mux_audio.push(result.audio))
                if progress is not None and not whole:
                    progress(done, total_frames)
            _mux_audio(container, astream, mux_audio.push(np.zeros(0, np.float32), last=True))
            container.mux(vstream.encode(None))
            container.mux(astream.encode(None))
    finally:
        if state is not None:
            engine.close(state)
    return done


def _mux_audio(
    container: av.container.OutputContainer, stream: av.AudioStream, x: np.ndarray
) -> None:
    if x.shape[0] == 0:
        return
    frame = av.AudioFrame.from_ndarray(
        x.reshape(1, -1).astype(np.float32), format="flt", layout="mono"
    )
    frame.sample_rate = MUX_RATE
    frame.time_base = fractions.Fraction(1, MUX_RATE)
    for packet in stream.encode(frame):
        container.mux(packet)
