"""LiveAvatar on disk: the official Wan2.2-S2V-14B folder plus their LoRA file.

Layout (``--checkpoint DIR``, optionally ``--lora FILE``)::

    DIR/                                    the Wan2.2-S2V-14B folder (see :mod:`.s2v`)
      liveavatar.safetensors                Quark-Vision/Live-Avatar's LoRA (or give --lora FILE)
      taew2_1.pth                           optional light decoder (madebyollin/taehv), a quality
                                            level when present

The DiT is loaded with the LoRA merged (:mod:`.lora`, their rank 128 / alpha 64 unless the file
says otherwise) before any FP8 quantisation. The session side (VAE, wav2vec2, umT5) loads without
the DiT, so that a server whose DiT runs on pipeline ranks does not hold a copy of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from liveface.engines.diffusion.backends.fp8 import quantize_dit_linears
from liveface.engines.diffusion.checkpoint.lora import LIVEAVATAR_LORA, load_and_merge
from liveface.engines.diffusion.checkpoint.s2v import S2VFiles, load_s2v_dit, locate, resolve
from liveface.engines.diffusion.checkpoint.s2v_loading import load_s2v_media
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.engine_liveavatar import LiveAvatarParts
from liveface.engines.diffusion.vae import load_vae
from liveface.engines.diffusion.vae.interface import StreamingDecoder
from liveface.errors import ConfigError

log = logging.getLogger(__name__)

LORA_FILE = "liveavatar.safetensors"
LIGHT_DECODER_FILES = ("taew2_1.safetensors", "taew2_1.pth")
SOURCE = "https://huggingface.co/Quark-Vision/Live-Avatar"


def find_lora(checkpoint: str | Path | None, lora: str | Path | None) -> Path | None:
    """The LoRA to use: ``lora`` when given (it must exist), else ``DIR/liveavatar.safetensors``
    when present, else None (plain S2V)."""
    if lora is not None:
        p = Path(lora).expanduser()
        if not p.is_file():
            raise ConfigError(f"--lora {p} is not a file (LiveAvatar's is {LORA_FILE}, {SOURCE})")
        return p
    if checkpoint is None:
        return None
    p = Path(checkpoint).expanduser() / LORA_FILE
    return p if p.is_file() else None


def load_liveavatar_dit(
    files: S2VFiles,
    lora: Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    fp8: bool = False,
) -> WanS2VDiT:
    """The S2V DiT with the LoRA merged (then FP8 block weights when asked)."""
    dev, dt = resolve(device, dtype)
    dit = load_s2v_dit(files.root, config=files.config, dtype=dt, device=dev)
    count = load_and_merge(dit, lora, LIVEAVATAR_LORA)
    log.info("merged the LoRA %s into %d layers", lora, count)
    if fp8:
        log.info("FP8 weights in %d linear layers", quantize_dit_linears(dit, dev))
    return dit


def load_light_decoder(root: Path, device: torch.device) -> StreamingDecoder | None:
    for name in LIGHT_DECODER_FILES:
        if (root / name).is_file():
            decoder = load_vae(root / name, "taew2_1", device=device, dtype=torch.float32)
            log.info("light decoder %s", root / name)
            return decoder
    return None


def load_liveavatar_parts(
    files: S2VFiles,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LiveAvatarParts:
    """The session side: VAE, speech encoder, text encoder (and a light decoder if present)."""
    dev, dt = resolve(device, dtype)
    vae, speech, text = load_s2v_media(files, dev, dt)
    light = load_light_decoder(files.root, dev)
    return LiveAvatarParts(files.config, vae, speech, text, dev, light_decoder=light)


def locate_liveavatar(
    checkpoint: str | Path | None, lora: str | Path | None
) -> tuple[S2VFiles, Path]:
    """The S2V folder's parts and the LoRA file.

    Raises:
        ConfigError: no S2V folder, parts missing, or no LoRA (each named with its source).
    """
    files = locate(checkpoint)
    found = find_lora(checkpoint, lora)
    if found is None:
        raise ConfigError(
            f"LiveAvatar needs its LoRA: put {LORA_FILE} ({SOURCE}) into {files.root} or pass "
            "--lora FILE"
        )
    return files, found
