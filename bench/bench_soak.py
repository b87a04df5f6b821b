"""Soak: many connect/close cycles (WebRTC and ZeroMQ mixed) against one server; does memory level
off and come back?

A real ``liveface serve`` (HTTP and ZeroMQ) runs in its own process. Clients open sessions in
waves of ``--concurrency``: every other cycle is a WebRTC peer (it waits for a few video frames,
then hangs up), the others are ZeroMQ sessions (open, push half a second of speech, wait for
frames, close). Every ``--every`` cycles it prints the server's RSS (main process and engine
children), threads and open file descriptors; after the load it waits and prints them again.

    python bench/bench_soak.py --cycles 1000 --every 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sessions as bs  # the server launcher and the WebRTC peer

from liveface.client import AsyncClient, Frame


def proc_stats(pid: int) -> tuple[float, int, int, list[float]]:
    """RSS (MB), threads and fds of ``pid`` and its children, and each one's RSS (MB)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    rss = threads = fds = 0
    each: list[float] = []
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fields = dict(x.split(":", 1) for x in status.splitlines() if ":" in x)
            rss += int(fields["VmRSS"].split()[0])
            each.append(int(fields["VmRSS"].split()[0]) / 1024)
            threads += int(fields["Threads"])
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, KeyError):
            continue
    return rss / 1024, threads, fds, each


async def webrtc_cycle(url: str, seed: int) -> None:
    pc = await bs.open_peer(url, seed)
    deadline = time.monotonic() + 10
    start = sum(d.frames for d in bs.DECODERS)
    while sum(d.frames for d in bs.DECODERS) < start + 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await pc.close()


async def zmq_cycle(endpoint: str) -> None:
    t = np.arange(8000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    async with AsyncClient(endpoint) as client:
        session = await client.open()
        await session.push(pcm, rate=16000)
        await session.end_segment()
        frames = 0
        async with asyncio.timeout(10):
            async for item in session:
                frames += isinstance(item, Frame)
                if frames >= 5:
                    break
        await session.close()


async def main_async(args: argparse.Namespace) -> None:
    port = bs.free_port()
    url, endpoint = f"http://127.0.0.1:{port}", f"tcp://127.0.0.1:{bs.free_port()}"
    args.server_args = ["--zmq", endpoint, "--engine-processes", str(args.engine_processes),
                        "--max-sessions", str(2 * args.concurrency)]  # fmt: skip
    args.server_cpus = ""
    with bs.server(args, port) as proc:
        await bs.wait_healthy(url)
        base = proc_stats(proc.pid)
        print(f"start: RSS {base[0]:.0f} MB, {base[1]} threads, {base[2]} fds", flush=True)
        rss_marks = []
        t0 = time.monotonic()
        done = failures = 0
        while done < args.cycles:
            wave = []
            for k in range(min(args.concurrency, args.cycles - done)):
                n = done + k
                wave.append(webrtc_cycle(url, n) if n % 2 == 0 else zmq_cycle(endpoint))
            results = await asyncio.gather(*wave, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors and not failures:
                print(f"first failure: {errors[0]!r}", flush=True)
            failures += len(errors)
            before = done
            done += len(wave)
            if done // args.every > before // args.every:
                rss, threads, fds, each = proc_stats(proc.pid)
                rss_marks.append(rss)
                print(f"{done:5d} cycles ({time.monotonic() - t0:5.0f} s): RSS {rss:6.0f} MB, "
                      f"{threads:3d} threads, {fds:4d} fds, {failures} failed "
                      f"(per process {' + '.join(f'{x:.0f}' for x in each)})",
                      flush=True)  # fmt: skip
        await asyncio.sleep(args.settle)
        end = proc_stats(proc.pid)
        print(f"after {args.settle:.0f} s idle: RSS {end[0]:.0f} MB, {end[1]} threads, "
              f"{end[2]} fds (per process {' + '.join(f'{x:.0f}' for x in end[3])})")  # fmt: skip
        half = rss_marks[len(rss_marks) // 2 :]
        if len(half) >= 2:
            slope = (half[-1] - half[0]) / max(1, (len(half) - 1) * args.every) * 100
            print(f"plateau (second half of the marks): median {statistics.median(half):.0f} MB, "
                  f"slope {slope:+.1f} MB per 100 cycles")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--engine-processes", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--server-log", help="write the server's stderr here")
    args = ap.parse_args()
    bs.install_counting_decoder()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
