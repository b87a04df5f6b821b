"""Pipeline overhead per frame, engine time excluded.

Runs real sessions (ingest, VAD, chunker, EngineWorker, output buffer, the outgoing audio and video
tracks with their av.VideoFrame conversion) against an engine that returns ready-made frames, feeds
them microphone audio in real time, and divides the process CPU time by the frames delivered.
Codec work (VP8/Opus in aiortc) is not part of the pipeline and is not counted.

    .venv/bin/python bench/bench_pipeline.py [--seconds 10] [--sessions 1] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liveface.engines.base import AudioChunk, Engine, EngineSpec, EngineState, VideoChunk
from liveface.pipeline.stream import StreamConfig
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import Metrics
from liveface.runtime.session import Session, SessionOptions
from liveface.runtime.worker import EngineWorker
from liveface.signaling.tracks import AvatarAudioTrack, AvatarVideoTrack

RATE = 16000


class CannedEngine(Engine):
    """Returns the same pre-built frame for every frame: engine time is ~0 and is timed anyway."""

    name = "canned"

    def __init__(self, size: int, chunk_frames: int) -> None:
        self._spec = EngineSpec(
            fps=25, width=size, height=size, chunk_frames=chunk_frames, first_chunk_frames=1
        )
        self.frame = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        self.cpu = 0.0

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    def open(self, portrait, prompt, options) -> EngineState:  # type: ignore[no-untyped-def]
        return EngineState.__new__(type("S", (EngineState,), {}))

    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        t = time.thread_time()
        out = [
            VideoChunk(
                np.broadcast_to(self.frame, (c.num_frames, *self.frame.shape)),
                c.first_frame,
                c.start,
                c.samples.copy(),
                c.voiced,
                c.epoch,
            )
            for _, c in batch
        ]
        self.cpu += time.thread_time() - t
        return out

    def interrupt(self, state: EngineState) -> None:
        pass

    def close(self, state: EngineState) -> None:
        pass


async def run(seconds: float, sessions: int, size: int, chunk_frames: int) -> dict[str, float]:
    engine = CannedEngine(size, chunk_frames)
    worker = EngineWorker(engine, Metrics())
    worker.start()
    live = []
    for _ in range(sessions):
        s = Session(worker, StreamConfig(delay_ms=80, live=True))
        await s.start(SessionOptions())
        live.append((s, AvatarVideoTrack(s), AvatarAudioTrack(s)))
    counts = {"video": 0, "audio": 0}

    async def pull(track, kind):  # type: ignore[no-untyped-def]
        while True:
            await track.recv()
            counts[kind] += 1

    pullers = [asyncio.ensure_future(pull(v, "video")) for _, v, _ in live]
    pullers += [asyncio.ensure_future(pull(a, "audio")) for _, _, a in live]
    block = np.zeros(960, np.float32)  # 20 ms at 48 kHz, through the ingest like the microphone
    t0, c0 = time.monotonic(), time.process_time()
    k = 0
    while time.monotonic() - t0 < seconds:
        for s, _, _ in live:
            s.push(s.ingest.push(block, 48000))
        k += 1
        await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
    cpu = time.process_time() - c0
    for p in pullers:
        p.cancel()
    repeated = sum(v.stats.repeated for _, v, _ in live)
    for s, _, _ in live:
        await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    frames = counts["video"]
    return {
        "frames": frames,
        "cpu_ms_per_frame": 1000.0 * (cpu - engine.cpu) / max(frames, 1),
        "engine_ms_per_frame": 1000.0 * engine.cpu / max(frames, 1),
        "repeated": repeated,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chunk-frames", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = [
        asyncio.run(run(args.seconds, args.sessions, args.size, args.chunk_frames))
        for _ in range(args.repeats)
    ]
    per = [r["cpu_ms_per_frame"] for r in runs]
    print(
        f"pipeline overhead at {args.size}x{args.size}, {args.sessions} session(s), "
        f"{args.chunk_frames} frame(s)/chunk, {args.repeats} runs of {args.seconds:.0f} s"
    )
    print(
        f"  frames per run: {[r['frames'] for r in runs]}  repeated: "
        f"{[r['repeated'] for r in runs]}"
    )
    print(
        f"  CPU ms per frame excluding engine: median {statistics.median(per):.3f} "
        f"(runs {', '.join(f'{x:.3f}' for x in per)})"
    )


if __name__ == "__main__":
    main()
