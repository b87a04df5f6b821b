"""Speed of one DiT forward (= one denoising step without guidance).

CPU: the ``tiny`` and ``small`` presets. CUDA: the Wan2.2-TI2V-5B preset in bf16 with random
weights at 512x512 and 704x1280 (48-channel latents at 16x spatial compression, patch 1x2x2, so
(H/32)*(W/32) tokens per latent frame; 1 reference + 4 new latent frames by default). The prompt's
keys/values are cached once, as in a session; the reference frame runs at t = 0, the others at t.

FLOPs are counted analytically (multiply-add = 2): per block ``12 L D^2`` (self-attention
projections and cross-attention q/o), ``4 L^2 D`` (self-attention), ``4 L T D`` (cross-attention
over T text tokens), ``4 L D F`` (FFN), plus patch embedding and head; with ``--audio``, the
audio attention's ``4 L D^2 + 4 L A D`` for A audio tokens per frame. Numbers are printed, never
asserted.

    python bench/bench_dit.py                      # CPU part; the GPU part says it is skipped
    python bench/bench_dit.py --device cuda        # adds the 5B preset at 512x512 and 704x1280
    python bench/bench_dit.py --device cuda --audio --frames 5 --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from liveface.engines.diffusion.checkpoint.dit import build_dit, cast_dit
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT

#: Spatial compression of the Wan2.2 VAE.
VAE_SPATIAL = 16
CPU_CASES = (("tiny", 256, 256), ("small", 256, 256))
GPU_SIZES = ((512, 512), (704, 1280))
#: Width of the speech features assumed for the audio adapter (wav2vec2-large / 25 states).
AUDIO_FEATURE_DIM, AUDIO_STATES = 1024, 25


@dataclass
class Case:
    preset: str
    height: int
    width: int
    frames: int
    tokens: int
    median_ms: float
    gflop: float

    def row(self) -> str:
        tps = self.tokens / (self.median_ms / 1000)
        tflops = self.gflop / 1000 / (self.median_ms / 1000)
        return (
            f"{self.preset:>15} {self.height:>5}x{self.width:<5} {self.frames:>6} {self.tokens:>7} "
            f"{self.median_ms:>10.2f} {tps:>12.0f} {self.gflop:>10.1f} {tflops:>9.3f}"
        )


HEADER = (
    f"{'preset':>15} {'video':^11} {'frames':>6} {'tokens':>7} {'ms/step':>10} "
    f"{'tokens/s':>12} {'GFLOP':>10} {'TFLOP/s':>9}"
)


def dit_flops(c: DiTConfig, tokens: int, *, audio_tokens: int = 0) -> float:
    """FLOPs of one forward with cached text keys/values (see the module docstring)."""
    d, n, t = c.dim, tokens, c.text_len
    block = 12 * n * d * d + 4 * n * n * d + 4 * n * t * d + 4 * n * d * c.ffn_dim
    if audio_tokens:
        block += 4 * n * d * d + 4 * n * audio_tokens * d
    embed = 2 * n * c.in_dim * c.patch_volume * d + 2 * n * d * c.out_dim * c.patch_volume
    return float(c.num_layers * block + embed)


def latent_shape(c: DiTConfig, height: int, width: int, frames: int) -> tuple[int, ...]:
    return (1, c.in_dim, frames, height // VAE_SPATIAL, width // VAE_SPATIAL)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(name: str, device: torch.device, dtype: torch.dtype, audio: bool) -> WanDiT:
    config = DiTConfig.preset(name)
    model = build_dit(config).to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    if audio:
        ac = AudioConfig.for_dit(
            config, feature_dim=AUDIO_FEATURE_DIM, num_feature_layers=AUDIO_STATES
        )
        adapter = AudioAdapter(ac).to(device)
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_(0.0, 0.02)
        model.attach_audio(adapter)
    if dtype != torch.float32:
        cast_dit(model, dtype)
        if model.audio is not None:
            model.audio.to(dtype)
    return model.eval()


@torch.inference_mode()
def time_case(
    name: str, height: int, width: int, args: argparse.Namespace, device: torch.device,
    dtype: torch.dtype,
) -> Case:  # fmt: skip
    model = make_model(name, device, dtype, args.audio)
    c = model.config
    if args.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    gen = torch.Generator(device=device).manual_seed(0)
    shape = latent_shape(c, height, width, args.frames)
    latents = torch.randn(shape, generator=gen, device=device)
    prompt = torch.randn(1, c.text_len, c.text_dim, generator=gen, device=device)
    context = model.prepare_context(prompt)  # once per session
    t = torch.full((1, args.frames), 700.0, device=device)
    t[:, 0] = 0.0  # the reference frame is clean
    audio = None
    if model.audio is not None:
        assert isinstance(model.audio, AudioAdapter)
        feats = torch.randn(
            1, AUDIO_STATES, 2 * 4 * (args.frames - 1), AUDIO_FEATURE_DIM, device=device
        )
        audio = model.audio.encode(feats.to(dtype), first_frame=1)
    for _ in range(args.warmup):
        model(latents, t, context, audio=audio)
    _sync(device)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model(latents, t, context, audio=audio)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    tokens = args.frames * (shape[3] // c.patch_size[1]) * (shape[4] // c.patch_size[2])
    audio_tokens = (
        model.audio.config.tokens_per_frame if isinstance(model.audio, AudioAdapter) else 0
    )
    gflop = dit_flops(c, tokens, audio_tokens=audio_tokens) / 1e9
    del model, context
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Case(name, height, width, args.frames, tokens, statistics.median(times), gflop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds the 5B preset)")
    parser.add_argument("--frames", type=int, default=5, help="latent frames (1 reference + new)")
    parser.add_argument("--runs", type=int, default=7, help="timed forwards per case (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--audio", action="store_true", help="attach a Soul-style audio adapter")
    parser.add_argument("--compile", action="store_true", help="torch.compile the GPU model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} CPU threads, audio={args.audio}")
    print("CPU, float32")
    print(HEADER)
    cpu = torch.device("cpu")
    for name, h, w in CPU_CASES:
        cpu_args = argparse.Namespace(**{**vars(args), "compile": False})
        print(time_case(name, h, w, cpu_args, cpu, torch.float32).row(), flush=True)

    if not args.device.startswith("cuda"):
        print("GPU part skipped (run with --device cuda)")
        return
    if not torch.cuda.is_available():
        print("GPU part skipped: CUDA is not available")
        return
    device = torch.device(args.device)
    print(f"{torch.cuda.get_device_name(device)}, bfloat16, random weights")
    print(HEADER)
    for h, w in GPU_SIZES:
        case = time_case("wan2.2-ti2v-5b", h, w, args, device, torch.bfloat16)
        print(case.row(), flush=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"peak GPU memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
