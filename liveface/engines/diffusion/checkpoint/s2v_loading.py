"""Loading every part of an S2V checkpoint directory (layout: :mod:`.s2v`) onto one device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.backends.fp8 import quantize_dit_linears
from liveface.engines.diffusion.checkpoint.s2v import S2VFiles, load_s2v_dit, locate, resolve
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.text.encoders import UMT5TextEncoder
from liveface.engines.diffusion.text.wan_t5 import load_wan_umt5
from liveface.engines.diffusion.vae import WanVAE, load_vae
from liveface.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class S2VBundle:
    """The loaded S2V parts.

    Attributes:
        files: where they came from.
        dit: the S2V model.
        vae: the Wan2.1 VAE.
        speech: the wav2vec2 encoder (all hidden states).
        text: the umT5 encoder with its tokenizer.
        device, dtype: where and in which precision the DiT runs (bfloat16 on CUDA).
        fp8: the DiT's block linears hold FP8 weights.
    """

    files: S2VFiles
    dit: WanS2VDiT
    vae: WanVAE
    speech: SpeechEncoder
    text: UMT5TextEncoder
    device: torch.device
    dtype: torch.dtype
    fp8: bool = False


def load_s2v_media(
    files: S2VFiles, device: torch.device, dtype: torch.dtype
) -> tuple[WanVAE, SpeechEncoder, UMT5TextEncoder]:
    """The parts around the DiT (shared with LiveAvatar): the Wan2.1 VAE, wav2vec2 and umT5,
    each checked against the DiT's config.

    Raises:
        CheckpointError: a part that is not what the S2V DiT takes (named).
    """
    try:
        preset = None if files.vae.suffix == ".safetensors" else "wan2.1"
        vae = load_vae(files.vae, preset, device=device, dtype=torch.float32)
    except CheckpointError as e:
        raise CheckpointError(f"{files.vae} is not the Wan2.1 VAE S2V uses ({e})") from e
    if not isinstance(vae, WanVAE):
        raise CheckpointError(f"{files.vae} is not a Wan VAE")
    speech = SpeechEncoder.from_pretrained(
        files.wav2vec2, kind="wav2vec2", dtype=torch.float32, device=device
    )
    cfg = files.config
    if speech.hidden_size != cfg.audio_dim or speech.num_hidden_states != cfg.audio_layers:
        raise CheckpointError(
            f"{files.wav2vec2} gives {speech.num_hidden_states} hidden states of width "
            f"{speech.hidden_size}; the S2V model mixes {cfg.audio_layers} of width "
            f"{cfg.audio_dim} (it needs wav2vec2-large-xlsr-53-english)"
        )
    text = load_wan_umt5(
        files.t5, files.tokenizer, dtype=dtype, device=device, max_length=cfg.dit.text_len
    )
    text_dim = text.model.config.d_model
    if text_dim != cfg.dit.text_dim:
        raise CheckpointError(
            f"{files.t5} gives {text_dim}-wide embeddings; the DiT takes {cfg.dit.text_dim}"
        )
    return vae, speech, text


def load_s2v_bundle(
    path: str | Path | None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    fp8: bool = False,
) -> S2VBundle:
    """Load an S2V directory as downloaded.

    Args:
        fp8: store the DiT's block linears as FP8 weights (weight-only; about half the memory
            of bfloat16).

    Raises:
        ConfigError: not an S2V directory, or parts missing (named).
        CheckpointError: a damaged file or key (named).
    """
    files = locate(path)
    dev, dt = resolve(device, dtype)
    dit = load_s2v_dit(files.root, config=files.config, dtype=dt, device=dev)
    if fp8:
        count = quantize_dit_linears(dit, dev)
        log.info("FP8 weights in %d linear layers", count)
    vae, speech, text = load_s2v_media(files, dev, dt)
    log.info("loaded S2V checkpoint %s on %s (%s%s)", files.root, dev, dt, ", fp8" if fp8 else "")
    return S2VBundle(files, dit, vae, speech, text, dev, dt, fp8)
