"""Tiny random models written as a checkpoint directory, for the streaming engine's tests.

Random weights are a test fixture only: the product never builds them (it raises ConfigError
without a checkpoint). Every zero-initialised output layer is randomised so that each part of the
pipeline (audio, conditioning, noise) visibly changes the frames.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.diffusion.checkpoint.bundle import Manifest, write_bundle
from liveface.engines.diffusion.checkpoint.loading import Bundle, load_bundle
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.engine import DiffusionEngine
from liveface.engines.diffusion.streaming.codebook import CodebookConfig
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.engines.diffusion.vae import build_vae

SIZE = 128  # output pixels: an 8x8 latent grid with the tiny Wan2.2 VAE (x16)
LATENT_CHANNELS = 6
SPEECH_HIDDEN, SPEECH_LAYERS = 32, 2


def tiny_stream(**changes) -> GenerationConfig:
    base = GenerationConfig(
        chunk_latents=2,
        first_chunk_latents=1,
        codebook=CodebookConfig(size=16, views=4, iterations=4),
        max_batch=4,
    )
    return base.replace(**changes)


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.abs().any():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def write_tiny_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    light_decoder: bool = True,
    stream: GenerationConfig | None = None,
    portrait: np.ndarray | None = None,
) -> Path:
    """Build tiny random models and write them in the checkpoint layout."""
    import transformers

    torch.manual_seed(seed)
    dit_cfg = DiTConfig.preset("tiny").replace(in_dim=LATENT_CHANNELS, out_dim=LATENT_CHANNELS)
    dit = WanDiT(dit_cfg)
    dit.init_weights(zero_output=False)
    speech_cfg = transformers.Wav2Vec2Config(
        hidden_size=SPEECH_HIDDEN, num_hidden_layers=SPEECH_LAYERS, num_attention_heads=2,
        intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, vocab_size=20,
    )  # fmt: skip
    speech = transformers.Wav2Vec2Model(speech_cfg)
    adapter = AudioAdapter(
        AudioConfig.for_dit(
            dit_cfg,
            feature_dim=SPEECH_HIDDEN,
            num_feature_layers=SPEECH_LAYERS + 1,
            hidden_dim=32,
            tokens_per_frame=2,
        )
    )
    _randomise(adapter, seed + 1, scale=0.5)
    vae = build_vae("wan2.2-tiny")
    light = build_vae("taew2_2-tiny") if light_decoder else None
    g = torch.Generator().manual_seed(seed + 2)
    texts = {
        "default": torch.randn(5, dit_cfg.text_dim, generator=g),
        "smiling": torch.randn(3, dit_cfg.text_dim, generator=g),
    }
    return write_bundle(
        path,
        dit=dit,
        adapter=adapter,
        speech_encoder=speech,
        vae=vae,
        light_decoder=light,
        text_embeddings=texts,
        portrait=portrait,
        manifest=Manifest(stream=stream if stream is not None else tiny_stream()),
    )


def sample_portrait(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A smooth synthetic face-like image, uint8 ``(size, size, 3)``."""
    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(seed)
    face = np.exp(-((x - 0.5) ** 2 + (y - 0.45) ** 2) / 0.06)
    img = np.stack([face * 200 + 30, face * 160 + 40, face * 120 + 60], axis=-1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def speech(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """A voiced-looking signal: a pitched buzz with a syllable envelope and noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + seed) * t)
    x = 0.3 * np.sin(2 * np.pi * (140 + 20 * seed) * t) * env + 0.02 * rng.normal(size=t.shape)
    return x.astype(np.float32)


def chunk_of(
    spec: EngineSpec,
    signal: np.ndarray,
    index: int,
    first_frame: int,
    *,
    voiced: bool = True,
    epoch: int = 0,
) -> AudioChunk:
    """The chunk the runtime's chunker would cut from ``signal`` (zeros before sample 0 and
    after its end)."""
    n = spec.chunk_frames_at(index)
    start, end = spec.frame_start(first_frame), spec.frame_start(first_frame + n)
    lo, hi = start - spec.left_context, end + spec.lookahead
    window = np.zeros(hi - lo, np.float32)
    a, b = max(lo, 0), min(hi, signal.shape[0])
    if b > a:
        window[a - lo : b - lo] = signal[a:b]
    return AudioChunk(
        index=index, first_frame=first_frame, num_frames=n, start=start, end=end, window=window,
        context=spec.left_context, voiced=voiced, epoch=epoch,
    )  # fmt: skip


@functools.cache
def tiny_checkpoint() -> Path:
    """One tiny checkpoint directory shared by every test of the process (written once)."""
    root = Path(tempfile.mkdtemp(prefix="liveface-tiny-ckpt-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_tiny_checkpoint(root / "ckpt", portrait=sample_portrait())


@functools.cache
def tiny_bundle() -> Bundle:
    """The tiny checkpoint loaded on the CPU in float32 (models shared by the tests' engines)."""
    return load_bundle(tiny_checkpoint(), device="cpu", dtype="float32")


def tiny_engine(lookahead: int = 0, **stream_changes) -> DiffusionEngine:
    """An engine on the shared tiny models, 128x128 at 25 fps, 8-frame chunks (first: 1)."""
    return DiffusionEngine(
        tiny_bundle(), width=SIZE, height=SIZE, fps=25, lookahead=lookahead,
        stream=tiny_stream(**stream_changes),
    )  # fmt: skip
