"""Speed and memory of Wan-S2V: DiT steps, clips, the live engine.

CPU (always): the tiny S2V model of the tests, from a tiny official-layout folder written to a
temporary directory: ms per DiT forward (one denoising step of one CFG branch), ms per offline
clip, and the live engine's time to first frame and sustained fps at 4 steps without guidance.

CUDA (``--device cuda``): Wan2.2-S2V-14B with random weights (bf16; ``--fp8`` adds FP8 weight
storage) at 512x512 and 704x1280, one 80-frame clip (20 latent frames, 19 motion latents): ms
per DiT forward, the live engine's sustained fps at 4 steps without guidance (4 forwards + the
Wan2.1 VAE decode and motion re-encode per clip), time to first frame (the first clip) and peak
GPU memory. Numbers are printed (medians), never asserted.

    python bench/bench_s2v.py
    python bench/bench_s2v.py --device cuda [--fp8] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT

GPU_SIZES = ((512, 512), (704, 1280))
INFER_FRAMES = 80


def median_ms(
    fn: Callable[[], object], runs: int, sync: Callable[[], None], warmup: int = 3
) -> float:
    """Median wall time of ``fn`` after ``warmup`` untimed calls (kernel selection, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def step_inputs(model: WanS2VDiT, h: int, w: int, frames: int, device: torch.device) -> tuple:
    """Random clip inputs for a latent grid of ``h x w`` (motion present)."""
    c, dt = model.config, model.patch_embedding.weight.dtype
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, device=device, dtype=dt)

    text = model.prepare_context([rand(min(16, c.text_len), c.text_dim)])
    motion = rand(1, c.in_dim, model.s2v.motion_latents, h, w)
    clip = model.prepare_clip(rand(1, c.in_dim, 1, h, w), motion, frames)
    audio = model.clip_audio(rand(1, model.s2v.audio_layers, model.s2v.audio_dim, 4 * frames))
    return rand(1, c.in_dim, frames, h, w), text, clip, audio


@torch.no_grad()
def cpu_part(runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines" / "diffusion"))
    from s2v_checkpoint import write_s2v_checkpoint

    from liveface.engines.diffusion.checkpoint.s2v_loading import load_s2v_bundle
    from liveface.engines.diffusion.engine_s2v import S2VEngine, S2VEngineConfig
    from liveface.engines.diffusion.streaming.s2v_clips import S2VSampling
    from liveface.pipeline.audio_ring import AudioRing
    from liveface.pipeline.chunker import Chunker

    torch.set_num_threads(2)
    print("CPU, tiny S2V (dim 48, 3 layers), 64x64, 2 threads")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_s2v_bundle(write_s2v_checkpoint(Path(tmp)))
        model, t = bundle.dit, torch.tensor([500.0])
        x, text, clip, audio = step_inputs(model, 8, 8, 4, torch.device("cpu"))
        ms = median_ms(lambda: model.denoise(x, t, text, clip, audio), runs * 5, lambda: None)
        print(f"  DiT forward, 4 latent frames:              {ms:9.2f} ms")
        sampling = S2VSampling(infer_frames=16, steps=4, guidance=1.0)
        engine = S2VEngine(bundle, S2VEngineConfig(width=64, height=64, sampling=sampling))
        spec = engine.spec
        rng = np.random.default_rng(0)
        wave = (rng.standard_normal(16000 * 6) * 0.1).astype(np.float32)
        ring = AudioRing(wave.shape[0] + 1)
        ring.append(wave)
        chunks = list(Chunker(spec, ring, lambda a, b: True).pop_ready())[: runs + 1]
        t0 = time.perf_counter()
        state = engine.open(None, None, {})
        engine.generate([(state, chunks[0])])
        first_ms = (time.perf_counter() - t0) * 1000
        times = []
        for chunk in chunks[1:]:
            t0 = time.perf_counter()
            engine.generate([(state, chunk)])
            times.append(time.perf_counter() - t0)
        fps = spec.chunk_frames / statistics.median(times)
        print(f"  live, 16-frame clips, 4 steps, no CFG:     {fps:9.2f} fps sustained")
        print(f"  time to first frame (open + first clip):   {first_ms:9.0f} ms")
        offline = S2VEngine(
            bundle,
            S2VEngineConfig(width=64, height=64, sampling=S2VSampling(infer_frames=16, steps=8)),
        )
        t0 = time.perf_counter()
        out = list(offline.render_clips(wave[:16000], None, None))
        per_clip = (time.perf_counter() - t0) * 1000 / len(out)
        print(f"  offline clip (16 frames, 8 steps, CFG):    {per_clip:9.0f} ms")


def random_14b(device: torch.device, fp8: bool) -> WanS2VDiT:
    from liveface.engines.diffusion.backends.fp8 import quantize_dit_linears

    with torch.device("meta"):
        model = WanS2VDiT(S2VConfig.preset("s2v-14b"))
    model = model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            keep = any(k in name for k in ("time_embedding", "time_projection", "modulation"))
            p.data = (torch.randn_like(p, dtype=torch.float32) * 0.02).to(
                torch.float32 if keep else torch.bfloat16
            )
    if fp8:
        quantize_dit_linears(model, device)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def gpu_part(runs: int, fp8: bool) -> None:
    from liveface.engines.diffusion.vae import build_vae

    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    print(
        f"CUDA {torch.cuda.get_device_name(dev)}, Wan2.2-S2V-14B random weights, "
        f"bf16{' + FP8 weights' if fp8 else ''}, clip of {INFER_FRAMES} frames"
    )
    torch.cuda.reset_peak_memory_stats()
    model = random_14b(dev, fp8)
    weights_gb = torch.cuda.memory_allocated() / 1e9
    vae = build_vae("wan2.1", device=dev, dtype=torch.bfloat16)
    print(f"  weights: {weights_gb:.1f} GB (DiT)")
    for height, width in GPU_SIZES:
        h, w, frames = height // 8, width // 8, INFER_FRAMES // 4
        torch.cuda.reset_peak_memory_stats()
        inputs = step_inputs(model, h, w, frames, dev)
        t = torch.tensor([500.0], device=dev)

        def forward(i: tuple = inputs, t: torch.Tensor = t) -> None:
            model.denoise(i[0], t, *i[1:])

        step = median_ms(forward, runs, sync)
        z = torch.randn(1, 16, 19 + frames, h, w, device=dev, dtype=torch.bfloat16)
        last = torch.zeros(1, 73, height, width, 3, device=dev, dtype=torch.bfloat16)

        def vae_work(z: torch.Tensor = z, last: torch.Tensor = last) -> None:
            vae.decode(z, latents_per_step=1)
            vae.encode(last, latents_per_step=1)

        vae_ms = median_ms(vae_work, max(1, runs // 2), sync)
        clip_ms = 4 * step + vae_ms
        peak = torch.cuda.max_memory_allocated() / 1e9
        print(
            f"  {height}x{width}: {step:8.0f} ms/forward   4 steps no CFG: "
            f"{INFER_FRAMES / (clip_ms / 1000):6.2f} fps sustained, first frame after "
            f"{clip_ms / 1000:6.1f} s   40 steps CFG clip: {(80 * step + vae_ms) / 1000:6.0f} s"
            f"   peak {peak:5.1f} GB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fp8", action="store_true", help="FP8 weight storage (GPU part)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpu_part(args.runs)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        gpu_part(args.runs, args.fp8)
    else:
        print("GPU part skipped (run with --device cuda on a GPU machine)")


if __name__ == "__main__":
    main()
