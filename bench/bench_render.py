"""Offline render, end to end: an audio file in, an mp4 out; how many times faster than real time.

The same call ``liveface render`` makes (decode, VAD, chunker, engine, pacer, H.264 + AAC encode
and mux), on an espeak-ng speech file of ``--seconds`` (sentences and pauses), at ``--size``.

    python bench/bench_render.py --seconds 60 --runs 3
    python bench/bench_render.py --seconds 60 --runs 3 --still   # no head sway

It also prints the CPU time a frame costs, summed over this process and the engine's child: the
render is CPU-bound, and 10x real time at 25 fps leaves 8 ms of CPU a frame on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engines
from liveface.runtime.render import VideoEncoding, render


def speech_file(path: Path, seconds: float) -> Path:
    """espeak-ng sentences with pauses, cut to ``seconds``."""
    text = " ".join(
        f"This is sentence number {i}, spoken to the avatar. Then a pause." for i in range(60)
    )
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", "22050", str(path), "trim", "0", str(seconds)], check=True
    )
    return path


def _cpu_seconds() -> float:
    """CPU seconds of this process and its live children (the engine's), from Linux's /proc."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():  # ppid; then utime, stime at 11, 12
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--processes", type=int, default=1, help="engine processes (0: in-process)")
    ap.add_argument("--preset", default=VideoEncoding.preset, help="x264 preset")
    ap.add_argument("--crf", type=int, default=VideoEncoding.crf)
    ap.add_argument("--still", action="store_true", help="as `liveface render --still`")
    args = ap.parse_args()
    # As ``liveface render`` does: the CPU engine in a child process, the encoder here.
    config = ServerConfig(width=args.size, height=args.size, engine_processes=args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        audio = speech_file(Path(tmp) / "speech.wav", args.seconds)
        (engine,) = create_engines(config)
        options = {"head_motion": False} if args.still else None
        ratios, cpu = [], []
        for run in range(args.runs):
            out = Path(tmp) / f"out{run}.mp4"
            t0, c0 = time.perf_counter(), _cpu_seconds()
            enc = VideoEncoding(args.preset, args.crf)
            frames = render(engine, audio, out, encoding=enc, options=options)
            dt = time.perf_counter() - t0
            ratios.append(args.seconds / dt)
            cpu.append((_cpu_seconds() - c0) / frames * 1000.0)
            size = out.stat().st_size / 1e6
            print(f"run {run}: {frames} frames in {dt:.1f} s = {ratios[-1]:.1f}x real time "
                  f"({frames / dt:.0f} fps), {size:.1f} MB, {cpu[-1]:.1f} ms of CPU a frame",
                  flush=True)  # fmt: skip
        engine.shutdown()
    print(f"offline render {args.size}x{args.size}, {args.seconds:.0f} s of speech, x264 "
          f"{args.preset} CRF {args.crf}{', still' if args.still else ''}: median "
          f"{statistics.median(ratios):.1f}x real time, "
          f"{statistics.median(cpu):.1f} ms of CPU a frame (all processes)")  # fmt: skip


if __name__ == "__main__":
    main()
