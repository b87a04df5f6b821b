"""Benchmark of the CPU warp engine on one core: frames per second, open time, x real time.

Run as ``.venv/bin/python bench/bench_warp.py``. Numbers are printed, never asserted. Thread pools
(OpenMP, OpenBLAS, MKL, OpenCV) are limited to one thread and, where the OS allows, the process is
pinned to one CPU, so the figures are per core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SENTENCE = (
    "The quick brown fox jumps over the lazy dog. I am a talking portrait, rendering frames on "
    "one processor core, as fast as I can, while you listen."
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 720], help="square frame sizes")
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--frames", type=int, default=250, help="frames per fps run")
    p.add_argument("--audio-seconds", type=float, default=60.0, help="length of the x-RT audio")
    p.add_argument("--rt-runs", type=int, default=3, help="runs of the x-real-time measurement")
    p.add_argument("--chunk-frames", type=int, default=1, help="video frames per chunk")
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    return p.parse_args()


def limit_threads(pin: bool) -> tuple[str, set[int] | None]:
    """Limit every thread pool to one thread (before numpy/cv2 load) and pin to one CPU.

    Returns a description and the CPUs the process had before pinning (None if not pinned).
    """
    for lib in ("OMP", "OPENBLAS", "MKL", "NUMEXPR"):
        os.environ[f"{lib}_NUM_THREADS"] = "1"
    if pin and hasattr(os, "sched_setaffinity"):
        cpus = os.sched_getaffinity(0)
        cpu = min(cpus)
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}", set(cpus)
    return "not pinned", None


def speech_audio(seconds: float, sr: int):
    """``seconds`` of speech at ``sr`` Hz: espeak-ng repeated, or a syllabic harmonic signal."""
    import numpy as np
    from scipy.signal import resample_poly

    n = int(seconds * sr)
    exe = shutil.which("espeak-ng")
    if exe is not None:
        import wave

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.wav"
            subprocess.run([exe, "-w", str(path), SENTENCE], check=True, capture_output=True)
            with wave.open(str(path)) as w:
                rate = w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
        g = np.gcd(sr, rate)
        x = resample_poly(x, sr // g, rate // g).astype(np.float32)
        x = np.concatenate([x, np.zeros(sr // 2, np.float32)])
        return np.tile(x, n // x.size + 1)[:n], "espeak-ng speech"
    t = np.arange(n) / sr
    voice = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 15))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    return (0.2 * voice * syllables).astype(np.float32), "synthetic syllables (no espeak-ng)"


def main() -> None:
    args = parse_args()
    pinning, all_cpus = limit_threads(not args.no_pin)
    import cv2
    import numpy as np

    from liveface.engines.warp import WarpConfig, WarpEngine, WarpState
    from liveface.pipeline.audio_ring import AudioRing
    from liveface.pipeline.chunker import Chunker

    cv2.setNumThreads(1)
    print(f"warp engine benchmark: 1 thread per pool, {pinning}, cv2 {cv2.__version__}")

    t0 = time.perf_counter()
    WarpEngine(WarpConfig()).open(None, None, {})
    first_open = time.perf_counter() - t0

    sr = 16000
    audio, kind = speech_audio(args.audio_seconds, sr)

    def chunks_for(engine: WarpEngine, x: np.ndarray) -> list:
        ring = AudioRing(x.size + 1)
        ring.append(x)

        def voiced(a: int, b: int) -> bool:
            seg = x[max(0, a) : b]
            return bool(seg.size) and float(np.sqrt(np.mean(seg * seg))) > 0.005

        return Chunker(engine.spec, ring, voiced).pop_ready()

    def run_chunks(state: WarpState, chunks: list) -> tuple[float, float]:
        """Render ``chunks`` in order; returns (wall seconds, process CPU seconds)."""
        w0, c0 = time.perf_counter(), time.process_time()
        for c in chunks:
            engine.generate([(state, c)])
        return time.perf_counter() - w0, time.process_time() - c0

    # Wall clock is what a user sees; CPU time is the cost on the core, and stays meaningful when
    # other processes share the machine (wall-clock figures then drop, CPU-time ones do not).
    for size in args.sizes:
        engine = WarpEngine(WarpConfig(width=size, height=size, chunk_frames=args.chunk_frames))
        opens = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            engine.open(None, None, {})
            opens.append(time.perf_counter() - t0)
        line = [f"{size}x{size}:"]
        for label, x in (("talking", audio), ("idle", np.zeros_like(audio))):
            picked, done = [], 0
            for c in chunks_for(engine, x):
                if done >= args.frames:
                    break
                picked.append(c)
                done += c.num_frames
            wall, cpu = [], []
            for run in range(args.runs):
                w, c = run_chunks(engine.open(None, None, {"seed": run}), picked)
                wall.append(done / w)
                cpu.append(done / c)
            line.append(
                f"{statistics.median(wall):6.1f} fps {label} "
                f"({statistics.median(cpu):6.1f} per CPU-second),"
            )
        line.append(f"open {1000 * statistics.median(opens):.0f} ms")
        print(" ".join(line))
    print(f"  (medians of {args.runs} runs x {args.frames} frames each, head motion on)")

    engine = WarpEngine(WarpConfig(chunk_frames=args.chunk_frames))
    chunks = chunks_for(engine, audio)
    frames = sum(c.num_frames for c in chunks)

    def real_time_factor() -> tuple[float, float]:
        wall, cpu = [], []
        for run in range(args.rt_runs):
            w, c = run_chunks(engine.open(None, None, {"seed": run}), chunks)
            wall.append(args.audio_seconds / w)
            cpu.append(args.audio_seconds / c)
        return statistics.median(wall), statistics.median(cpu)

    what = f"{args.audio_seconds:.0f} s of {kind} through the engine alone"
    print(f"{what} (512x512, {frames} frames, median of {args.rt_runs} runs):")
    rt_wall, rt_cpu = real_time_factor()
    print(f"  one core: {rt_wall:.1f}x real time ({rt_cpu:.1f}x per CPU-second)")
    if all_cpus is not None and len(all_cpus) > 1:
        # The same run with OpenCV's own thread pool over every CPU the process may use.
        os.sched_setaffinity(0, all_cpus)
        cv2.setNumThreads(len(all_cpus))
        rt_wall, _ = real_time_factor()
        print(f"  {len(all_cpus)} cores (OpenCV threads): {rt_wall:.1f}x real time")
    print(f"first open of the process (loads the face models): {1000 * first_open:.0f} ms")


if __name__ == "__main__":
    main()
