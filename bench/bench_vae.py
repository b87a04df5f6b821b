"""Streaming decode speed of the video VAEs: full Wan VAEs vs the tiny TAEHV decoder.

Each model decodes one latent frame per call with its stream state, as the engine does. The first
call (one video frame) is timed apart; the timed calls each emit ``temporal_ratio`` (4) frames.
Weights are random (timing does not depend on them). Numbers are printed, never asserted.

    python bench/bench_vae.py                       # CPU, 128x128 and 256x256
    python bench/bench_vae.py --device cuda         # 512x512 and 704x1280, bf16, peak memory
    python bench/bench_vae.py --models taew2_2 --sizes 704x1280 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from liveface.engines.diffusion.backends.precision import resolve_dtype
from liveface.engines.diffusion.vae import build_vae

DEFAULT_SIZES = {"cpu": "128x128,256x256", "cuda": "512x512,704x1280"}
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Result:
    model: str
    size: str
    latent: str
    first_ms: float
    median_ms: float
    frames_per_step: int
    steps: int
    state_mib: float
    peak_mib: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def bench_one(
    name: str, height: int, width: int, args: argparse.Namespace, device: torch.device
) -> Result | str:
    dtype = resolve_dtype(args.dtype)
    model = build_vae(name, device=device, dtype=dtype)
    r = model.spatial_ratio
    if height % r or width % r:
        return f"{name}: {height}x{width} is not a multiple of {r}, skipped"
    lh, lw = height // r, width // r
    gen = torch.Generator(device=device).manual_seed(0)
    latent = torch.randn(1, model.latent_channels, 1, lh, lw, generator=gen, device=device)
    latent = latent.to(dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    state = model.init_state(1, lh, lw)
    _sync(device)
    t0 = time.perf_counter()
    model.decode_step(latent, state)  # the clip's first latent frame: one video frame
    _sync(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    times: list[float] = []
    frames = 0
    started = time.perf_counter()
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        out = model.decode_step(latent, state)
        _sync(device)
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
            frames = out.shape[1]
        if times and time.perf_counter() - started > args.budget_s:
            break
    if not times:  # the budget ran out during warm-up: report what was measured
        times, frames = [first_ms], 1
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Result(
        model=name,
        size=f"{height}x{width}",
        latent=f"{lh}x{lw}",
        first_ms=first_ms,
        median_ms=statistics.median(times),
        frames_per_step=frames,
        steps=len(times),
        state_mib=state.nbytes() / 2**20,
        peak_mib=peak,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", default="wan2.2,wan2.1,taew2_2", help="comma-separated presets")
    parser.add_argument("--sizes", default=None, help="HxW list, e.g. 128x128,256x256")
    parser.add_argument("--steps", type=int, default=3, help="timed latent frames per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steady-state steps")
    parser.add_argument("--budget-s", type=float, default=120.0, help="stop a case after this")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [parse_size(s) for s in (args.sizes or DEFAULT_SIZES[args.device]).split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = torch.get_num_threads()
    print(f"device {name}, dtype {args.dtype}, threads {threads}, torch {torch.__version__}")
    header = (
        f"{'model':<9}{'output':>10}{'latent':>8}{'first ms':>10}{'ms/latent':>11}"
        f"{'ms/frame':>10}{'steps':>6}{'state MiB':>11}{'peak MiB':>10}"
    )
    print(header)
    with torch.inference_mode():
        for h, w in sizes:
            for model in args.models.split(","):
                res = bench_one(model.strip(), h, w, args, device)
                if isinstance(res, str):
                    print(res)
                    continue
                peak = "-" if res.peak_mib is None else f"{res.peak_mib:.0f}"
                print(
                    f"{res.model:<9}{res.size:>10}{res.latent:>8}{res.first_ms:>10.1f}"
                    f"{res.median_ms:>11.1f}{res.median_ms / res.frames_per_step:>10.1f}"
                    f"{res.steps:>6}{res.state_mib:>11.1f}{peak:>10}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
