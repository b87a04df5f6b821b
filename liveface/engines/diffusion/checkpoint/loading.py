"""Loading a checkpoint directory (layout in :mod:`.bundle`) into the models the engine runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.checkpoint.bundle import (
    Manifest,
    optional_file,
    read_manifest,
    read_portrait,
    resolve_device,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.streaming.codebook import Codebook, load_codebook
from liveface.engines.diffusion.text.prompts import PromptBank
from liveface.engines.diffusion.vae import TAEHV, WanVAE
from liveface.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    """Everything loaded from a checkpoint directory, on one device.

    Attributes:
        root: the directory.
        manifest: its ``liveface.json`` (or the defaults).
        dit: the DiT with the audio adapter attached.
        adapter: the audio adapter.
        encoder: the speech encoder.
        vae: the full Wan VAE (encodes portraits; decodes when no light decoder is used).
        light_decoder: the tiny decoder, when the directory has one.
        prompts: where prompt embeddings come from.
        codebook: the offline codebook, when the directory has one.
        portrait: the default portrait, uint8 ``(h, w, 3)``, when the directory has one.
        device, dtype: where and in which precision the models run.
    """

    root: Path
    manifest: Manifest
    dit: WanDiT
    adapter: AudioAdapter
    encoder: SpeechEncoder
    vae: WanVAE
    light_decoder: TAEHV | None
    prompts: PromptBank
    codebook: Codebook | None
    portrait: np.ndarray | None
    device: torch.device
    dtype: torch.dtype


def _vae(path: Path, config: object, device: torch.device, dtype: torch.dtype) -> WanVAE | TAEHV:
    from liveface.engines.diffusion.vae import config_from_dict, load_vae

    cfg = config_from_dict(config) if isinstance(config, dict) else config
    try:
        return load_vae(path, cfg, device=device, dtype=dtype)  # type: ignore[arg-type]
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_bundle(
    path: str | Path | None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Bundle:
    """Load every part of a checkpoint directory.

    Args:
        device, dtype: override the manifest's (default: cuda + bfloat16 if available, else cpu
            + float32).

    Raises:
        ConfigError: no or an incomplete directory (with download instructions).
        CheckpointError: a damaged or mismatching file.
    """
    from liveface.engines.diffusion.checkpoint.dit import load_audio_adapter, load_dit
    from liveface.engines.diffusion.text.encoders import PrecomputedTextEmbeddings, UMT5TextEncoder

    root, m = read_manifest(path)
    dev, dt = resolve_device(device or m.device, dtype or m.dtype)
    dit = load_dit(root / m.dit, dtype=dt, device=dev)
    adapter = load_audio_adapter(root / m.audio_adapter, dit=dit, dtype=dt)
    encoder = SpeechEncoder.from_pretrained(root / m.speech_encoder, dtype=dt, device=dev)
    if encoder.hidden_size != adapter.config.feature_dim or (
        encoder.num_hidden_states != adapter.config.num_feature_layers
    ):
        raise CheckpointError(
            f"the audio adapter expects {adapter.config.num_feature_layers} hidden states of "
            f"width {adapter.config.feature_dim}; the speech encoder in {root / m.speech_encoder} "
            f"gives {encoder.num_hidden_states} of width {encoder.hidden_size}"
        )
    vae = _vae(root / m.vae, m.vae_config, dev, dt)
    if not isinstance(vae, WanVAE):
        raise CheckpointError(f"{root / m.vae} is not a Wan VAE (it encodes the portraits)")
    light = None
    light_path = optional_file(root, m.light_decoder)
    if light_path is not None and m.stream.decoder != "vae":
        loaded = _vae(light_path, m.light_decoder_config, dev, dt)
        if not isinstance(loaded, TAEHV):
            raise CheckpointError(f"{light_path} is not a TAEHV decoder")
        light = loaded
    if m.stream.decoder == "light" and light is None:
        raise ConfigError(f"stream.decoder is 'light' but {root} has no {m.light_decoder}")
    for part, channels in (("light decoder", light), ("VAE", vae)):
        if channels is not None and channels.latent_channels != dit.config.in_dim:
            raise CheckpointError(
                f"the {part} has {channels.latent_channels} latent channels, the DiT takes "
                f"{dit.config.in_dim}"
            )
    emb_path = optional_file(root, m.text_embeddings)
    enc_path = optional_file(root, m.text_encoder)
    embeddings = (
        PrecomputedTextEmbeddings.load(emb_path, text_dim=dit.config.text_dim) if emb_path else None
    )
    text_encoder = (
        UMT5TextEncoder.from_pretrained(
            enc_path, dtype=dt, device=dev, max_length=dit.config.text_len
        )
        if enc_path
        else None
    )
    cb_path = optional_file(root, m.codebook)
    codebook = None
    if cb_path is not None:
        codebook = load_codebook(cb_path, tau_scale=m.stream.codebook.tau_scale).to(dev)
        if codebook.channels != dit.config.in_dim:
            raise CheckpointError(f"{cb_path} holds {codebook.channels}-channel codes")
    elif m.stream.codebook.source == "file":
        raise ConfigError(f"stream.codebook.source is 'file' but {root} has no {m.codebook}")
    portrait_path = optional_file(root, m.portrait)
    portrait = read_portrait(portrait_path) if portrait_path is not None else None
    log.info("loaded diffusion checkpoint %s on %s (%s)", root, dev, dt)
    return Bundle(
        root=root,
        manifest=m,
        dit=dit.eval().requires_grad_(False),
        adapter=adapter.eval().requires_grad_(False),
        encoder=encoder,
        vae=vae,
        light_decoder=light,
        prompts=PromptBank(embeddings, text_encoder, m.default_prompt),
        codebook=codebook,
        portrait=portrait,
        device=dev,
        dtype=dt,
    )
