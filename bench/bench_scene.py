"""Benchmark of scenes on the CPU warp engine: render time per frame with 1 to N characters.

Run as ``.venv/bin/python bench/bench_scene.py``. Numbers are printed (medians), never asserted.
The scene is scikit-image's astronaut repeated side by side (every other one mirrored), rendered
at a frame width of 512 px per character; every character speaks all the time (its own copy of a
syllabic signal, shifted), the worst case for the mouths. Thread pools are limited to one thread,
so the figures are per core. Also timed: the scene pipeline's cut (mix + per-character windows)
per chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for _lib in ("OMP", "OPENBLAS", "MKL", "NUMEXPR"):
    os.environ.setdefault(f"{_lib}_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread limits)

SR = 16000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--characters", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--frames", type=int, default=100, help="frames per timed run")
    p.add_argument("--runs", type=int, default=3, help="timed runs (median)")
    return p.parse_args()


def voice(n: int, shift: int) -> np.ndarray:
    t = (np.arange(n) + shift) / SR
    x = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 15))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def main() -> None:
    import cv2
    from skimage import data

    from liveface.engines.base import SceneRequest
    from liveface.engines.warp import WarpConfig, WarpEngine
    from liveface.pipeline.compose import compose_portraits
    from liveface.pipeline.scene import ScenePipeline
    from liveface.pipeline.stream import StreamConfig

    args = parse_args()
    cv2.setNumThreads(1)
    a = data.astronaut()
    print(f"frames per run {args.frames}, runs {args.runs}, one thread")
    for n in args.characters:
        faces = [a if i % 2 == 0 else np.ascontiguousarray(a[:, ::-1]) for i in range(n)]
        image, _ = compose_portraits(faces)
        engine = WarpEngine(WarpConfig(width=512 * n, height=512))
        t0 = time.perf_counter()
        state, _ = engine.open_scene(image, None, {}, SceneRequest(count=n))
        open_s = time.perf_counter() - t0
        samples = (args.frames + 2) * SR // engine.spec.fps
        cut_ms, frame_ms = [], []
        for run in range(args.runs + 1):
            stream = ScenePipeline(engine.spec, StreamConfig(live=False, max_pending_s=30.0), n)
            stream.start(0.0)
            for k in range(n):
                stream.push(voice(samples, k * 4000), now=0.0, character=k)
            t0 = time.perf_counter()
            chunks = stream.tick(samples / SR)[: args.frames]
            t1 = time.perf_counter()
            for chunk in chunks:
                engine.generate([(state, chunk)])
            t2 = time.perf_counter()
            if run:  # the first run warms up
                cut_ms.append((t1 - t0) * 1000 / len(chunks))
                frame_ms.append((t2 - t1) * 1000 / len(chunks))
        engine.close(state)
        ms = statistics.median(frame_ms)
        print(
            f"{n} character(s), {512 * n}x512: open {open_s:.2f} s, render "
            f"{ms:.1f} ms/frame ({1000 / ms:.0f} fps, {1000 / ms / engine.spec.fps:.1f}x real "
            f"time), scene cut {statistics.median(cut_ms):.3f} ms/chunk"
        )


if __name__ == "__main__":
    main()
