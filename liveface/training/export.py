"""``export``: a trained run -> a checkpoint directory the engine loads as it is.

The directory is written by the engine's own :func:`~liveface.engines.diffusion.checkpoint.bundle.
write_bundle` (layout in :mod:`liveface.engines.diffusion.checkpoint.bundle`): the DiT with any
LoRA merged into its weights (official Wan layout, so the engine's strict key check passes), the
trained ``audio_adapter.safetensors``, the base's VAE, speech and text encoders (their folders
copied as they are) and text embeddings (the base's plus the dataset's prompts, by their text),
an optional offline codebook and default portrait, and ``liveface.json`` with the stream settings
the model was trained for (motion layout, audio context) and its sampler: the distilled few-step
schedule for a student, the guided many-step one for a teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from liveface.engines.diffusion.checkpoint.bundle import Manifest, write_bundle
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.sampling.flow import SamplerConfig
from liveface.engines.diffusion.streaming.codebook import CodebookConfig, load_codebook
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.errors import ConfigError
from liveface.training.base import BaseDir
from liveface.training.config import TrainConfig
from liveface.training.data.shards import ShardDataset
from liveface.training.lora import LoRA, merge_lora
from liveface.training.model import Models


@torch.no_grad()
def rebuild(
    base: BaseDir,
    trained: dict[str, torch.Tensor],
    meta: dict[str, str],
    dtype: torch.dtype | None = None,
) -> Models:
    """The base DiT with trained weights on it: fine-tuned DiT weights, the adapter, the LoRA.

    Raises:
        ConfigError: the weights carry no adapter config, or do not fit the base.
    """
    if "audio_config" not in meta:
        raise ConfigError(
            "the trained weights carry no audio adapter config; were they written by this trainer?"
        )
    dit = base.dit(dtype)
    for name, value in trained.items():
        if name.startswith("dit."):
            p = dit.get_parameter(name[4:])
            p.copy_(value.to(p.dtype))
    config = AudioConfig.from_json(meta["audio_config"])
    config.check_fits(dit.config)
    adapter = AudioAdapter(config).to(dit.patch_embedding.weight.device)
    state = {k[8:]: v for k, v in trained.items() if k.startswith("adapter.")}
    adapter.load_state_dict(state)
    dit.attach_audio(adapter)
    lora = None
    if "lora" in meta:
        import json

        spec = json.loads(meta["lora"])
        lora = LoRA(
            dit, rank=int(spec["rank"]), alpha=float(spec["alpha"]), targets=spec["targets"]
        )
        lora.load_state_dict({k[5:]: v for k, v in trained.items() if k.startswith("lora.")})
    return Models(dit=dit.eval(), adapter=adapter.eval(), lora=lora)


def stream_settings(
    config: TrainConfig, dataset: dict, *, sampler: SamplerConfig, codebook: bool
) -> GenerationConfig:
    """The engine's stream settings for a model trained with ``config`` on ``dataset``."""
    prep = dataset["prepare"]
    return GenerationConfig(
        chunk_latents=config.chunk_latents,
        motion=config.motion,
        sampler=sampler,
        audio_context_ms=prep["context_ms"],
        codebook=CodebookConfig(source="file") if codebook else CodebookConfig(),
    )


def export_checkpoint(
    base_dir: str | Path,
    out: str | Path,
    *,
    trained: dict[str, torch.Tensor],
    meta: dict[str, str],
    stream: GenerationConfig,
    data: ShardDataset | None = None,
    codebook: str | Path | None = None,
    portrait: np.ndarray | None = None,
) -> Path:
    """Write the engine's checkpoint directory (see the module docstring); returns it."""
    base = BaseDir.open(base_dir)
    models = rebuild(base, trained, meta, dtype=None)
    if models.lora is not None:
        merge_lora(models.dit, models.lora)
    prompts: dict[str, torch.Tensor] = {}
    existing = base.text_embeddings()
    if existing is not None:
        prompts.update({n: existing.get(n) for n in existing.names})
    if data is not None:
        from safetensors import safe_open

        from liveface.training.data.shards import PROMPTS

        with safe_open(str(data.root / PROMPTS), framework="pt") as f:
            texts = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                prompts.setdefault(texts.get(key, key), f.get_tensor(key))
    default = base.manifest.default_prompt
    if default not in prompts and base.manifest.text_encoder is None:
        raise ConfigError(f"the default prompt {default!r} has no embedding in the base or data")
    cb = load_codebook(codebook) if codebook is not None else None
    text_encoder = base.text_encoder_path
    if text_encoder is not None and not text_encoder.is_dir():
        text_encoder = None  # a folder is what the engine loads
    # The speech and text encoders are the base's, so their folders are copied as they are.
    return write_bundle(
        out,
        dit=models.dit,
        adapter=models.adapter,
        speech_encoder=base.speech_encoder_path,
        vae=base.vae(),
        light_decoder=base.light_decoder(),
        text_embeddings=prompts or None,
        text_encoder=text_encoder,
        codebook=cb,
        portrait=portrait,
        manifest=Manifest(default_prompt=default, stream=stream),
    )
