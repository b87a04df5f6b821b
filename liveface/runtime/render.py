"""Offline rendering: an audio file + a portrait -> an mp4 with the audio muxed in.

The live path, driven as fast as the engine goes: the file goes through the session's
:class:`~liveface.pipeline.ingest.AudioIngest` and :class:`~liveface.pipeline.stream.StreamPipeline`
(VAD, causal chunker, output buffer), the engine renders chunk after chunk, and a
:class:`~liveface.pipeline.pacer.VideoPacer` with ``realtime=False`` yields every frame with the
audio it animates. Encoding (H.264 + AAC) runs on its own thread, overlapped with the engine.
"""

from __future__ import annotations

import fractions
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

from liveface.engines.base import ClipRenderer, Engine, VideoChunk
from liveface.errors import AudioFormatError, BadInputError
from liveface.pipeline.ingest import AudioIngest
from liveface.pipeline.pacer import OutputSignal, PacedFrame, PaceTiming, VideoPacer
from liveface.pipeline.resample import StreamingResampler
from liveface.pipeline.stream import StreamConfig, StreamPipeline

MUX_RATE = 48000
#: Frames waiting for the encoder thread (bounds memory when the encoder is the slower side).
ENCODE_QUEUE = 64
#: libx264 settings: ``veryfast`` with CRF 20 is visually lossless on talking heads and several
#: times faster than the default preset.
X264_OPTIONS = {"crf": "20", "preset": "veryfast"}


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """Decode any audio file ffmpeg reads into mono float32 ``(samples,)`` at ``rate``.

    Raises:
        AudioFormatError: the file cannot be read or holds no audio stream.
    """
    p = Path(path)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as e:
        raise AudioFormatError(f"cannot read audio {p.name}: {e.strerror or e}") from e
    ingest = AudioIngest(rate)
    out: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            raise AudioFormatError(f"{p.name} has no audio stream")
        try:
            for frame in container.decode(container.streams.audio[0]):
                out.append(ingest.push_frame(frame))
        except av.FFmpegError as e:
            raise AudioFormatError(f"{p.name} could not be decoded: {e}") from e
    out.append(ingest.flush())
    return np.concatenate(out)


class _Encoder:
    """H.264 + AAC into an mp4 on a thread of its own; frames arrive through a bounded queue."""

    def __init__(self, out_path: str | Path, width: int, height: int, fps: int, rate: int) -> None:
        self._container = av.open(str(out_path), mode="w")
        v = self._container.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = dict(X264_OPTIONS)
        a = self._container.add_stream("aac", rate=MUX_RATE)
        a.layout = "mono"
        self._video, self._audio = v, a
        self._upsample = StreamingResampler(rate, MUX_RATE)
        self._queue: queue.Queue[PacedFrame | None] = queue.Queue(ENCODE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="render-encoder", daemon=True)
        self._thread.start()

    def put(self, item: PacedFrame) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Flush and close the file; re-raises what failed on the encoder thread."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        ended = False
        try:
            while (item := self._queue.get()) is not None:
                vf = av.VideoFrame.from_ndarray(item.frame, format="rgb24")
                vf.pts = item.index
                self._container.mux(self._video.encode(vf))
                self._mux_audio(self._upsample.push(item.audio))
            ended = True
            self._mux_audio(self._upsample.push(np.zeros(0, np.float32), last=True))
            self._container.mux(self._video.encode(None))
            self._container.mux(self._audio.encode(None))
        except BaseException as e:
            self._error = e
            while not ended and self._queue.get() is not None:  # unblock the producer
                pass
        finally:
            self._container.close()

    def _mux_audio(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            x.reshape(1, -1).astype(np.float32), format="flt", layout="mono"
        )
        frame.sample_rate = MUX_RATE
        frame.time_base = fractions.Fraction(1, MUX_RATE)
        for packet in self._audio.encode(frame):
            self._container.mux(packet)


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
        raise BadInputError(f"{Path(audio_path).name} holds no audio samples")
    total_frames = spec.frame_at(audio.shape[0] - 1) + 1
    # Pad so the last chunk (and its lookahead) is whole.
    pad = spec.frame_start(total_frames + spec.chunk_frames) + spec.lookahead - audio.shape[0]
    padded = np.concatenate([audio, np.zeros(max(0, pad), np.float32)])
    seconds = padded.shape[0] / spec.sample_rate
    stream = StreamPipeline(spec, StreamConfig(live=False, max_pending_s=seconds + 1.0))
    stream.push(padded, now=0.0)
    pacer = VideoPacer(stream, OutputSignal(), PaceTiming(realtime=False), with_audio=True)

    # Engines with a whole-clip offline path (ClipRenderer) render the file their own way.
    whole = isinstance(engine, ClipRenderer)
    state = None if whole else engine.open(portrait, None, {})

    def results() -> Iterator[VideoChunk]:
        if isinstance(engine, ClipRenderer):
            yield from engine.render_clips(audio, portrait, None, progress)
            return
        for chunk in stream.chunker.pop_ready():
            if chunk.first_frame >= total_frames:
                break
            assert state is not None
            yield engine.generate([(state, chunk)])[0]

    done = 0
    try:
        encoder = _Encoder(out_path, spec.width, spec.height, spec.fps, spec.sample_rate)
        try:
            for result in results():
                stream.accept(result)
                for item in pacer.drain():
                    if item.index < total_frames:
                        encoder.put(item)
                        done += 1
                if progress is not None and not whole:
                    progress(done, total_frames)
        finally:
            encoder.close()
    finally:
        if state is not None:
            engine.close(state)
    return done
