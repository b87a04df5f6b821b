"""Speed and memory of LiveAvatar: block time, time to first frame, pipeline overhead, memory.

CPU (always): the tiny S2V model of the tests with a LoRA merged, from a tiny folder written to
a temporary directory, 64x64: the DiT's time per block (4 steps) and per step, the engine's time
per chunk (speech features, 4 steps, VAE decode of 12 frames) and time to first frame, and the
timestep-forcing pipeline's overhead per block (messages between ranks, scheduling) as a ratio of
the block's compute, with 2 and 4 ranks (gloo, one thread each, as the single-process baseline).

CUDA (``--device cuda``): LiveAvatar's DiT (Wan2.2-S2V-14B, random weights, bf16; ``--fp8``
stores the block weights in FP8) at 704x384 (their 720x400 fitted to multiples of 64) and
512x512: ms per step with the rolling caches full, fps of one session (4 steps + Wan2.1 VAE
decode of a block), time to first frame (sink prefill, first block, decode), memory (weights,
per-session caches, peak), sessions at real time (batched blocks), compiled or eager; with
several GPUs the pipeline (one step per rank, ``min(4, GPUs)`` ranks) and its throughput.
Their published figures are printed beside: 20 fps (v1) / 45 fps (v2) on 5 H800, 1.21 s to first
frame; users on one GPU report 6-9 fps. Numbers are printed (medians), never asserted.

    python bench/bench_liveavatar.py
    python bench/bench_liveavatar.py --device cuda [--fp8] [--no-compile] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_s2v import random_14b  # the 14B with random bf16 weights, as bench_s2v builds it

from liveface.engines.diffusion.dit.s2v.causal import CausalS2V
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.streaming.liveavatar import (
    BlockFeed,
    BlockWork,
    LiveAvatarSampling,
    StepRunner,
)

PUBLISHED = "theirs: 20 fps (v1) / 45 fps (v2) on 5 H800, first frame 1.21 s; 1 GPU: 6-9 fps"
GPU_SIZES = ((704, 384), (512, 512))
BLOCK_S = 0.75  # 12 frames at 16 fps


def median(fn: Callable[[], object], runs: int, sync: Callable[[], None], warmup: int = 2) -> float:
    """Median seconds of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def block_runner(
    runner: StepRunner, key: str, features: torch.Tensor, h: int, w: int
) -> Callable[[], None]:
    """One block of one session through ``runner`` per call (its feed keeps the stream going)."""
    feed = BlockFeed(runner.sampling, 0, (runner.causal.dit.config.in_dim, h, w))

    def one() -> None:
        work = feed.next(key, features)
        runner.run([work])
        feed.done(work)

    return one


def open_session(runner: StepRunner, key: str, h: int, w: int) -> None:
    c = runner.causal
    cfg, s2v = c.dit.config, c.dit.s2v
    ref = torch.randn(1, cfg.in_dim, 1, h, w)
    motion = torch.randn(1, cfg.in_dim, s2v.motion_latents, h, w)
    runner.open(key, torch.randn(8, cfg.text_dim), ref, motion)


