"""A real pipecat pipeline around the video service, for the tests and nothing else.

``RecordingOutput`` is a pipecat output transport (``BaseOutputTransport``: its media sender does
the audio chunking, the ``sync_with_audio`` queueing and the video clock, as in every pipecat
transport) whose device is a recorder: audio is consumed at real time, like a sound card or an
aiortc track, and each drawn video frame is stored with how much audio had been played when it
was drawn. ``Capture`` records, in order, every frame that passes a point of the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

OUT_RATE = 16000  # the transport's output rate


@dataclass
class Drawn:
    """A video frame the transport drew, and the audio played (samples at OUT_RATE) by then."""

    image: OutputImageRawFrame
    audio_played: int


class RecordingOutput(BaseOutputTransport):
    """An output transport whose device records (see the module docstring)."""

    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self.audio = bytearray()
        self.drawn: list[Drawn] = []
        self._busy_until = 0.0  # when the audio written so far has been played

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        # A device plays in real time: like an aiortc track, a write returns once its audio
        # has been played out.
        # After an underrun, playback resumes from now.
        now = time.monotonic()
        self._busy_until = max(self._busy_until, now) + len(frame.audio) / 2 / self.sample_rate
        self.audio += frame.audio
        await asyncio.sleep(self._busy_until - now)
        return True

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.drawn.append(Drawn(frame, len(self.audio) // 2))
        return True


class Capture(FrameProcessor):
    """Records every frame passing this point (both directions), then passes it on."""

    def __init__(self, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[Frame] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction and not isinstance(frame, StartFrame):
            self.frames.append(frame)
            self.changed.set()
        await self.push_frame(frame, direction)

    def of(self, kind: type) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def wait_for(self, predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Until ``predicate()`` holds (checked when a frame arrives, and every 50 ms)."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.changed.wait()


@dataclass
class Bot:
    """A running pipeline: upstream capture -> service -> downstream capture -> transport."""

    worker: PipelineWorker
    up: Capture
    down: Capture
    output: RecordingOutput
    run: asyncio.Task[Any]
    sent: list[Frame] = field(default_factory=list)

    async def say(self, pcm: np.ndarray, rate: int, block_s: float = 0.02) -> None:
        """Queue a TTS response: started, int16 audio in ``block_s`` frames, stopped."""
        block = int(rate * block_s)
        frames: list[Frame] = [TTSStartedFrame()]
        for i in range(0, len(pcm), block):
            frames.append(TTSAudioRawFrame(pcm[i : i + block].tobytes(), rate, 1))
        frames.append(TTSStoppedFrame())
        self.sent += frames
        await self.worker.queue_frames(frames)


@asynccontextmanager
async def pipeline(
    service: FrameProcessor, size: int, fps: int = 25, output: bool = True
) -> AsyncIterator[Bot]:
    """Run ``service`` in a pipeline with a recording output transport until the block ends.

    ``output=False`` leaves the transport out (the pipeline ends at the downstream capture).
    """
    params = TransportParams(
        audio_out_enabled=True,
        audio_out_sample_rate=OUT_RATE,
        video_out_enabled=True,
        video_out_is_live=False,
        video_out_width=size,
        video_out_height=size,
        video_out_framerate=fps,
    )
    up, down, out = Capture(FrameDirection.UPSTREAM), Capture(), RecordingOutput(params)
    processors = [up, service, down, out] if output else [up, service, down]
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(audio_out_sample_rate=OUT_RATE),
        cancel_on_idle_timeout=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    bot = Bot(worker, up, down, out, run)
    try:
        yield bot
    finally:
        if not run.done():
            await worker.queue_frame(EndFrame())
            async with asyncio.timeout(30):
                await run
