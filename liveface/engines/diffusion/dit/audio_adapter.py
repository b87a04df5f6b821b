"""Soul / Wan-S2V style audio adapter: causal front end + segment-wise audio attention per block.

Usage::

    adapter = AudioAdapter(AudioConfig.for_dit(dit.config, feature_dim=..., num_feature_layers=...))
    init_from_text_attention(adapter, dit)          # optional, as Soul does
    dit.attach_audio(adapter)
    tokens = adapter.encode(speech_encoder(waveform), first_frame=1)   # once per chunk
    velocity = dit(latents, timesteps, context, audio=tokens)          # every step

The adapter's own state dict (``projector.*``, ``layers.{block}.*``) is saved and loaded apart
from the base DiT checkpoint; inside the DiT its keys carry the ``audio.`` prefix, so they never
collide with the official keys.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from liveface.engines.diffusion.dit.attention import Attention, FP32LayerNorm
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.audio_injection import (
    AudioInjector,
    AudioTokens,
    InjectionPoint,
)
from liveface.engines.diffusion.dit.audio_projector import AudioProjector
from liveface.engines.diffusion.dit.blocks import DiTBlock
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.errors import ConfigError

#: Parameters copied from a block's text cross-attention by :func:`init_from_text_attention`.
_COPIED = ("q", "k", "v", "o", "norm_q", "norm_k")


class SegmentAudioAttention(Attention):
    """Cross-attention from one latent frame's video tokens to that frame's audio tokens.

    ``norm`` is an affine LayerNorm on the video tokens; ``q, k, v, o, norm_q, norm_k`` mirror the
    text cross-attention (so they can be initialised from it). ``o`` starts at zero, so a fresh
    adapter leaves the DiT's output unchanged.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, eps: float) -> None:
        super().__init__(dim, num_heads, qk_norm=qk_norm, eps=eps)
        self.norm = FP32LayerNorm(dim, eps, affine=True)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def segment_forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Frame-wise attention by folding frames into the batch.

        Args:
            frames: ``(batch, frames, tokens_per_frame, dim)`` video tokens.
            audio: ``(batch, frames, audio_tokens, dim)`` audio tokens.

        Returns:
            ``(batch, frames, tokens_per_frame, dim)``.
        """
        b, f = frames.shape[:2]
        x = self.norm(frames.flatten(0, 1))
        out = self(x, context=audio.flatten(0, 1))
        return out.unflatten(0, (b, f))


class AudioAdapter(AudioInjector):
    """Front end (:class:`AudioProjector`) plus one :class:`SegmentAudioAttention` per audio block.

    ``layers`` is keyed by the DiT block index, so ``layers.7.q.weight`` belongs to block 7.
    """

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        self.projector = AudioProjector(config)
        self.layers = nn.ModuleDict(
            {
                str(i): SegmentAudioAttention(
                    config.dim, config.num_heads, qk_norm=config.qk_norm, eps=config.eps
                )
                for i in config.layers
            }
        )

    @property
    def point(self) -> InjectionPoint:
        return self.config.point

    def injects_at(self, block_index: int) -> bool:
        return str(block_index) in self.layers

    def residual(self, block_index: int, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.layer(block_index).segment_forward(frames, audio)

    def layer(self, block_index: int) -> SegmentAudioAttention:
        """The audio attention of DiT block ``block_index``."""
        return cast(SegmentAudioAttention, self.layers[str(block_index)])

    def encode(
        self,
        hidden_states: torch.Tensor,
        *,
        num_latent_frames: int | None = None,
        first_frame: int = 0,
    ) -> AudioTokens:
        """Speech-encoder hidden states -> audio tokens for the DiT.

        Args:
            hidden_states: ``(batch, layers, features, feature_dim)`` whose feature 0 starts at the
                first video frame of latent frame ``first_frame``.
            num_latent_frames: latent frames to cover; None: as many as the audio covers.
            first_frame: latent frame of the DiT input that the audio starts at (after a reference
                latent and motion frames, say).
        """
        tokens = self.projector(hidden_states, num_latent_frames)
        return AudioTokens(tokens=tokens, first_frame=first_frame)


def build_audio_adapter(dit: WanDiT, config: AudioConfig) -> AudioAdapter:
    """Create an adapter for ``dit`` (checked to fit), on the DiT's device and dtype."""
    config.check_fits(dit.config)
    weight = dit.patch_embedding.weight
    return AudioAdapter(config).to(device=weight.device, dtype=weight.dtype)


@torch.no_grad()
def init_from_text_attention(
    adapter: AudioAdapter, dit: WanDiT, *, zero_output: bool = True
) -> None:
    """Copy each audio block's text cross-attention into its audio attention (Soul's init).

    Copies ``q, k, v, o, norm_q, norm_k`` and the cross-attention's affine ``norm3`` into
    ``norm`` (when the DiT has one). With ``zero_output`` the output projection is zeroed again
    afterwards, so the adapted model starts exactly at the base model.
    """
    adapter.config.check_fits(dit.config)
    for key in adapter.layers:
        layer, block = adapter.layer(int(key)), cast(DiTBlock, dit.blocks[int(key)])
        for name in _COPIED:
            src, dst = getattr(block.cross_attn, name), getattr(layer, name)
            if type(src) is not type(dst):
                raise ConfigError(
                    f"block {key}: text and audio attention differ in {name}; use the same qk_norm"
                )
            dst.load_state_dict(src.state_dict())
        if isinstance(block.norm3, FP32LayerNorm):
            layer.norm.load_state_dict(block.norm3.state_dict())
        if zero_output:
            nn.init.zeros_(layer.o.weight)
            nn.init.zeros_(layer.o.bias)
