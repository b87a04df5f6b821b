"""Streaming generation through the diffusion engine's contract: per-chunk latency and its parts.

CPU (always): the tiny random model written as a checkpoint directory and loaded through
``create_diffusion_engine``, as the server does: per-chunk latency (median ms) split into audio
features, conditioning (the motion frames' key/value prefix), each denoising step, codebook and
decode; time to first frame; sustained fps for one session and a batch of sessions.

CUDA (``--device cuda``): the Wan2.2-TI2V-5B preset in bfloat16 with random weights built here
(never in the product), the Wan2.2 VAE, the tiny TAEHV decoder and a wav2vec2-base-sized speech
encoder, at 512x512 and 704x1280 with 4 distilled steps: time to first frame, steady per-chunk
latency, sustained fps and GPU memory per session for 1..N concurrent sessions. Skipped, saying
so, without CUDA. Part timings synchronise the device after every part (``profile=True``), so the
totals are slightly pessimistic. Numbers are printed, never asserted.

    python bench/bench_stream.py
    python bench/bench_stream.py --device cuda --sessions 1,2,4 --chunk-frames 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.checkpoint.bundle import Manifest, write_bundle
from liveface.engines.diffusion.checkpoint.dit import build_dit, cast_dit
from liveface.engines.diffusion.checkpoint.loading import Bundle
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.engine import DiffusionEngine
from liveface.engines.diffusion.factory import DiffusionEngineConfig, create_diffusion_engine
from liveface.engines.diffusion.portrait import default_portrait
from liveface.engines.diffusion.streaming.codebook import CodebookConfig
from liveface.engines.diffusion.streaming.config import StreamConfig
from liveface.engines.diffusion.text.encoders import PrecomputedTextEmbeddings
from liveface.engines.diffusion.text.prompts import PromptBank
from liveface.engines.diffusion.vae import build_vae

GPU_SIZES = ((512, 512), (704, 1280))
#: (DiT preset, VAE, light decoder, wav2vec2 hidden / layers, prompt tokens) per model size.
MODELS = {
    "tiny": ("tiny", "wan2.2-tiny", "taew2_2-tiny", (32, 2), 5),
    "5b": ("wan2.2-ti2v-5b", "wan2.2", "taew2_2", (768, 12), 64),
}
PARTS = ("audio", "condition", "step", "codebook", "decode")


def random_models(kind: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Random-weight models of a size (benchmark only)."""
    import transformers

    dit_name, vae_name, light_name, (hidden, layers), prompt_tokens = MODELS[kind]
    vae = build_vae(vae_name, device=device, dtype=dtype)
    dit_cfg = DiTConfig.preset(dit_name).replace(in_dim=vae.latent_channels,
                                                 out_dim=vae.latent_channels)  # fmt: skip
    dit: WanDiT = build_dit(dit_cfg).to_empty(device=device)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0.0, 0.02)
    cast_dit(dit, dtype)
    # wav2vec2-base shapes for the 5B; a narrow feature extractor for the tiny model.
    small: dict[str, Any] = {"conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16,
                             "num_conv_pos_embedding_groups": 2}  # fmt: skip
    speech_cfg = transformers.Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden, **({} if kind == "5b" else small),
    )  # fmt: skip
    speech = transformers.Wav2Vec2Model(speech_cfg).to(device=device, dtype=dtype).eval()
    with torch.device(device):
        adapter = AudioAdapter(
            AudioConfig.for_dit(dit_cfg, feature_dim=hidden, num_feature_layers=layers + 1)
        )
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.02)
    adapter = adapter.to(dtype).eval()
    dit.attach_audio(adapter)
    g = torch.Generator().manual_seed(0)
    texts = {"default": torch.randn(prompt_tokens, dit_cfg.text_dim, generator=g)}
    return {
        "dit": dit.eval(),
        "adapter": adapter,
        "speech_encoder": speech,
        "vae": vae,
        "light_decoder": build_vae(light_name, device=device, dtype=dtype),
        "text_embeddings": texts,
    }


