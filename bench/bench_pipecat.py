"""pipecat video service: the latency it adds, TTS audio in -> first image frame out.

A real pipecat pipeline ``probe -> LivefaceVideoService -> probe`` with the service's own local
server (the CPU ``warp`` engine, in a subprocess, over ``ipc://``), or a running server given by
``--address``. Each trial waits in idle, then queues one TTS response at once, as a TTS service
bursts it: ``TTSStartedFrame``, 20 ms ``TTSAudioRawFrame``s, ``TTSStoppedFrame``. The latency
runs from the moment the first audio frame enters the service to the moment the service pushes
the image whose audio holds the response's first sample (its leading digital silence is
subtracted). It includes the server's output delay (``--delay-ms``, 80 ms by default), chunking,
the engine, both socket hops and the conversion to pipecat frames; the output transport's own
buffering comes on top and is the same as for plain TTS audio.

    .venv/bin/python bench/bench_pipecat.py [--trials 20] [--size 512] [--format rgb|jpeg]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

TEXT = "Hello there, how are you today?"


def tts_audio(args: argparse.Namespace) -> tuple[np.ndarray, int]:
    """The response's audio: espeak-ng speech when available, else a speech-like tone."""
    if shutil.which("espeak-ng") and not args.synthetic:
        wav = subprocess.run(
            ["espeak-ng", "--stdout", TEXT], check=True, capture_output=True
        ).stdout
        rate = int.from_bytes(wav[24:28], "little")
        return np.frombuffer(wav[44:], "<i2").copy(), rate
    rate = 24000
    t = np.arange(int(0.8 * rate)) / rate
    x = sum(0.3 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 20))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (np.clip(x, -1, 1) * 32767).astype("<i2"), rate


async def run(args: argparse.Namespace) -> None:
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        OutputImageRawFrame,
        SpeechOutputAudioRawFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from liveface.integrations.pipecat import LivefaceVideoService, LocalServerConfig

    class Probe(FrameProcessor):
        """Timestamps what passes: the first TTS audio in, the first voiced image out."""

        def __init__(self) -> None:
            super().__init__()
            self.first_audio_at: float | None = None
            self.image_at = 0.0
            self.voiced_at: float | None = None
            self.stopped = asyncio.Event()
            self.frames = 0

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            now = time.perf_counter()
            if isinstance(frame, TTSAudioRawFrame) and self.first_audio_at is None:
                self.first_audio_at = now
            elif isinstance(frame, OutputImageRawFrame):
                self.image_at = now
                self.frames += 1
            elif isinstance(frame, SpeechOutputAudioRawFrame):
                if self.voiced_at is None and any(frame.audio):
                    self.voiced_at = self.image_at  # the image pushed just before this audio
            elif isinstance(frame, TTSStoppedFrame):
                self.stopped.set()
            await self.push_frame(frame, direction)

    pcm, rate = tts_audio(args)
    lead_s = int(np.argmax(pcm != 0)) / rate
    block = int(rate * 0.02)
    server = None
    if args.address is None:
        server = LocalServerConfig(
            size=(args.size, args.size), delay_ms=args.delay_ms, chunk_frames=args.chunk_frames
        )
    service = LivefaceVideoService(
        address=args.address, server=server, image_format=args.format, wait_for_transport=False
    )
    into, out = Probe(), Probe()
    worker = PipelineWorker(Pipeline([into, service, out]), cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    latencies: list[float] = []
    try:
        t0 = time.perf_counter()
        while out.frames < 10:  # the session is open and idle frames flow
            if running.done() or time.perf_counter() - t0 > 180:
                raise SystemExit("the avatar never sent a frame")
            await asyncio.sleep(0.05)
        print(f"service started in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for trial in range(args.trials):
            # Idle a while, at a random phase of the frame clock.
            await asyncio.sleep(args.gap_s + random.uniform(0, 0.04))
            into.first_audio_at, out.voiced_at = None, None
            out.stopped.clear()
            frames: list[Any] = [TTSStartedFrame()]
            frames += [
                TTSAudioRawFrame(pcm[i : i + block].tobytes(), rate, 1)
                for i in range(0, len(pcm), block)
            ]
            frames.append(TTSStoppedFrame())
            await worker.queue_frames(frames)
            async with asyncio.timeout(30):
                await out.stopped.wait()
            if into.first_audio_at is None or out.voiced_at is None:
                print(f"trial {trial}: no voiced frame", file=sys.stderr)
                continue
            latencies.append(out.voiced_at - into.first_audio_at - lead_s)
    finally:
        await worker.queue_frame(EndFrame())
        async with asyncio.timeout(30):
            await running
    ms = np.array(latencies) * 1000
    where = args.address or f"local warp server {args.size}x{args.size}"
    print(
        f"pipecat service, TTS audio in -> first image out ({where}, {args.format}, "
        f"delay {args.delay_ms} ms, chunk {args.chunk_frames} frame(s), n={len(ms)}): "
        f"p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, "
        f"min {ms.min():.0f} ms, max {ms.max():.0f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--address", help="a running server (default: start a local warp server)")
    p.add_argument("--size", type=int, default=512, help="local server: frame size")
    p.add_argument("--delay-ms", type=int, default=80, help="local server: output delay")
    p.add_argument("--chunk-frames", type=int, default=1, help="local server: frames per chunk")
    p.add_argument("--format", choices=["rgb", "jpeg"], default="rgb")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--gap-s", type=float, default=0.5, help="idle time between responses")
    p.add_argument("--synthetic", action="store_true", help="a tone instead of espeak-ng")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
