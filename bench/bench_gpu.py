"""GPU execution of the streaming diffusion engine: latency, throughput, memory, stages, MFU.

Random weights, built here only (the product never initialises a model at random): the DiT preset
with a Soul-style audio adapter, a random wav2vec2-base speech encoder, the Wan2.2 VAE and the
TAEHV decoder are written as a checkpoint directory (``bundle.write_bundle``) and loaded by
``create_diffusion_engine``, exactly as a server would. Three parts, per frame size:

1. the engine, eager: time to first frame (session open + first chunk), sustained fps with 1, 2
   and 4 sessions batched per ``generate``, peak GPU memory, time per stage (a profiling pass
   that syncs after each stage), DiT TFLOP/s and model FLOP utilisation;
2. the DiT denoising step at the engine's shapes (new latents + cached conditioning prefix +
   audio) and the TAEHV decode step: eager vs ``torch.compile`` (CUDA graphs) vs TensorRT;
3. the chunk pipeline through :mod:`liveface.engines.diffusion.backends.stages`: decode + copy
   on their own CUDA streams while the next chunk denoises, against the sequential path.

FLOPs are counted analytically (multiply-add = 2) for the DiT only (speech encoder and decoder
excluded): per block and step, ``12 n D^2`` projections, ``4 n (n + P) D`` self-attention over
``P`` prefix tokens, ``4 n T D`` text and ``4 n D^2 + 4 n A D`` audio cross-attention, ``4 n D F``
FFN; per chunk also the prefix pass over the history tokens. MFU uses the dense bf16 peak (H100
SXM / H200: 989 TFLOP/s; ``--peak-tflops`` for other GPUs). Numbers are printed, never asserted.

    python bench/bench_gpu.py                            # CUDA, 5B preset, 512x512 and 704x1280
    python bench/bench_gpu.py --device cpu --preset tiny # CPU smoke run
    python bench/bench_gpu.py --compile-mode max-autotune --tensorrt
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.diffusion.backends.compiled import CompileConfig, CompiledStep
from liveface.engines.diffusion.backends.onnx_export import TAEHVDecodeStep
from liveface.engines.diffusion.backends.stages import Overlap, Stage, StageStreams
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.vae import frames_to_uint8

PEAKS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0}  # dense bf16 TFLOP/s
PRESETS = {
    "tiny": ("tiny", "wan2.2-tiny", "taew2_2-tiny"),
    "5b": ("wan2.2-ti2v-5b", "wan2.2", "taew2_2"),
}
SIZES = {"tiny": "128x128,128x256", "5b": "512x512,704x1280"}
ENGINE_FIGURES = (
    "time to first frame (session open + first chunk)",
    "sustained fps per session and in total with 1, 2 and 4 sessions",
    "time per stage (audio, conditioning, each denoising step, codebook, decode)",
    "achieved DiT TFLOP/s per chunk and per denoising step",
    "eager DiT step and decode step times",
)
GPU_ONLY = (
    "peak GPU memory",
    "model FLOP utilisation against the GPU's bf16 peak",
    "torch.compile with CUDA graphs (reduce-overhead / max-autotune) of the DiT and decoder steps",
    "a TensorRT engine of the DiT step (--tensorrt)",
    "decode + copy overlapping the next chunk's denoise on separate CUDA streams",
    "every figure of the 5B preset at 512x512 and 704x1280 (too slow on a CPU)",
)


def rate(flops_per_s: float) -> str:
    """``1.23 TFLOP/s`` or, for small models, ``45.6 GFLOP/s``."""
    if flops_per_s >= 1e12:
        return f"{flops_per_s / 1e12:.2f} TFLOP/s"
    return f"{flops_per_s / 1e9:.2f} GFLOP/s"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in ms (device synchronised around each run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


# -- random models (benchmark only) --------------------------------------------------------------


def write_random_checkpoint(root: Path, preset: str, device: torch.device, steps: int) -> Path:
    import transformers

    from liveface.engines.diffusion.checkpoint.bundle import Manifest, write_bundle
    from liveface.engines.diffusion.checkpoint.dit import cast_dit
    from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
    from liveface.engines.diffusion.dit.audio_config import AudioConfig
    from liveface.engines.diffusion.dit.model import WanDiT
    from liveface.engines.diffusion.sampling.flow import SamplerConfig
    from liveface.engines.diffusion.streaming.config import StreamConfig
    from liveface.engines.diffusion.vae import build_vae

    dit_name, vae_name, light_name = PRESETS[preset]
    vae, light = build_vae(vae_name), build_vae(light_name)
    channels = vae.latent_channels
    cfg = DiTConfig.preset(dit_name).replace(in_dim=channels, out_dim=channels)
    torch.manual_seed(0)
    if preset == "tiny":
        speech_cfg = transformers.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        )  # fmt: skip
    else:
        speech_cfg = transformers.Wav2Vec2Config()  # wav2vec2-base shapes
    speech = transformers.Wav2Vec2Model(speech_cfg)
    with torch.device(device):
        dit = WanDiT(cfg)
        dit.init_weights(zero_output=False)
        layers = speech_cfg.num_hidden_layers + 1  # + the embedding output
        adapter = AudioAdapter(
            AudioConfig.for_dit(cfg, feature_dim=speech_cfg.hidden_size, num_feature_layers=layers)
        )
    with torch.no_grad():
        for p in adapter.parameters():
            if p.dim() > 1 and not p.abs().any():  # zero-initialised outputs would skip nothing
                p.normal_(0.0, 0.02)
    if device.type == "cuda":
        cast_dit(dit, torch.bfloat16)  # halves what is written and read back
    stream = StreamConfig(sampler=SamplerConfig(kind="distilled", steps=steps), max_batch=4)
    texts = {"default": torch.randn(min(64, cfg.text_len), cfg.text_dim)}
    path = write_bundle(
        root, dit=dit, adapter=adapter, speech_encoder=speech, vae=vae, light_decoder=light,
        text_embeddings=texts, manifest=Manifest(stream=stream),
    )  # fmt: skip
    del dit, adapter
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return path


def session_chunks(spec: EngineSpec, count: int, seed: int) -> list[AudioChunk]:
    """``count`` consecutive chunks of a synthetic voice (a pitched buzz with syllables)."""
    frames = spec.first_chunk_frames + spec.chunk_frames * (count - 1)
    end = spec.frame_start(frames) + spec.lookahead
    t = np.arange(end) / spec.sample_rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + seed) * t)
    wave = (0.3 * np.sin(2 * np.pi * (140 + 20 * seed) * t) * env).astype(np.float32)
    chunks, first = [], 0
    for i in range(count):
        n = spec.chunk_frames_at(i)
        start, stop = spec.frame_start(first), spec.frame_start(first + n)
        lo, hi = start - spec.left_context, stop + spec.lookahead
        window = np.zeros(hi - lo, np.float32)
        a, b = max(lo, 0), min(hi, wave.shape[0])
        window[a - lo : b - lo] = wave[a:b]
        chunks.append(AudioChunk(
            index=i, first_frame=first, num_frames=n, start=start, end=stop, window=window,
            context=spec.left_context, voiced=True,
        ))  # fmt: skip
        first += n
    return chunks


# -- FLOPs ----------------------------------------------------------------------------------------


def block_flops(c: DiTConfig, n: int, keys: int, audio_tokens: int) -> float:
    """One block for ``n`` tokens attending to ``keys`` self-attention keys."""
    d = c.dim
    f = 12 * n * d * d + 4 * n * keys * d + 4 * n * c.text_len * d + 4 * n * d * c.ffn_dim
    return float(f + (4 * n * d * d + 4 * n * audio_tokens * d if audio_tokens else 0))


def chunk_flops(engine: Any, latents: int, steps: int) -> tuple[float, float]:
    """(FLOPs of one denoising step, FLOPs of the whole chunk) for one session."""
    c, layout = engine.bundle.dit.config, engine.layout
    n, ref, hist = latents * layout.tokens_per_frame, layout.tokens_per_frame, layout.history_tokens
    audio = engine.bundle.adapter.config.tokens_per_frame
    step = c.num_layers * block_flops(c, n, n + ref + hist, audio)
    prefix = c.num_layers * block_flops(c, hist, ref + hist, 0)
    calls = 2 if engine.stream.sampler.guidance_scale != 1.0 else 1
    return step, steps * calls * step + prefix


# -- part 1: the engine ---------------------------------------------------------------------------


def bench_engine(root: Path, h: int, w: int, args: argparse.Namespace, peak: float | None) -> Any:
    from liveface.engines.diffusion.factory import DiffusionEngineConfig, create_diffusion_engine

    dev = torch.device(args.device)
    config = DiffusionEngineConfig(checkpoint=str(root), width=w, height=h, fps=25,
                                   chunk_frames=args.chunk_frames)  # fmt: skip
    engine = create_diffusion_engine(config, device=dev)
    spec = engine.spec
    steps = engine.stream.sampler.num_steps
    print(
        f"\n== engine {h}x{w}: {spec.chunk_frames}-frame chunks "
        f"(first {spec.first_chunk_frames}), {steps} steps, "
        f"decoder {type(engine.decoder).__name__}, {engine.bundle.dtype}"
    )
    latents = spec.chunk_frames // engine.frames_per_latent
    step_f, chunk_f = chunk_flops(engine, latents, steps)
    for sessions in args.sessions:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        streams = [session_chunks(spec, args.chunks + 3, s) for s in range(sessions)]
        t0 = time.perf_counter()
        states = [engine.open(None, None, {"seed": s}) for s in range(sessions)]
        opened = time.perf_counter()
        engine.generate([(st, ch[0]) for st, ch in zip(states, streams, strict=True)])
        ttff = (time.perf_counter() - t0) * 1000.0
        first_ms = (time.perf_counter() - opened) * 1000.0
        engine.generate([(st, ch[1]) for st, ch in zip(states, streams, strict=True)])  # warm-up
        start = time.perf_counter()
        for i in range(2, 2 + args.chunks):
            engine.generate([(st, ch[i]) for st, ch in zip(states, streams, strict=True)])
        per_call = (time.perf_counter() - start) / args.chunks
        fps = spec.chunk_frames / per_call  # per session
        engine.profile = True
        info = engine.generate([(st, ch[-1]) for st, ch in zip(states, streams, strict=True)])[0]
        engine.profile = False
        achieved = sessions * chunk_f / per_call
        cuda = dev.type == "cuda"
        mem = f"{torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB" if cuda else "n/a (CPU)"
        mfu = f"{100 * achieved / 1e12 / peak:.1f}%" if peak else "n/a (no peak for this device)"
        print(
            f"-- {sessions} session(s): time to first frame {ttff:.0f} ms "
            f"(open {ttff - first_ms:.0f} ms, first chunk {first_ms:.0f} ms); "
            f"sustained {fps:.1f} fps per session ({fps / spec.fps:.2f}x real time), "
            f"{sessions * fps:.1f} fps total; {per_call * 1000:.0f} ms per batch"
        )
        print(
            f"   DiT {rate(achieved)} over the whole chunk (MFU {mfu}); "
            f"{step_f / 1e9:.4g} GFLOP per step per session; peak memory {mem}"
        )
        parts = dict(info.info.stages_ms)
        steps_ms = sum(info.info.steps_ms)
        denoise = sessions * step_f * steps / (steps_ms / 1000) if steps_ms else 0.0
        stages = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        print(f"   stages (ms, synced): {stages}; denoise {rate(denoise)}")
        for st in states:
            engine.close(st)
    return engine


# -- parts 2 and 3: steps and the overlap --------------------------------------------------------


def bench_steps(engine: Any, args: argparse.Namespace, peak: float | None) -> None:
    dev = torch.device(args.device)
    dit, layout, decoder = engine.bundle.dit, engine.layout, engine.decoder
    c, dtype = dit.config, engine.bundle.dtype
    k = engine.spec.chunk_frames // engine.frames_per_latent
    g = torch.Generator(device=dev).manual_seed(0)
    text = dit.prepare_context(torch.randn(1, c.text_len, c.text_dim, device=dev, dtype=dtype))
    positions = torch.cat([layout.reference_positions(), layout.history_positions()])
    prefix = dit.encode_prefix(
        torch.randn(1, positions.shape[0], c.dim, device=dev, generator=g), positions, text
    )
    rope = dit.rotary(layout.new_positions(k))
    tpf = engine.bundle.adapter.config.tokens_per_frame
    audio = AudioTokens(torch.randn(1, k, tpf, c.dim, device=dev, generator=g).to(dtype))
    x = torch.randn(1, c.in_dim, k, layout.height, layout.width, device=dev, generator=g)
    t = torch.full((1,), 700.0, device=dev)

    def step(x: torch.Tensor, t: torch.Tensor, text: Any, rope: Any, audio: Any, prefix: Any):
        return dit(x, t, text, positions=rope, audio=audio, prefix=prefix)

    step_f, _ = chunk_flops(engine, k, 1)
    memories = decoder.init_state(1, layout.height, layout.width).buffers
    dec = TAEHVDecodeStep(decoder) if hasattr(decoder, "decoder_layout") else None
    z = x[:, :, :1].to(dtype)
    print(f"-- steps at batch 1 ({k} new latent frames, {prefix.tokens} prefix tokens):")
    dit_args, dec_args = (x, t, text, rope, audio, prefix), (z, *memories)
    rows: list[tuple[str, str, float]] = []
    with torch.no_grad():
        rows.append(("DiT step", "eager", timed(lambda: step(*dit_args), dev, args.runs)))
        if dec is not None:
            rows.append(("decode step", "eager", timed(lambda: dec(*dec_args), dev, args.runs)))
        if args.compile_mode != "off":
            cfg = CompileConfig(mode=args.compile_mode)
            jobs = [("DiT step", step, dit_args)] + (
                [("decode step", dec, dec_args)] if dec else []
            )
            for part, fn, inputs in jobs:
                compiled = CompiledStep(fn, cfg, device=dev, name=part)
                compiled.warm_up(*inputs)
                if compiled.fallback_reason:
                    print(f"   {part}: eager fallback ({compiled.fallback_reason})")
                ms = timed(lambda c=compiled, i=inputs: c(*i), dev, args.runs)
                rows.append((part, compiled.backend, ms))
        rows += bench_tensorrt(args, dit, dit_args)
    for part, backend, ms in rows:
        extra = ""
        if part == "DiT step":
            achieved = step_f / (ms / 1000)
            mfu = f", MFU {100 * achieved / 1e12 / peak:.1f}%" if peak else ""
            extra = f", {rate(achieved)}{mfu}"
        print(f"   {part:<11} {backend:<32} {ms:9.2f} ms{extra}")

    # Part 3: decode on its own stream while the next chunk denoises.
    sampler_steps = engine.stream.sampler.num_steps

    def denoise() -> torch.Tensor:
        y = x
        for _ in range(sampler_steps):
            y = y - 0.25 * step(y, t, text, rope, audio, prefix)
        return y

    def sequential() -> None:
        state = decoder.init_state(1, layout.height, layout.width)
        for _ in range(args.chunks):
            frames_to_uint8(decoder.decode_step(denoise(), state)).cpu()

    def overlapped() -> None:
        state = decoder.init_state(1, layout.height, layout.width)
        pipe.run(
            (denoise, lambda lat: decoder.decode_step(lat, state), i) for i in range(args.chunks)
        )

    streams = StageStreams(dev, timing=True)
    pipe: Overlap[int] = Overlap(streams)
    with torch.no_grad():
        seq_ms = timed(sequential, dev, 3) / args.chunks
        ovl_ms = timed(overlapped, dev, 3) / args.chunks
    times = streams.stage_times_ms()
    stage = ", ".join(f"{s.value} {statistics.median(times[s]):.1f}" for s in Stage if times[s])
    note = "" if dev.type == "cuda" else " (CPU: stages run one after another)"
    print(
        f"-- chunk pipeline, {sampler_steps} steps + decode + copy: sequential {seq_ms:.1f} ms, "
        f"overlapped {ovl_ms:.1f} ms per chunk{note}; stage medians (ms): {stage}"
    )


def bench_tensorrt(
    args: argparse.Namespace, dit: Any, inputs: tuple[Any, ...]
) -> list[tuple[str, str, float]]:
    """TensorRT timing of the DiT step, when asked for and importable."""
    import importlib.util

    if not args.tensorrt:
        have = importlib.util.find_spec("tensorrt") is not None
        print(f"   TensorRT skipped (pass --tensorrt; tensorrt importable: {have})")
        return []
    from liveface.engines.diffusion.backends import onnx_export as ox
    from liveface.engines.diffusion.backends import tensorrt as trt
    from liveface.engines.diffusion.backends.onnx_checks import demote_float64

    x, t, text, rope, audio, prefix = inputs
    feeds = {"latents": x, "timesteps": t, "text_kv": ox.stack_text_kv(text),
             "prefix_kv": ox.stack_kv(prefix.kv), "audio_tokens": audio.tokens}  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="liveface-trt-"))
    graph = ox.export_dit_step(dit, out / "dit.onnx", feeds, positions=rope, with_prefix=True)
    demote_float64(graph.path, out / "dit32.onnx")
    plan = trt.build_engine(out / "dit32.onnx", out / "dit.plan", trt.TrtBuildConfig())
    runner = trt.TrtRunner(plan, device=x.device)
    ms = timed(lambda: runner.run(feeds), x.device, args.runs)
    with torch.no_grad():
        want = ox.DiTStep(dit, positions=rope, with_prefix=True)(*feeds.values())
        got = runner.run(feeds)["velocity"]
        err = (got.float() - want.float()).abs().max().item()
    print(f"   TensorRT max abs difference to eager: {err:.3g}")
    return [("DiT step", "tensorrt:bf16", ms)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="5b on cuda, tiny on cpu")
    parser.add_argument("--sizes", help="HxW list, e.g. 512x512,704x1280")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    parser.add_argument("--chunk-frames", type=int, default=8, help="video frames per chunk")
    parser.add_argument("--sessions", default="1,2,4", help="concurrent sessions to batch")
    parser.add_argument("--chunks", type=int, default=6, help="timed chunks per measurement")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per step figure")
    parser.add_argument("--compile-mode", help="torch.compile mode or off (cuda: reduce-overhead)")
    parser.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sizes = (args.sizes or SIZES[args.preset or "5b"]).replace(",", " and ")
        print(f"CUDA is not available: nothing measured. Not measured, at {sizes}:")
        for item in (*ENGINE_FIGURES, *GPU_ONLY):
            print(f"  - {item}")
        print("For a CPU smoke run: python bench/bench_gpu.py --device cpu --preset tiny")
        return
    cuda = args.device.startswith("cuda")
    args.preset = args.preset or ("5b" if cuda else "tiny")
    args.compile_mode = args.compile_mode or ("reduce-overhead" if cuda else "off")
    args.sessions = [int(s) for s in args.sessions.split(",")]
    dev = torch.device(args.device)
    peak = args.peak_tflops
    if peak is None and cuda:
        name = torch.cuda.get_device_name(dev)
        peak = next((v for k, v in PEAKS.items() if k in name), None)
        print(f"{name}, bf16 peak {peak or 'unknown'} TFLOP/s")
    print(f"torch {torch.__version__}, preset {args.preset}, random weights")
    if not cuda:
        print("CPU run: not measured here: " + "; ".join(GPU_ONLY))
    with tempfile.TemporaryDirectory(prefix="liveface-bench-") as tmp:
        start = time.perf_counter()
        root = write_random_checkpoint(Path(tmp) / "ckpt", args.preset, dev, args.steps)
        print(f"random checkpoint written in {time.perf_counter() - start:.1f} s")
        for size in (args.sizes or SIZES[args.preset]).split(","):
            h, w = (int(v) for v in size.lower().split("x"))
            engine = bench_engine(root, h, w, args, peak)
            bench_steps(engine, args, peak)
            del engine
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
