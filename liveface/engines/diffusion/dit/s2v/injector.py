"""Wan-S2V's audio injector (checkpoint prefix ``audio_injector.``).

After each listed block (``InjectionPoint.AFTER_BLOCK``) the noisy video tokens of every latent
frame attend to that frame's audio tokens: a cross-attention with q/k RMS norm
(``injector.{j}``, ``j`` counting the listed blocks in order) on the tokens normalised by an
AdaLN whose shift and scale come from the frame's global audio token
(``injector_adain_layers.{j}.linear``; LayerNorm epsilon 1e-5, shift first), or by a plain
LayerNorm without the global branch. The DiT slices the grid into frames and adds the residual.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from liveface.engines.diffusion.dit.attention import Attention, compute_dtype
from liveface.engines.diffusion.dit.audio_injection import AudioInjector, InjectionPoint

#: LayerNorm epsilon of the AdaLN (diffusers ``AdaLayerNorm`` default).
ADAIN_EPS = 1e-5
#: LayerNorm epsilon of the plain pre-norm used without AdaLN.
PRE_NORM_EPS = 1e-6


class AdaNorm(nn.Module):
    """LayerNorm (no affine) modulated by ``linear(silu(embedding))`` = (shift, scale)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``x`` ``(n, tokens, dim)``, ``embedding`` ``(n, dim)`` -> ``(n, tokens, dim)``."""
        emb = F.silu(embedding.to(compute_dtype(self.linear)))
        shift, scale = self.linear(emb).float().chunk(2, dim=1)
        normed = F.layer_norm(x.float(), (x.shape[-1],), eps=ADAIN_EPS)
        return normed * (1 + scale[:, None]) + shift[:, None]


class S2VAudioInjector(AudioInjector):
    """Audio attention after the blocks in ``layers`` (see the module docstring).

    The audio tokens of a frame (:meth:`~.audio_encoder.CausalAudioEncoder.clip_tokens`) hold the
    attended tokens first and, with ``adain``, the global token last.
    """

    def __init__(self, dim: int, num_heads: int, layers: tuple[int, ...], adain: bool) -> None:
        super().__init__()
        self.adain = adain
        self.slots = {block: j for j, block in enumerate(layers)}
        self.injector = nn.ModuleList(
            Attention(dim, num_heads, qk_norm=True, eps=1e-6) for _ in layers
        )
        if adain:
            self.injector_adain_layers = nn.ModuleList(AdaNorm(dim) for _ in layers)

    @property
    def point(self) -> InjectionPoint:
        return InjectionPoint.AFTER_BLOCK

    def injects_at(self, block_index: int) -> bool:
        return block_index in self.slots

    def residual(self, block_index: int, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        j = self.slots[block_index]
        x = frames.flatten(0, 1)
        tokens = audio.flatten(0, 1)
        if self.adain:
            norm = cast(AdaNorm, self.injector_adain_layers[j])
            x = norm(x, tokens[:, -1])
            tokens = tokens[:, :-1]
        else:
            x = F.layer_norm(x.float(), (x.shape[-1],), eps=PRE_NORM_EPS)
        out = cast(Attention, self.injector[j])(x, context=tokens)
        return out.unflatten(0, frames.shape[:2])
