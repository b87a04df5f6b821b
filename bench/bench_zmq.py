"""ZeroMQ transport: audio-in to frame-out latency, and how many sessions hold real time.

The server runs in a child process (its own interpreter, as in production) with the CPU engine
(``warp``) or the tests' ``pattern`` engine; the clients run here.

Latency: one session is fed silence then a speech onset, pushed in real time in 20 ms blocks. The
onset's real-time position is the moment its block is sent; the latency is the time until the
first frame whose attached audio (the samples it animates) contains the onset arrives. It
includes the server's output delay (``--delay-ms``), chunking, the engine and both socket hops.
With the pattern engine the first frame whose mouth opens is timed as well.

Capacity: sessions are added one at a time, each pushing speech in real time; a step passes when
fewer than ``--bad-pct`` of the expected frames were repeated (engine late) or missing (dropped).

    .venv/bin/python bench/bench_zmq.py [--engine warp|pattern] [--trials 15] [--max-sessions 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
BLOCK = RATE // 50  # 20 ms
ROOT = Path(__file__).resolve().parents[1]


def speech(seconds: float, rate: int = RATE) -> np.ndarray:
    """Harmonic, syllable-modulated tone that webrtcvad takes for speech, float32 ``(n,)``."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(0.3 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 20))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


# -- the server (child process) --------------------------------------------------------------------


def build_engine(args: argparse.Namespace) -> Any:
    if args.engine == "warp":
        from liveface.runtime.config import ServerConfig
        from liveface.runtime.factory import create_engine

        return create_engine(
            ServerConfig(
                width=args.size, height=args.size, fps=args.fps, chunk_frames=args.chunk_frames
            )
        )
    from tests.doubles import PatternEngine

    return PatternEngine(
        fps=args.fps,
        size=args.size,
        chunk_frames=args.chunk_frames,
        first_chunk_frames=1,
        max_batch=8,
    )


