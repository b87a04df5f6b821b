"""Training throughput: samples/s and memory of one optimizer step, and FLOPs per sample.

A sample is one engine chunk (``K`` new latent frames) with the engine's conditioning: the
reference latent and the pooled motion history run once through the DiT at t = 0 (the prefix),
then the new frames denoised against it with the audio adapter; loss, backward, AdamW. Batches
are synthetic tensors of the right shapes (data loading is not timed; it is a memory-mapped read
of a few MB per sample and runs in a background thread during training).

CPU: the ``tiny`` preset at 64x64 (the tests' world) and the ``small`` preset at 256x256, fp32.
CUDA (``--device cuda``): the Wan2.2-TI2V-5B preset at 512x512 with random weights, frozen in
bf16 with autocast, the Soul adapter in every block, gradient checkpointing; ``--trainable
adapter+lora`` adds LoRA. Numbers are printed, never asserted.

FLOPs are analytic (multiply-add = 2). The denoising pass costs about three forwards in training
(forward, backward through the frozen DiT for the activations' gradients, recomputation under
gradient checkpointing); the prefix costs one forward when only the adapter trains (no gradient
reaches it), three with LoRA. The "TFLOP/s" column divides that by the measured step time.

    python bench/bench_train.py                   # CPU; the GPU part says it is skipped
    python bench/bench_train.py --device cuda --batch 8 --runs 10
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.streaming.motion import MotionConfig, MotionLayout
from liveface.training.batch import Batch
from liveface.training.lora import LoRA
from liveface.training.model import Models
from liveface.training.objective import FlowMatchingLoss

VAE_SPATIAL = 16
#: Speech features assumed for the adapter: wav2vec2-base (768 wide, 12 layers + embeddings).
FEATURE_DIM, FEATURE_LAYERS = 768, 13
#: Forward-equivalents per training step (forward, activation backward, recomputation).
STEP_FORWARDS = 3.0


@dataclass
class Shape:
    preset: str
    height: int
    width: int
    chunk: int = 1

    def grid(self) -> tuple[int, int]:
        return self.height // VAE_SPATIAL, self.width // VAE_SPATIAL


def forward_flops(
    cfg: DiTConfig, audio: AudioConfig, layout: MotionLayout, chunk: int
) -> tuple[float, float]:
    """Forward FLOPs of one sample: the prefix (reference + pooled history at t = 0, with the
    prompt's keys/values) and the denoising pass of ``chunk`` new latent frames (with audio
    attention in ``audio.layers``)."""
    d, f, t = cfg.dim, cfg.ffn_dim, cfg.text_len
    per_frame = layout.tokens_per_frame
    prefix = per_frame + layout.history_tokens
    noisy = chunk * per_frame

    def block(tokens: int, keys: int) -> float:
        linear = 2 * tokens * (4 * d * d + 2 * d * d + 2 * d * f)  # self qkvo, cross q o, FFN
        return linear + 4 * tokens * keys * d + 4 * tokens * t * d

    text_kv = 2 * 2 * t * d * d  # cross-attention keys/values of the prompt, once per sample
    first = cfg.num_layers * (block(prefix, prefix) + text_kv)
    second = cfg.num_layers * block(noisy, prefix + noisy)
    a = audio.tokens_per_frame * chunk
    second += len(audio.layers) * (2 * noisy * 2 * d * d + 2 * a * 2 * d * d + 4 * noisy * a * d)
    return float(first), float(second)


def step_flops(prefix: float, denoise: float, trainable: str) -> float:
    """FLOPs of one training sample: the prefix needs a backward only when trained weights act
    on it (LoRA); the denoising pass is forward + backward + recomputation."""
    return (prefix if trainable == "adapter" else STEP_FORWARDS * prefix) + STEP_FORWARDS * denoise


def build(
    shape: Shape, device: torch.device, bf16: bool, trainable: str
) -> tuple[FlowMatchingLoss, Models, MotionLayout]:
    cfg = DiTConfig.preset(shape.preset)
    feature_dim, layers = (32, 3) if shape.preset == "tiny" else (FEATURE_DIM, FEATURE_LAYERS)
    with torch.device(device):
        dit = WanDiT(cfg)
        dit.init_weights(zero_output=False)
        adapter = AudioAdapter(
            AudioConfig.for_dit(cfg, feature_dim=feature_dim, num_feature_layers=layers)
        )
    if bf16:
        from liveface.engines.diffusion.checkpoint.dit import cast_dit

        cast_dit(dit, torch.bfloat16)
    dit.attach_audio(adapter)
    dit.requires_grad_(False)
    adapter.requires_grad_(True)
    lora = (
        LoRA(dit, rank=16, alpha=16, targets=("self_attn", "cross_attn", "ffn"))
        if trainable == "adapter+lora"
        else None
    )
    if device.type == "cuda":
        from torch.distributed._composable import checkpoint

        for b in dit.blocks:
            checkpoint(b)
    models = Models(dit, adapter, lora)
    h, w = shape.grid()
    layout = MotionLayout(MotionConfig(), cfg.in_dim, h, w, (cfg.patch_size[1], cfg.patch_size[2]))
    warmup = math.ceil(adapter.projector.left_context_frames / 4)
    return FlowMatchingLoss(models, layout, warmup, bf16).to(device), models, layout


def synthetic_batch(
    models: Models, layout: MotionLayout, batch: int, chunk: int, device: torch.device
) -> Batch:
    cfg, a = models.dit.config, models.adapter.config
    c, h, w = cfg.in_dim, layout.height, layout.width
    warmup = math.ceil(models.adapter.projector.left_context_frames / 4)
    feats = math.ceil((warmup + chunk) * 4 * a.sample_rate / (a.fps * a.feature_hop))
    g = torch.Generator().manual_seed(0)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g)

    return Batch(
        target=r(batch, c, chunk, h, w),
        history=r(batch, c, layout.config.frames, h, w),
        reference=r(batch, c, 1, h, w),
        audio=r(batch, a.num_feature_layers, feats, a.feature_dim),
        noise=r(batch, c, chunk, h, w),
        sigma=torch.rand(batch, generator=g) * 0.9 + 0.05,
        u=torch.rand(batch, generator=g),
        audio_keep=torch.ones(batch),
        text_keep=torch.ones(batch),
        text=r(batch, cfg.text_len, cfg.text_dim) * 0.1,
        index=torch.arange(batch),
    ).to(device)


def measure(shape: Shape, device: torch.device, batch: int, runs: int, trainable: str) -> None:
    bf16 = device.type == "cuda"
    objective, models, layout = build(shape, device, bf16, trainable)
    params = list(models.trainable().values())
    opt = torch.optim.AdamW(params, lr=1e-5)
    data = synthetic_batch(models, layout, batch, shape.chunk, device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(runs + 2):
        t0 = time.perf_counter()
        loss = objective(data).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    prefix, denoise = forward_flops(models.dit.config, models.adapter.config, layout, shape.chunk)
    flops = step_flops(prefix, denoise, trainable)
    tflops = flops * batch / step / 1e12
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB (GPU peak)"
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS peak)"
    trained = sum(p.numel() for p in params) / 1e6
    print(
        f"{shape.preset:>15} {shape.height}x{shape.width} K={shape.chunk} batch {batch:>2} "
        f"{trainable:<12} trained {trained:8.1f}M  step {step * 1000:9.1f} ms  "
        f"{batch / step:8.2f} samples/s  {flops / 1e9:10.2f} GFLOP/sample  "
        f"{tflops:7.3f} TFLOP/s  {memory}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--trainable", default="adapter", choices=("adapter", "adapter+lora"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    print(f"CPU, {args.threads} thread(s), fp32 (medians of {args.runs} steps):")
    measure(Shape("tiny", 64, 64), cpu, args.batch, args.runs, args.trainable)
    measure(Shape("small", 256, 256), cpu, max(1, args.batch // 4), args.runs, args.trainable)
    cfg5b = DiTConfig.preset("wan2.2-ti2v-5b")
    layout = MotionLayout(MotionConfig(), cfg5b.in_dim, 32, 32, (2, 2))
    audio = AudioConfig.for_dit(cfg5b, feature_dim=FEATURE_DIM, num_feature_layers=FEATURE_LAYERS)
    for k in (1, 2, 4):
        prefix, denoise = forward_flops(cfg5b, audio, layout, k)
        print(
            f"Wan2.2-TI2V-5B 512x512 K={k}: forward {prefix / 1e12:.2f} (prefix) + "
            f"{denoise / 1e12:.2f} (denoise) TFLOP; per training sample "
            f"{step_flops(prefix, denoise, 'adapter') / 1e12:.2f} (adapter), "
            f"{step_flops(prefix, denoise, 'adapter+lora') / 1e12:.2f} (adapter+lora) TFLOP"
        )
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("CUDA part skipped: no CUDA device")
            return
        dev = torch.device(args.device)
        print("CUDA, bf16 autocast, gradient checkpointing:")
        measure(Shape("wan2.2-ti2v-5b", 512, 512), dev, args.batch, args.runs, args.trainable)
    else:
        print("CUDA part skipped (run with --device cuda on a GPU)")


if __name__ == "__main__":
    main()
