"""The model a run trains: the base DiT, its audio adapter and optionally LoRA, and which of their
weights learn.

- ``adapter``: the DiT is frozen (bfloat16 with ``precision="bf16"``); only the adapter learns;
- ``adapter+lora``: plus LoRA on the blocks' attention and FFN (merged into the DiT at export);
- ``full``: every DiT weight learns too (float32 master weights; for models that fit one device).

Trainable weights stay float32; on CUDA the forward runs under bfloat16 autocast with ``bf16``.
Gradient checkpointing wraps each DiT block with PyTorch's composable activation checkpointing,
which leaves parameter names unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from liveface.engines.diffusion.dit.audio_adapter import (
    AudioAdapter,
    build_audio_adapter,
    init_from_text_attention,
)
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.errors import ConfigError
from liveface.training.base import BaseDir
from liveface.training.config import TrainConfig
from liveface.training.data.audio import AudioTimeline
from liveface.training.lora import LoRA


@dataclass
class Models:
    """The DiT with its adapter attached, and the LoRA hooked into it (or None)."""

    dit: WanDiT
    adapter: AudioAdapter
    lora: LoRA | None

    def trainable(self) -> dict[str, nn.Parameter]:
        """Named trainable parameters: ``adapter.*``, ``lora.*``, ``dit.*``."""
        out = {f"adapter.{k}": p for k, p in self.adapter.named_parameters() if p.requires_grad}
        if self.lora is not None:
            out.update({f"lora.{k}": p for k, p in self.lora.named_parameters()})
        out.update(
            {
                f"dit.{k}": p
                for k, p in self.dit.named_parameters()
                if p.requires_grad and not k.startswith("audio.")
            }
        )
        return out

    def state(self) -> dict[str, torch.Tensor]:
        """The trainable weights, detached, on the CPU."""
        return {k: p.detach().float().cpu().contiguous() for k, p in self.trainable().items()}

    def metadata(self) -> dict[str, str]:
        """What rebuilding them needs: the adapter's config and the LoRA's shape."""
        out = {"audio_config": self.adapter.config.to_json()}
        if self.lora is not None:
            out["lora"] = json.dumps(self.lora.spec)
        return out

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Assign weights saved by :meth:`state` (strict: same names and shapes).

        Raises:
            ConfigError: names or shapes differ (another trainable selection or model).
        """
        params = self.trainable()
        if set(state) != set(params):
            missing = sorted(set(params) - set(state))[:5]
            extra = sorted(set(state) - set(params))[:5]
            raise ConfigError(
                f"trained weights do not match this model (missing {missing}, unexpected {extra})"
            )
        for k, p in params.items():
            if tuple(state[k].shape) != tuple(p.shape):
                raise ConfigError(f"{k}: shape {tuple(state[k].shape)} != {tuple(p.shape)}")
            p.copy_(state[k].to(p.dtype))

    def modules(self) -> Iterator[nn.Module]:
        yield self.dit
        if self.lora is not None:
            yield self.lora


def new_adapter_config(
    dit: WanDiT, base: BaseDir, config: TrainConfig, fps: int, frames_per_latent: int
) -> AudioConfig:
    """The config of a fresh adapter for ``dit`` and the base's speech encoder."""
    from transformers import AutoConfig

    enc = AutoConfig.from_pretrained(str(base.speech_encoder_path), local_files_only=True)
    whisper = enc.model_type == "whisper"
    a = config.adapter
    kwargs = {"layers": a.layers} if a.layers else {}
    return AudioConfig.for_dit(
        dit.config,
        **kwargs,
        feature_dim=int(enc.d_model if whisper else enc.hidden_size),
        num_feature_layers=int(enc.encoder_layers if whisper else enc.num_hidden_layers) + 1,
        encoder_kind="whisper" if whisper else "wav2vec2",
        fps=fps,
        frames_per_latent=frames_per_latent,
        hidden_dim=a.hidden_dim,
        tokens_per_frame=a.tokens_per_frame,
        kernel_size=a.kernel_size,
    )


def check_timeline(
    adapter: AudioAdapter, dataset: dict, context_ms: int, lookahead_ms: int
) -> AudioTimeline:
    """The adapter's audio timeline, which must be the one the dataset was prepared for.

    Raises:
        ConfigError: it differs (say how to prepare the data again).
    """
    mine = AudioTimeline.create(
        adapter.config, adapter.projector.left_context_frames, context_ms, lookahead_ms
    )
    theirs = AudioTimeline(**dataset["timeline"])
    if mine != theirs:
        raise ConfigError(
            f"the dataset's audio was prepared for {theirs}, this adapter needs {mine}: prepare "
            "again with the adapter's fps, kernel size, context and lookahead"
        )
    return mine


def build_models(
    base: BaseDir, config: TrainConfig, dataset: dict, *, adapter_state: dict | None = None
) -> Models:
    """Load the base DiT, create (or load) the adapter, add LoRA, select the trainable weights.

    Args:
        dataset: the prepared dataset's config (fps and latent layout of the new adapter).
        adapter_state: weights of a trained adapter to start from (``adapter.*`` keys of a
            run's state, e.g. a teacher's for distillation).
    """
    full = config.trainable == "full"
    frozen_dtype = torch.bfloat16 if config.precision == "bf16" and not full else torch.float32
    dit = base.dit(frozen_dtype)
    adapter = base.adapter(dit)
    if adapter is None:
        prep = dataset["prepare"]
        cfg = new_adapter_config(dit, base, config, prep["fps"], dataset["temporal_ratio"])
        with torch.random.fork_rng(devices=[]):  # the same new adapter in every process and run
            torch.manual_seed(config.seed)
            adapter = build_audio_adapter(dit, cfg).float()
        if config.adapter.init_from_text:
            init_from_text_attention(adapter, dit)
    adapter = adapter.float()
    if adapter_state is not None:
        adapter.load_state_dict(adapter_state)
    dit.attach_audio(adapter)
    dit.requires_grad_(full)
    adapter.requires_grad_(True)
    lora = None
    if config.uses_lora:
        lora = LoRA(
            dit,
            rank=config.lora_rank,
            alpha=config.lora_alpha,
            targets=config.lora_targets,
            seed=config.seed,
        )
    if config.gradient_checkpointing:
        from torch.distributed._composable import checkpoint

        for block in dit.blocks:
            checkpoint(block)
    dit.train()
    return Models(dit=dit, adapter=adapter, lora=lora)