# -- CPU ------------------------------------------------------------------------------------------
@torch.no_grad()
def cpu_part(runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines" / "diffusion"))
    from liveavatar_helpers import chunks, speech, write_liveavatar_folder

    from liveface.engines.diffusion.liveavatar_setup import create_liveavatar_engines

    torch.set_num_threads(1)
    print("CPU, tiny S2V (dim 48, 3 layers) + LoRA, 64x64, 1 thread per process")
    root = write_liveavatar_folder(Path(tempfile.mkdtemp()) / "S2V")
    (engine,) = create_liveavatar_engines(root, width=64, height=64, device="cpu")
    runner: StepRunner = engine.denoiser.runner  # type: ignore[attr-defined]
    s2v = runner.causal.dit.s2v
    features = torch.randn(1, s2v.audio_layers, s2v.audio_dim, 12)
    open_session(runner, "bench", 8, 8)
    block = block_runner(runner, "bench", features, 8, 8)
    for _ in range(6):  # past the ring's wrap: every later block attends to a full cache
        block()
    local = median(block, runs * 5, lambda: None)
    print(f"  DiT block (4 steps, cache full): {local * 1000:7.1f} ms   "
          f"per step {local * 250:6.1f} ms")  # fmt: skip
    t0 = time.perf_counter()
    state = engine.open(None, None, {"seed": 1})
    stream = chunks(engine.spec, speech(12.0), runs + 3)
    engine.generate([(state, stream[0])])
    ttff = time.perf_counter() - t0
    times = []
    for c in stream[1:]:
        t1 = time.perf_counter()
        engine.generate([(state, c)])
        times.append(time.perf_counter() - t1)
    chunk = statistics.median(times)
    print(f"  engine chunk (features + DiT + decode, 12 frames): {chunk * 1000:7.1f} ms "
          f"= {12 / chunk:5.2f} fps   first frame after {ttff:5.2f} s (open + chunk)")  # fmt: skip
    engine.close(state)
    for ranks, launcher in ((2, "spawn"), (4, "spawn")):
        pipeline_overhead(root, ranks, launcher, local, features, runs)


def pipeline_overhead(
    root: Path, ranks: int, launcher: str, local: float, features: torch.Tensor, runs: int
) -> None:
    from liveface.engines.diffusion.liveavatar_setup import CheckpointSource
    from liveface.engines.diffusion.parallel.group import PipelineConfig, PipelineDenoiser

    source = CheckpointSource(str(root), str(root / "liveavatar.safetensors"), compile=False)
    sampling = LiveAvatarSampling()
    pipe = PipelineDenoiser(source, sampling, PipelineConfig(ranks, launcher, threads=1))
    try:
        cfg = S2VConfig.preset("tiny")
        keys = ("a", "b")
        feeds = {k: BlockFeed(sampling, 0, (cfg.dit.in_dim, 8, 8)) for k in keys}
        for k in keys:
            motion = torch.randn(1, 16, 4, 8, 8)
            pipe.open(k, torch.randn(8, cfg.dit.text_dim), torch.randn(1, 16, 1, 8, 8), motion)

        def block(key: str) -> None:
            work = feeds[key].next(key, features)
            pipe.run([work])
            feeds[key].done(work)

        for _ in range(6):
            block("a")
            block("b")
        one = median(lambda: block("a"), runs * 3, lambda: None)

        def two_lanes() -> None:  # two sessions in flight at once (two engine lanes)
            t = threading.Thread(target=block, args=("b",))
            t.start()
            block("a")
            t.join()

        both = median(two_lanes, runs * 3, lambda: None)
        print(
            f"  pipeline {ranks} ranks ({launcher}): block {one * 1000:7.1f} ms, overhead per "
            f"block {(one - local) / local:5.2f} x compute; 2 sessions in flight: "
            f"{2 / both:5.2f} blocks/s vs {1 / local:5.2f} in one process"
        )
    finally:
        pipe.shutdown()


# -- CUDA -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomSource:
    """A rank's model: S2V-14B with random weights (a LoRA merge changes no timing)."""

    fp8: bool = False
    compile: bool = True

    def build(self, device: torch.device) -> CausalS2V:
        causal = CausalS2V(random_14b(device, self.fp8))
        if self.compile:
            causal.functions.compile(device)
        return causal


def _memory(dev: torch.device, peak: bool = False) -> float:
    """GB allocated (or the peak) on a CUDA device; 0 elsewhere."""
    if dev.type != "cuda":
        return 0.0
    return (
        torch.cuda.max_memory_allocated(dev) if peak else torch.cuda.memory_allocated(dev)
    ) / 1e9


@torch.no_grad()
def gpu_part(runs: int, fp8: bool, compile_: bool) -> None:
    from liveface.engines.diffusion.vae import build_vae

    dev = torch.device("cuda")
    kind = f"bf16{' + FP8 weights' if fp8 else ''}, {'compiled' if compile_ else 'eager'}"
    print(f"CUDA {torch.cuda.get_device_name(dev)}, LiveAvatar DiT (S2V-14B random weights), "
          f"{kind}; {PUBLISHED}")  # fmt: skip
    source = RandomSource(fp8, compile_)
    causal = source.build(dev)
    print(f"  weights {_memory(dev):.1f} GB")
    vae = build_vae("wan2.1", device=dev, dtype=torch.bfloat16)
    one_device(causal, vae, GPU_SIZES, runs)
    del causal
    torch.cuda.empty_cache()
    gpus = torch.cuda.device_count()
    if gpus >= 2:
        gpu_pipeline(min(4, gpus), source, runs)


def one_device(causal: CausalS2V, vae, sizes: tuple[tuple[int, int], ...], runs: int) -> None:  # type: ignore[no-untyped-def]
    """One session (and two batched) on the model's device, per size (width, height)."""
    dev = causal.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sampling = LiveAvatarSampling()
    runner = StepRunner(causal, sampling, range(sampling.steps))
    s2v, vdt = causal.dit.s2v, next(vae.parameters()).dtype
    for width, height in sizes:
        h, w = height // 8, width // 8
        features = torch.randn(1, s2v.audio_layers, s2v.audio_dim, 12)
        t0 = time.perf_counter()
        runner.warm_up(h, w)
        sync()
        warm = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        before = _memory(dev)
        t0 = time.perf_counter()
        open_session(runner, "s", h, w)
        feeds = {k: BlockFeed(sampling, 0, (s2v.dit.in_dim, h, w)) for k in ("s", "t")}
        state = vae.init_state(1, h, w)
        vae.decode_step(torch.randn(1, 16, 7, h, w, device=dev, dtype=vdt), state)

        def blocks(
            keys: tuple[str, ...] = ("s",),
            a: torch.Tensor = features,
            fs: dict[str, BlockFeed] = feeds,
        ) -> list[BlockWork]:
            works = [fs[k].next(k, a) for k in keys]
            runner.run(works)
            for k, work in zip(keys, works, strict=True):
                fs[k].done(work)
            return works

        vae.decode_step(blocks()[0].latents.to(vdt), state)
        sync()
        ttff = time.perf_counter() - t0
        session_gb = runner.nbytes("s") / 1e9
        for _ in range(4):
            blocks()
        dit = median(blocks, runs, sync)
        z = torch.randn(1, 16, 3, h, w, device=dev, dtype=vdt)
        decode = median(lambda z=z, st=state: vae.decode_step(z, st), runs, sync)
        held = _memory(dev) - before
        open_session(runner, "t", h, w)
        for _ in range(4):
            blocks(("s", "t"))
        pair = median(lambda: blocks(("s", "t")), runs, sync)
        per_session = pair / 2 + decode
        print(
            f"  {width}x{height}: step {dit * 250:6.1f} ms, block {dit * 1000:6.0f} ms + decode "
            f"{decode * 1000:5.0f} ms = {12 / (dit + decode):5.1f} fps one session "
            f"({12 / max(dit, decode):5.1f} with decode overlapped); first frame {ttff:4.2f} s "
            f"(warm-up {warm:.0f} s); caches {session_gb:4.1f} GB a session (held {held:4.1f}), "
            f"peak {_memory(dev, peak=True):5.1f} GB; 2 sessions batched {pair * 1000:6.0f} ms "
            f"a block: ~{int(BLOCK_S // per_session)} sessions at real time"
        )
        runner.close("s")
        runner.close("t")


def gpu_pipeline(ranks: int, source: RandomSource, runs: int) -> None:
    from liveface.engines.diffusion.parallel.group import PipelineConfig, PipelineDenoiser

    width, height = GPU_SIZES[0]
    h, w = height // 8, width // 8
    sampling = LiveAvatarSampling()
    pipe = PipelineDenoiser(source, sampling, PipelineConfig(ranks, warm_up=(h, w)))
    try:
        keys = [f"s{i}" for i in range(ranks)]
        feeds = {k: BlockFeed(sampling, 0, (16, h, w)) for k in keys}
        features = torch.randn(1, 25, 1024, 12)
        for k in keys:
            pipe.open(k, torch.randn(8, 4096), torch.randn(1, 16, 1, h, w),
                      torch.randn(1, 16, 19, h, w))  # fmt: skip

        def block(key: str) -> None:
            work = feeds[key].next(key, features)
            pipe.run([work])
            feeds[key].done(work)

        one = median(lambda: block(keys[0]), runs, lambda: None)

        def full() -> None:  # one session per rank in flight: the pipeline is full
            threads = [threading.Thread(target=block, args=(k,)) for k in keys]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        all_in = median(full, runs, lambda: None)
        print(
            f"  pipeline of {ranks} GPUs at {width}x{height}: block latency {one * 1000:6.0f} ms, "
            f"{12 * ranks / all_in:5.1f} frames/s with {ranks} sessions in flight "
            f"({12 / one:5.1f} fps for one session)"
        )
    finally:
        pipe.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fp8", action="store_true", help="FP8 block weights (GPU part)")
    parser.add_argument("--no-compile", action="store_true", help="eager blocks (GPU part)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cpu_part(args.runs)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        gpu_part(args.runs, args.fp8, not args.no_compile)
    else:
        print("GPU part skipped (run with --device cuda on a GPU machine)")


if __name__ == "__main__":
    main()