def in_memory_bundle(models: dict, stream: StreamConfig, device, dtype) -> Bundle:
    import transformers

    embeddings = PrecomputedTextEmbeddings(models["text_embeddings"])
    return Bundle(
        root=Path("<memory>"), manifest=Manifest(stream=stream), dit=models["dit"],
        adapter=models["adapter"],
        encoder=SpeechEncoder("wav2vec2", models["speech_encoder"],
                              transformers.Wav2Vec2FeatureExtractor()),
        vae=models["vae"], light_decoder=models["light_decoder"],
        prompts=PromptBank(embeddings, None, "default"), codebook=None, portrait=None,
        device=device, dtype=dtype,
    )  # fmt: skip


def voice(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (140 + 10 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return x.astype(np.float32)


def chunk(spec: EngineSpec, signal: np.ndarray, index: int, frame: int) -> AudioChunk:
    n = spec.chunk_frames_at(index)
    start, end = spec.frame_start(frame), spec.frame_start(frame + n)
    lo, hi = start - spec.left_context, end + spec.lookahead
    window = np.zeros(hi - lo, np.float32)
    a, b = max(lo, 0), min(hi, signal.shape[0])
    window[a - lo : b - lo] = signal[a:b]
    return AudioChunk(index, frame, n, start, end, window, spec.left_context, True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sessions(engine: DiffusionEngine, sessions: int, chunks: int) -> dict:
    """Open ``sessions`` sessions, run ``chunks`` batched chunks; timings and memory."""
    device = engine.bundle.device
    spec = engine.spec
    _sync(device)
    mem0 = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    t0 = time.perf_counter()
    states = [engine.open(default_portrait(), None, {"seed": i}) for i in range(sessions)]
    _sync(device)
    open_ms = (time.perf_counter() - t0) * 1000 / sessions
    signals = [voice(2 + chunks * spec.chunk_frames / spec.fps, seed=i) for i in range(sessions)]
    frame, latency, parts = 0, [], []
    first_ms = 0.0
    for index in range(chunks):
        batch = [
            (s, chunk(spec, sig, index, frame)) for s, sig in zip(states, signals, strict=True)
        ]
        t = time.perf_counter()
        outs = engine.generate(batch)
        ms = (time.perf_counter() - t) * 1000
        if index == 0:
            first_ms = ms
        elif index >= 3:  # past the first chunk and the warm-up of the steady shape
            latency.append(ms)
            parts.append(outs[0].info)
        frame += batch[0][1].num_frames
    mem = (torch.cuda.memory_allocated(device) - mem0) / sessions if device.type == "cuda" else 0
    for s in states:
        engine.close(s)
    med = statistics.median(latency)
    part_ms = {
        **{key: statistics.median(p.stages_ms[key] for p in parts) for key in parts[0].stages_ms},
        **{f"step{i}": statistics.median(p.steps_ms[i] for p in parts)
           for i in range(len(parts[0].steps_ms))},
    }  # fmt: skip
    return {
        "open_ms": open_ms, "first_ms": first_ms, "chunk_ms": med, "parts": part_ms,
        "fps": sessions * spec.chunk_frames / (med / 1000), "mem_gib": mem / 2**30,
    }  # fmt: skip


def report(label: str, sessions: int, r: dict, spec: EngineSpec) -> None:
    steps = [v for k, v in r["parts"].items() if k.startswith("step")]
    parts = " ".join(f"{k}={v:.1f}" for k, v in r["parts"].items() if not k.startswith("step"))
    steps_txt = "/".join(f"{v:.1f}" for v in steps)
    video_ms = spec.chunk_frames * 1000 / spec.fps
    print(
        f"{label:>14} x{sessions}: open {r['open_ms']:.0f} ms/session, first frame "
        f"{r['first_ms']:.1f} ms after open, chunk ({spec.chunk_frames} frames = {video_ms:.0f} "
        f"ms of video) {r['chunk_ms']:.1f} ms median, sustained {r['fps']:.1f} fps"
        + (f", {r['mem_gib']:.2f} GiB/session" if r["mem_gib"] else ""),
        flush=True,
    )
    print(f"{'':>18}parts (ms): {parts} steps={steps_txt}", flush=True)


def stream_config(args: argparse.Namespace) -> StreamConfig:
    return StreamConfig(
        chunk_latents=max(1, -(-args.chunk_frames // 4)),
        first_chunk_latents=1,
        codebook=CodebookConfig(size=args.codebook_size, views=4),
        max_batch=max(args.sessions),
        decoder=args.decoder,
    )


def cpu_part(args: argparse.Namespace) -> None:
    device, dtype = torch.device("cpu"), torch.float32
    stream = stream_config(args).replace(codebook=CodebookConfig(size=16, views=4, iterations=4))
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        models = random_models("tiny", device, dtype)
        root = write_bundle(Path(tmp) / "tiny", manifest=Manifest(stream=stream), **models)
        config = DiffusionEngineConfig(
            checkpoint=str(root),
            width=args.cpu_size,
            height=args.cpu_size,
            chunk_frames=args.chunk_frames,
        )
        engine = create_diffusion_engine(config, device="cpu", dtype="float32", profile=True)
        assert isinstance(engine, DiffusionEngine)
        print(f"CPU, float32, tiny random checkpoint at {args.cpu_size}x{args.cpu_size}, "
              f"{engine.spec}")  # fmt: skip
        for n in sorted(set(args.sessions) | {1}):
            if n <= engine.spec.max_batch:
                report("tiny", n, run_sessions(engine, n, args.chunks), engine.spec)


def gpu_part(args: argparse.Namespace) -> None:
    if not args.device.startswith("cuda"):
        print("GPU part skipped (run with --device cuda)")
        return
    if not torch.cuda.is_available():
        print("GPU part skipped: CUDA is not available")
        return
    device, dtype = torch.device(args.device), torch.bfloat16
    torch.manual_seed(0)
    models = random_models("5b", device, dtype)
    weights = torch.cuda.memory_allocated(device) / 2**30
    print(
        f"{torch.cuda.get_device_name(device)}, bfloat16, Wan2.2-TI2V-5B preset with random "
        f"weights ({weights:.1f} GiB of models), 4 distilled steps, decoder {args.decoder}"
    )
    stream = stream_config(args)
    bundle = in_memory_bundle(models, stream, device, dtype)
    for h, w in GPU_SIZES:
        engine = DiffusionEngine(bundle, width=w, height=h, fps=25, stream=stream, profile=True)
        print(f"{h}x{w}: {engine.layout.tokens_per_frame} tokens per latent frame, "
              f"{engine.layout.history_tokens} history tokens")  # fmt: skip
        for n in args.sessions:
            torch.cuda.reset_peak_memory_stats(device)
            r = run_sessions(engine, n, args.chunks)
            report(f"{h}x{w}", n, r, engine.spec)
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            print(f"{'':>18}peak GPU memory {peak:.1f} GiB", flush=True)
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add the 5B part")
    parser.add_argument("--chunk-frames", type=int, default=8, help="video frames per chunk")
    parser.add_argument("--chunks", type=int, default=12, help="chunks per run (>= 5)")
    parser.add_argument("--sessions", default="1,2", help="concurrent sessions, e.g. 1,2,4")
    parser.add_argument("--decoder", default="light", choices=("light", "vae"))
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--cpu-size", type=int, default=128, help="CPU frame size (pixels)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    args.sessions = [int(s) for s in args.sessions.split(",")]
    if args.chunks < 5:
        parser.error("--chunks must be >= 5 (the first three are not steady state)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads")
    cpu_part(args)
    gpu_part(args)


if __name__ == "__main__":
    main()
