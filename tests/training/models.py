"""Tiny base models for the training tests, written as a base checkpoint directory.

Random weights are a test fixture only (the product never builds them). The VAE is the real tiny
Wan2.2 architecture with hand-set weights that make it a blocky colour autoencoder: the encoder
averages each 16x16 cell's colour (the parameter-free pooling shortcuts of the Wan2.2 stages
carry it; every learned residual branch is zeroed), the decoder spreads a cell's colour back over
its pixels. So the frames a model renders can be measured (how dark the mouth cells are), which a
random VAE would not allow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from liveface.engines.diffusion.checkpoint.bundle import MANIFEST, Manifest
from liveface.engines.diffusion.checkpoint.dit import save_dit
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.text.encoders import save_text_embeddings
from liveface.engines.diffusion.vae import WanVAE, build_vae, save_vae

LATENT_CHANNELS = 6
SPEECH_HIDDEN, SPEECH_LAYERS = 32, 2
#: The constant channel that makes the VAE's RMS norms act on colour ratios, not magnitudes.
_BIAS = 3.0
#: Latent scale: a cell's colour range spans a few units, like a real VAE's normalised latents.
GAIN = 4.0


@torch.no_grad()
def pooling_vae(gain: float = GAIN) -> WanVAE:
    """The tiny Wan2.2 VAE as a cell-average colour autoencoder (see the module docstring);
    ``gain`` scales the latents (and the decoder undoes it)."""
    vae = build_vae("wan2.2-tiny")
    p = dict(vae.named_parameters())
    for name, t in p.items():
        if any(s in name for s in ("residual.6.", "resample.1.", "time_conv.", ".proj.")):
            t.zero_()
    for name in (
        "encoder.conv1",
        "encoder.head.2",
        "conv1",
        "conv2",
        "decoder.conv1",
        "decoder.upsamples.3.upsamples.0.shortcut",
        "decoder.head.2",
    ):
        p[f"{name}.weight"].zero_()
        p[f"{name}.bias"].zero_()
    for c in range(3):
        # pixels are folded 2x2 into channels c*4 .. c*4+3: average them
        p["encoder.conv1.weight"][c, c * 4 : c * 4 + 4, 2, 1, 1] = 0.25
        # the time-downsampling shortcut splits each channel in two phases: add them back
        p["encoder.head.2.weight"][c, 2 * c : 2 * c + 2, 2, 1, 1] = gain
        p["decoder.conv1.weight"][c, c, 2, 1, 1] = 1.0 / gain
    p["encoder.conv1.bias"][3] = _BIAS
    p["decoder.conv1.bias"][3] = _BIAS
    for i in range(12):
        p["conv1.weight"][i, i] = 1.0
    for i in range(LATENT_CHANNELS):
        p["conv2.weight"][i, i] = 1.0
    for i in range(4):
        p["decoder.upsamples.3.upsamples.0.shortcut.weight"][i, i] = 1.0
    # decoder output: fit the colour gain/offset so that a still grey video comes back grey
    for c in range(3):
        p["decoder.head.2.weight"][c * 4 : c * 4 + 4, c, 2, 1, 1] = 1.0
    levels = torch.linspace(-0.9, 0.9, 7)
    video = levels.view(-1, 1, 1, 1, 1).expand(-1, 5, 32, 32, 3).contiguous()
    out = vae.decode(vae.encode(video))[:, -1, 0, 0, 0]
    gain, offset = np.polyfit(out.numpy(), levels.numpy(), 1)
    p["decoder.head.2.weight"].mul_(float(gain))
    p["decoder.head.2.bias"].fill_(float(offset))
    return vae


def tiny_dit(seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    cfg = DiTConfig.preset("tiny").replace(in_dim=LATENT_CHANNELS, out_dim=LATENT_CHANNELS)
    dit = WanDiT(cfg)
    dit.init_weights(zero_output=False)
    return dit


def tiny_speech_encoder(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=SPEECH_HIDDEN,
        num_hidden_layers=SPEECH_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=20,
    )
    return transformers.Wav2Vec2Model(cfg).eval()


def write_base(path: Path, seed: int = 0) -> Path:
    """A base checkpoint directory (no audio adapter yet): DiT, VAE, speech encoder, prompts."""
    path.mkdir(parents=True, exist_ok=True)
    dit = tiny_dit(seed)
    save_dit(dit, path / "dit")
    save_vae(pooling_vae(), path / "vae.safetensors")
    tiny_speech_encoder(seed).save_pretrained(path / "wav2vec2")
    g = torch.Generator().manual_seed(seed + 2)
    text_dim = dit.config.text_dim
    save_text_embeddings(
        path / "text_embeddings.safetensors",
        {
            "default": torch.randn(5, text_dim, generator=g),
            "a person talking": torch.randn(4, text_dim, generator=g),
        },
    )
    manifest = Manifest(
        vae="vae.safetensors",
        vae_config=None,
        light_decoder=None,
        text_encoder=None,
        codebook=None,
        portrait=None,
    )
    (path / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2))
    return path