async def serve(args: argparse.Namespace) -> None:
    from liveface.runtime.config import ServerConfig
    from liveface.runtime.runtime import Runtime
    from liveface.signaling.zmq_server import ZmqServer

    config = ServerConfig(
        zmq="tcp://127.0.0.1:*",
        delay_ms=args.delay_ms,
        max_sessions=args.max_sessions + 2,
        width=args.size,
        height=args.size,
        fps=args.fps,
    )
    runtime = Runtime(config, build_engine(args))
    runtime.start()
    server = ZmqServer(runtime)
    await server.start()
    print(f"ENDPOINT {server.endpoint}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.aclose()
    await runtime.aclose()


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        "--engine",
        args.engine,
        "--size",
        str(args.size),
        "--fps",
        str(args.fps),
        "--chunk-frames",
        str(args.chunk_frames),
        "--delay-ms",
        str(args.delay_ms),
        "--max-sessions",
        str(args.max_sessions),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ENDPOINT "):
            return proc, line.split()[1]
    raise SystemExit("the server process did not start")


# -- clients ---------------------------------------------------------------------------------------


async def push_real_time(session: Any, audio: np.ndarray, on_block: Any = None) -> None:
    """Push ``audio`` in 20 ms blocks at real time (no waiting for acks)."""
    t0 = time.monotonic()
    for i in range(0, len(audio), BLOCK):
        delay = t0 + i / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_block is not None:
            on_block(i)
        await session.push(audio[i : i + BLOCK], rate=RATE, wait=False)


async def one_onset(session: Any, pattern: bool) -> dict[str, float]:
    """Silence, then speech pushed in real time; seconds from the onset to the frames that show it.

    ``frame_with_onset``: the first frame whose attached audio holds the onset; ``mouth_open``
    (pattern engine only): the first frame whose mouth box is open.
    """
    from liveface.client import Frame

    onset: list[float] = []
    got: dict[str, float] = {}
    wanted = 2 if pattern else 1

    def mark(i: int) -> None:
        if i == 0:
            onset.append(time.monotonic())

    async def watch() -> None:
        async for item in session:
            if not isinstance(item, Frame) or not onset:
                continue
            if "frame_with_onset" not in got and float(np.abs(item.audio).max()) > 0.05:
                got["frame_with_onset"] = item.received_at - onset[0]
            if pattern and "mouth_open" not in got and mouth_level(item.image()) > 60:
                got["mouth_open"] = item.received_at - onset[0]
            if len(got) == wanted:
                return

    silence = int(0.7 * RATE)
    audio = np.concatenate([np.zeros(silence, np.float32), speech(0.3)])
    watcher = asyncio.ensure_future(watch())
    try:
        # One clock for the whole trial; the pause after it lets the server's queue drain, so
        # pushing never drifts ahead of real time from one trial to the next.
        await push_real_time(session, audio, lambda i: mark(i - silence))
        await asyncio.wait([watcher], timeout=2.0)
        await asyncio.sleep(0.3)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return got


async def latency(endpoint: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Onset-to-frame latencies (seconds) over ``args.trials`` onsets."""
    from liveface.client import AsyncClient

    results: dict[str, list[float]] = {"frame_with_onset": [], "mouth_open": []}
    async with AsyncClient(endpoint) as client:
        session = await client.open(format=args.format)
        for _ in range(args.trials):
            for name, value in (await one_onset(session, args.engine == "pattern")).items():
                results[name].append(value)
        await session.close()
    return results


def mouth_level(frame: np.ndarray) -> float:
    from tests.doubles import mouth_level as level

    return level(frame)


async def capacity_step(
    endpoint: str, n: int, seconds: float, fmt: str
) -> tuple[float, dict[str, int]]:
    """Run ``n`` sessions for ``seconds``; returns the bad-frame fraction and the counts."""
    from liveface.client import AsyncClient, Frame

    # Room for every frame of the measured window (fps <= 60) and nothing much more.
    room = int(seconds * 60) + 50
    clients = [await AsyncClient(endpoint, queue_size=room).connect() for _ in range(n)]
    counts = {"expected": 0, "fresh": 0, "repeated": 0, "gaps": 0}
    try:
        sessions = [await c.open(format=fmt) for c in clients]
        fps = sessions[0].fps
        audio = np.tile(speech(1.0), int(seconds) + 3)
        pushers = [asyncio.ensure_future(push_real_time(s, audio)) for s in sessions]
        await asyncio.sleep(1.0)  # warm-up: first chunks, buffers settle
        for s in sessions:
            s.take_ready()  # drop the warm-up frames
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        for s in sessions:
            frames = [x for x in s.take_ready() if isinstance(x, Frame) and x.received_at > t0]
            idx = [f.index for f in frames]
            counts["expected"] += int(seconds * fps)
            counts["fresh"] += sum(f.fresh for f in frames)
            counts["repeated"] += sum(not f.fresh for f in frames)
            counts["gaps"] += sum(b - a - 1 for a, b in itertools.pairwise(idx))
        for p in pushers:
            p.cancel()
        await asyncio.gather(*pushers, return_exceptions=True)
    finally:
        for c in clients:
            await c.aclose()
    # Every expected frame not delivered fresh is bad: repeated, dropped or missing.
    bad = max(0, counts["expected"] - counts["fresh"]) / max(1, counts["expected"])
    return bad, counts


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0 if values else float("nan")


async def run(args: argparse.Namespace) -> None:
    proc, endpoint = start_server(args)
    try:
        print(
            f"engine={args.engine} size={args.size} fps={args.fps} "
            f"chunk_frames={args.chunk_frames} delay_ms={args.delay_ms} format={args.format} "
            f"cpus={os.cpu_count()}"
        )
        lat = await latency(endpoint, args)
        for name, values in lat.items():
            if values:
                print(
                    f"latency {name:17s} n={len(values):3d} p50={pct(values, 50):6.1f} ms "
                    f"p95={pct(values, 95):6.1f} ms"
                )
        best = 0
        for n in range(1, args.max_sessions + 1):
            bad, counts = await capacity_step(endpoint, n, args.ramp_seconds, args.format)
            ok = bad * 100 <= args.bad_pct
            print(f"sessions={n:2d} bad={bad * 100:5.2f}% {counts} {'ok' if ok else 'FAIL'}")
            if not ok:
                break
            best = n
        print(f"real-time sessions (<= {args.bad_pct}% repeated or dropped): {best}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", choices=["warp", "pattern"], default="warp")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--chunk-frames", type=int, default=1)
    p.add_argument("--delay-ms", type=int, default=80)
    p.add_argument("--format", choices=["rgb", "jpeg"], default="rgb", help="frames on the wire")
    p.add_argument("--trials", type=int, default=15, help="speech onsets timed")
    p.add_argument("--max-sessions", type=int, default=12, help="stop the ramp here")
    p.add_argument("--ramp-seconds", type=float, default=5.0, help="measured time per step")
    p.add_argument("--bad-pct", type=float, default=2.0)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # a script run from anywhere: find liveface and tests
    asyncio.run(serve(args) if args.serve else run(args))


if __name__ == "__main__":
    main()
