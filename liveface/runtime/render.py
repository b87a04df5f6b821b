"""Offline rendering: an audio file + a portrait -> an mp4 with the audio muxed in.

The live path, driven as fast as the engine goes: the file goes through the session's
:class:`~liveface.pipeline.ingest.AudioIngest` and :class:`~liveface.pipeline.stream.StreamPipeline`
(VAD, causal chunker, output buffer), the engine renders chunk after chunk, and a
:class:`~liveface.pipeline.pacer.VideoPacer` with ``realtime=False`` yields every frame with the
audio it animates. Encoding (H.264 + AAC) runs on its own thread, overlapped with the engine.

The audio is muxed at the engine's own rate (the rate the session hears; AAC carries 16 kHz), with
FFmpeg's fast AAC coder: a tenth of the cost of 48 kHz with the default coder.
"""

from __future__ import annotations

import fractions
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from liveface.engines.base import ClipRenderer, Engine, VideoChunk
from liveface.errors import BadInputError, OutputError
from liveface.pipeline.audio_file import read_audio
from liveface.pipeline.pacer import OutputSignal, PacedFrame, PaceTiming, VideoPacer
from liveface.pipeline.stream import StreamConfig, StreamPipeline
from liveface.pipeline.videoframe import yuv420_frame

#: Frames waiting for the encoder thread (bounds memory when the encoder is the slower side).
ENCODE_QUEUE = 64
#: Containers that hold H.264 + AAC.
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


@dataclass(frozen=True)
class VideoEncoding:
    """libx264 settings of a render.

    The default is chosen for speed at unchanged quality. On warp-engine frames at 512x512
    (``bench/bench_encode.py``): ``ultrafast`` CRF 20 costs 3.4 ms a frame for 43.3 dB luma PSNR
    at ~1.3 Mbit/s; ``veryfast`` CRF 20 (the former default) 6.7 ms for 43.6 dB at 180 kbit/s.
    Choose ``--preset veryfast`` (or ``superfast``, 4.1 ms, 330 kbit/s at CRF 23) for small files.
    """

    preset: str = "ultrafast"
    crf: int = 20

    def __post_init__(self) -> None:
        if self.preset not in X264_PRESETS:
            raise BadInputError(f"unknown x264 preset {self.preset!r}; one of {X264_PRESETS}")
        if not 0 <= self.crf <= 51:
            raise BadInputError(f"crf must be in 0..51, not {self.crf}")


class _Encoder:
    """H.264 + AAC into an mp4 on a thread of its own; frames arrive through a bounded queue."""

    def __init__(
        self, out_path: str | Path, size: tuple[int, int], fps: int, rate: int, enc: VideoEncoding
    ) -> None:
        self._name = Path(out_path).name
        try:
            self._container = av.open(str(out_path), mode="w")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise OutputError(f"cannot write {self._name}: {e}") from e
        v = self._container.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        v.options = {"preset": enc.preset, "crf": str(enc.crf)}
        a = self._container.add_stream("aac", rate=rate)
        a.layout = "mono"
        a.options = {"aac_coder": "fast"}
        self._video, self._audio, self._rate = v, a, rate
        self._queue: queue.Queue[PacedFrame | None] = queue.Queue(ENCODE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="render-encoder", daemon=True)
        self._thread.start()

    def put(self, item: PacedFrame) -> None:
        if self._error is not None:
            self._raise()
        self._queue.put(item)

    def close(self) -> None:
        """Flush and close the file; re-raises what failed on the encoder thread (a failure to
        write as :class:`OutputError`)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self._raise()

    def _raise(self) -> None:
        e = self._error
        if isinstance(e, av.error.FFmpegError | OSError):
            raise OutputError(f"cannot write {self._name}: {e}") from e
        assert e is not None
        raise e

    def _run(self) -> None:
        ended = False
        try:
            while (item := self._queue.get()) is not None:
                vf = yuv420_frame(item.frame)
                vf.pts = item.index
                self._container.mux(self._video.encode(vf))
                self._mux_audio(item.audio)
            ended = True
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
        frame.sample_rate = self._rate
        frame.time_base = fractions.Fraction(1, self._rate)
        for packet in self._audio.encode(frame):
            self._container.mux(packet)


def _read_ahead(items: Iterator[VideoChunk], depth: int = 4) -> Iterator[VideoChunk]:
    """Iterate ``items`` on a thread of its own, up to ``depth`` ahead of the consumer.

    The thread has ended when this generator returns or is closed (so the engine is free again).
    """
    q: queue.Queue[tuple[VideoChunk | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def offer(entry: tuple[VideoChunk | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((None, None))
        except BaseException as e:  # handed to the consumer
            offer((None, e))

    thread = threading.Thread(target=produce, name="render-engine", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is None:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def render(
    engine: Engine,
    audio_path: str | Path,
    out_path: str | Path,
    portrait: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    encoding: VideoEncoding | None = None,
    options: Mapping[str, Any] | None = None,
) -> int:
    """Render ``audio_path`` with ``engine`` into ``out_path`` (H.264 + AAC); returns frame count.

    The file is written under a hidden name beside ``out_path`` and renamed when complete, so a
    failed render leaves no partial file (and does not touch one already at ``out_path``).

    Args:
        progress: called as ``progress(done_frames, total_frames)``.
        encoding: x264 settings (default :class:`VideoEncoding`).
        options: the engine's per-session options (as a live session's), e.g. the warp
            engine's ``{"head_motion": False}``.

    Raises:
        BadInputError: no audio; an output that is not an .mp4, .mov or .mkv file in an existing,
            writable folder; options for an engine that renders whole clips (which takes none)
            or that the engine does not know.
    """
    out = check_output(Path(out_path))
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    spec = engine.spec
    whole = isinstance(engine, ClipRenderer)
    if whole and options:
        raise BadInputError(
            f"the {engine.name} engine renders whole clips and takes no session options "
            f"(got {', '.join(sorted(options))})"
        )
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
    state = None if whole else engine.open(portrait, None, dict(options or {}))

    def results() -> Iterator[VideoChunk]:
        if isinstance(engine, ClipRenderer):
            yield from engine.render_clips(audio, portrait, None, progress)
            return
        assert state is not None
        chunks = [c for c in stream.chunker.pop_ready() if c.first_frame < total_frames]
        # The engine (often a child process) renders ahead while this thread paces and queues.
        yield from _read_ahead(engine.generate([(state, c)])[0] for c in chunks)

    done = 0
    try:
        encoder = _Encoder(
            partial,
            (spec.width, spec.height),
            spec.fps,
            spec.sample_rate,
            encoding or VideoEncoding(),
        )
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
        os.replace(partial, out)
    finally:
        if partial.is_file():  # the render failed: no partial file is left behind
            partial.unlink()
        if state is not None:
            engine.close(state)
    return done


def check_output(out: Path) -> Path:
    """``out`` if a render can write it there.

    Raises:
        BadInputError: not an .mp4, .mov or .mkv file name, or its folder is missing or not
            writable, or it is a folder.
    """
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BadInputError(
            f"cannot write {out.name}: the output must be an .mp4, .mov or .mkv file"
        )
    folder = out.parent
    if not folder.is_dir():
        raise BadInputError(f"cannot write {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {out}: the folder {folder} is not writable")
    if out.is_dir():
        raise BadInputError(f"cannot write {out}: it is a folder")
    return out
