"""The base models a training run starts from, read from a checkpoint directory.

The directory has the engine's layout (:mod:`liveface.engines.diffusion.checkpoint.bundle`), but
may lack what training produces: ``audio_adapter.safetensors`` (a new adapter is created) and
``codebook.safetensors``. A typical base is the Wan2.2-TI2V-5B DiT, its VAE, a wav2vec2 or Whisper
speech encoder and umT5 (or precomputed prompt embeddings), arranged as the engine expects.
Only the parts a step needs are loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.checkpoint.bundle import MANIFEST, Manifest, optional_file
from liveface.engines.diffusion.checkpoint.dit import (
    load_audio_adapter,
    load_dit,
    read_dit_config,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.text.encoders import PrecomputedTextEmbeddings, UMT5TextEncoder
from liveface.engines.diffusion.text.prompts import PromptBank
from liveface.engines.diffusion.vae import TAEHV, WanVAE, config_from_dict, load_vae
from liveface.errors import CheckpointError, ConfigError


def read_base_manifest(root: str | Path) -> tuple[Path, Manifest]:
    """The directory and its ``liveface.json`` (defaults when absent).

    Raises:
        ConfigError: not a directory, or an invalid manifest.
    """
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ConfigError(f"base checkpoint {p} is not a directory")
    if not (p / MANIFEST).is_file():
        return p, Manifest()
    try:
        data = json.loads((p / MANIFEST).read_text())
    except ValueError as e:
        raise ConfigError(f"{p / MANIFEST} is not valid JSON ({e})") from e
    return p, Manifest.from_dict(data)


def _need(root: Path, rel: str | None, what: str) -> Path:
    if rel is None or not (root / rel).exists():
        raise ConfigError(f"base checkpoint {root} has no {what} ({rel}); see docs/training.md")
    return root / rel


@dataclass
class BaseDir:
    """A base checkpoint directory; its parts load on demand.

    Attributes:
        root: the directory.
        manifest: its ``liveface.json`` (or the defaults).
        device: where models are placed.
        dtype: precision of the frozen models.
    """

    root: Path
    manifest: Manifest
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> BaseDir:
        p, m = read_base_manifest(root)
        return cls(p, m, torch.device(device), dtype)

    def dit(self, dtype: torch.dtype | None = None) -> WanDiT:
        """The DiT with its weights in ``dtype`` (None: as stored)."""
        path = _need(self.root, self.manifest.dit, "DiT (dit/)")
        return load_dit(path, dtype=dtype, device=self.device)

    def adapter(self, dit: WanDiT) -> AudioAdapter | None:
        """The directory's audio adapter, attached to ``dit`` in float32 (None when absent)."""
        path = optional_file(self.root, self.manifest.audio_adapter)
        if path is None:
            return None
        return load_audio_adapter(path, dit=dit, dtype=torch.float32)

    def dit_config(self) -> DiTConfig:
        return read_dit_config(_need(self.root, self.manifest.dit, "DiT (dit/)"))

    def vae(self) -> WanVAE:
        path = _need(self.root, self.manifest.vae, "VAE")
        cfg = self.manifest.vae_config
        cfg = config_from_dict(cfg) if isinstance(cfg, dict) else cfg
        try:
            model = load_vae(path, cfg, device=self.device, dtype=self.dtype)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from e
        if not isinstance(model, WanVAE):
            raise CheckpointError(f"{path} is not a Wan VAE")
        return model

    def light_decoder(self) -> TAEHV | None:
        path = optional_file(self.root, self.manifest.light_decoder)
        if path is None:
            return None
        cfg = self.manifest.light_decoder_config
        cfg = config_from_dict(cfg) if isinstance(cfg, dict) else cfg
        model = load_vae(path, cfg, device=self.device, dtype=self.dtype)
        if not isinstance(model, TAEHV):
            raise CheckpointError(f"{path} is not a TAEHV decoder")
        return model

    @property
    def speech_encoder_path(self) -> Path:
        return _need(self.root, self.manifest.speech_encoder, "speech encoder")

    def speech_encoder(self) -> SpeechEncoder:
        return SpeechEncoder.from_pretrained(
            self.speech_encoder_path, dtype=self.dtype, device=self.device
        )

    @property
    def text_encoder_path(self) -> Path | None:
        """The base's umT5 text encoder, if it has one."""
        return optional_file(self.root, self.manifest.text_encoder)

    def text_embeddings(self, text_dim: int | None = None) -> PrecomputedTextEmbeddings | None:
        path = optional_file(self.root, self.manifest.text_embeddings)
        return None if path is None else PrecomputedTextEmbeddings.load(path, text_dim=text_dim)

    def prompts(self, text_dim: int, text_len: int) -> PromptBank:
        """Prompt embeddings: precomputed ones first, else the umT5 encoder.

        Raises:
            ConfigError: neither is present.
        """
        embeddings = self.text_embeddings(text_dim)
        enc_path = self.text_encoder_path
        encoder = None
        if enc_path is not None:
            encoder = UMT5TextEncoder.from_pretrained(
                enc_path, dtype=self.dtype, device=self.device, max_length=text_len
            )
        return PromptBank(embeddings, encoder, self.manifest.default_prompt)
