"""The Wan-style diffusion transformer (DiT).

Parameter names equal the official Wan2.2 ``WanModel`` checkpoint, so its weights load with strict
key checking (see :mod:`liveface.engines.diffusion.dit_loading`). Differences from the official
forward, none of which change the numbers for the official inputs:

- timesteps may be given per sample ``(batch,)``, per token frame ``(batch, frames)`` or per token
  ``(batch, tokens)``; per-frame modulation is broadcast over each frame's tokens instead of being
  materialised per token;
- rotary positions are an input ``(tokens, 3)`` so conditioning frames can sit anywhere;
- the projected prompt and its per-block keys/values can be computed once per session
  (:meth:`WanDiT.prepare_context`) instead of at every step;
- an optional audio module (:class:`~liveface.engines.diffusion.audio_injection.AudioInjector`)
  adds segment-wise audio attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from liveface.engines.diffusion.attention import KeyValue
from liveface.engines.diffusion.audio_injection import AudioInjector, AudioTokens, InjectionPoint
from liveface.engines.diffusion.blocks import (
    BLOCK_MODULATIONS,
    DiTBlock,
    Head,
    Modulation,
    StreamHook,
    linear_fp32,
    sinusoidal_embedding,
)
from liveface.engines.diffusion.config import DiTConfig
from liveface.engines.diffusion.rope import grid_positions, rotary_tables

#: Prefix of the audio module's parameters inside the DiT's ``state_dict``.
AUDIO_PREFIX = "audio."


@dataclass(frozen=True)
class TokenGrid:
    """Token counts along (frames, height, width) after patchifying."""

    frames: int
    height: int
    width: int

    @property
    def per_frame(self) -> int:
        return self.height * self.width

    @property
    def tokens(self) -> int:
        return self.frames * self.per_frame


@dataclass(frozen=True)
class TextContext:
    """A prompt prepared for the DiT, computed once per session and reused for every step.

    Attributes:
        states: projected text ``(batch, text_len, dim)``.
        kv: per-block keys/values of the text cross-attention, or None when not cached.
    """

    states: torch.Tensor
    kv: tuple[KeyValue, ...] | None = None

    @property
    def batch(self) -> int:
        return self.states.shape[0]


class WanDiT(nn.Module):
    """Wan2.x DiT: patch embedding, ``num_layers`` blocks, modulated head, unpatchify."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embedding = nn.Conv3d(
            c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, c.dim * BLOCK_MODULATIONS))
        self.blocks = nn.ModuleList(
            DiTBlock(
                c.dim,
                c.ffn_dim,
                c.num_heads,
                qk_norm=c.qk_norm,
                cross_attn_norm=c.cross_attn_norm,
                eps=c.eps,
            )
            for _ in range(c.num_layers)
        )
        self.head = Head(c.dim, c.patch_volume * c.out_dim, c.eps)
        self.audio: AudioInjector | None
        self.register_module("audio", None)
        self.init_weights()

    # -- set-up -----------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, *, zero_output: bool = True) -> None:
        """The official initialisation (Xavier linears, N(0, 0.02) embeddings, zero head).

        ``zero_output=False`` keeps a random head, for tests that need a non-trivial output.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        if zero_output:
            nn.init.zeros_(self.head.head.weight)

    def _blocks(self) -> list[DiTBlock]:
        return [cast(DiTBlock, b) for b in self.blocks]

    def attach_audio(self, injector: AudioInjector | None) -> None:
        """Attach (or with None detach) an audio module; its keys get the ``audio.`` prefix."""
        self.audio = injector

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the audio module: exactly the official checkpoint's keys."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(AUDIO_PREFIX)}

    # -- per-session and per-step inputs ----------------------------------------------------------
    def prepare_context(
        self, context: torch.Tensor | Sequence[torch.Tensor], *, cache_kv: bool = True
    ) -> TextContext:
        """Project a prompt embedding once per session.

        Args:
            context: ``(batch, text_tokens, text_dim)`` or a list of ``(text_tokens_i, text_dim)``;
                zero-padded to ``text_len`` as the official model does.
            cache_kv: also project every block's cross-attention keys and values
                (``2 * num_layers * text_len * dim`` values per prompt).
        """
        c = self.config
        items = list(context) if not isinstance(context, torch.Tensor) else list(context.unbind(0))
        too_long = [u.shape[0] for u in items if u.shape[0] > c.text_len]
        if too_long:
            raise ValueError(
                f"prompt embedding of {max(too_long)} tokens exceeds text_len "
                f"{c.text_len}; truncate it"
            )
        if any(u.dim() != 2 or u.shape[1] != c.text_dim for u in items):
            raise ValueError(f"each prompt embedding must be (tokens, {c.text_dim})")
        weight = cast(nn.Linear, self.text_embedding[0]).weight
        padded = torch.stack(
            [torch.cat([u, u.new_zeros(c.text_len - u.shape[0], c.text_dim)]) for u in items]
        ).to(device=weight.device, dtype=weight.dtype)
        states = self.text_embedding(padded)
        kv = None
        if cache_kv:
            kv = tuple(b.cross_attn.project_context(states) for b in self._blocks())
        return TextContext(states=states, kv=kv)

    def time_modulation(self, timesteps: torch.Tensor, grid: TokenGrid, batch: int) -> Modulation:
        """Embed timesteps given per sample ``(batch,)``, per token frame ``(batch, frames)`` or
        per token ``(batch, tokens)`` (a 0-dim tensor applies to every sample)."""
        t = timesteps.to(self.patch_embedding.weight.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[0] != batch or t.shape[1] not in (1, grid.frames, grid.tokens):
            raise ValueError(
                f"timesteps of shape {tuple(timesteps.shape)} do not fit batch {batch} with "
                f"{grid.frames} token frames of {grid.per_frame} tokens: give (batch,), "
                "(batch, frames) or (batch, tokens)"
            )
        h = sinusoidal_embedding(t, self.config.freq_dim)
        emb = linear_fp32(
            cast(nn.Linear, self.time_embedding[2]),
            torch.nn.functional.silu(linear_fp32(cast(nn.Linear, self.time_embedding[0]), h)),
        )
        proj = linear_fp32(cast(nn.Linear, self.time_projection[1]), torch.nn.functional.silu(emb))
        return Modulation(embedding=emb, projected=proj.unflatten(-1, (BLOCK_MODULATIONS, -1)))

    # -- forward ----------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: TextContext | torch.Tensor | Sequence[torch.Tensor],
        *,
        positions: torch.Tensor | None = None,
        audio: AudioTokens | None = None,
    ) -> torch.Tensor:
        """Predict the flow (velocity) for every latent cell.

        Args:
            latents: ``(batch, in_dim, frames, height, width)``; conditioning frames (reference,
                motion frames) are part of it, typically with timestep 0.
            timesteps: ``(batch,)``, ``(batch, token_frames)`` or ``(batch, tokens)`` in
                ``[0, num_train_timesteps]``.
            context: a :class:`TextContext` from :meth:`prepare_context` (preferred), or the raw
                prompt embedding(s) accepted by it; batch 1 is broadcast to ``batch``.
            positions: ``(tokens, 3)`` or ``(batch, tokens, 3)`` rotary (frame, row, column) per
                token in grid order; None means the grid's own indices.
            audio: audio tokens for some of the latent frames (needs an attached audio module).

        Returns:
            float32 ``(batch, out_dim, frames, height, width)``.
        """
        c = self.config
        b, _, f, h, w = latents.shape
        pt, ph, pw = c.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent size {(f, h, w)} is not a multiple of patch {c.patch_size}")
        grid = TokenGrid(f // pt, h // ph, w // pw)
        weight = self.patch_embedding.weight
        x = self.patch_embedding(latents.to(device=weight.device, dtype=weight.dtype))
        x = x.flatten(2).transpose(1, 2).float()

        mod = self.time_modulation(timesteps, grid, b)
        if positions is None:
            positions = grid_positions(grid.frames, grid.height, grid.width, device=x.device)
        if positions.shape[-2] != grid.tokens:
            raise ValueError(f"positions hold {positions.shape[-2]} tokens, grid has {grid.tokens}")
        rope = rotary_tables(positions.to(x.device), c.head_dim, c.rope_theta)

        mask = frame_causal_mask(grid, x.device) if c.frame_causal else None
        text = context if isinstance(context, TextContext) else self.prepare_context(context)
        if text.batch not in (1, b):
            raise ValueError(f"text context batch {text.batch} does not match latents batch {b}")

        for i, block in enumerate(self._blocks()):
            text_i: KeyValue | torch.Tensor = text.states if text.kv is None else text.kv[i]
            text_i = _expand_kv(text_i, b) if isinstance(text_i, KeyValue) else _expand(text_i, b)
            mid = self._audio_hook(i, InjectionPoint.AFTER_CROSS_ATTN, audio, grid)
            x = block(x, mod, rope, text_i, after_cross_attn=mid, self_attn_mask=mask)
            after = self._audio_hook(i, InjectionPoint.AFTER_BLOCK, audio, grid)
            if after is not None:
                x = after(x)

        out = self.head(x, mod)
        return self.unpatchify(out, grid)

    def _audio_hook(
        self, index: int, point: InjectionPoint, audio: AudioTokens | None, grid: TokenGrid
    ) -> StreamHook | None:
        injector = self.audio
        if audio is None:
            return None
        if injector is None:
            raise ValueError("audio tokens given but no audio module is attached (attach_audio)")
        if injector.point is not point or not injector.injects_at(index):
            return None
        pt = self.config.patch_size[0]
        if audio.first_frame % pt or audio.num_frames % pt:
            raise ValueError(f"audio frames must align with the temporal patch size {pt}")
        first, count = audio.first_frame // pt, audio.num_frames // pt
        if first + count > grid.frames:
            raise ValueError(
                f"audio covers latent frames up to {audio.first_frame + audio.num_frames}"
                f" but the input has {grid.frames * pt}"
            )
        # A token frame spanning several latent frames attends to all of their audio tokens.
        tokens = audio.tokens.reshape(audio.tokens.shape[0], count, -1, audio.tokens.shape[-1])
        start, stop = first * grid.per_frame, (first + count) * grid.per_frame

        def hook(x: torch.Tensor) -> torch.Tensor:
            seg = x[:, start:stop].unflatten(1, (count, grid.per_frame))
            res = injector.residual(index, seg, _expand(tokens, x.shape[0]))
            upd = seg + res.float()
            return torch.cat([x[:, :start], upd.flatten(1, 2), x[:, stop:]], dim=1)

        return hook

    def unpatchify(self, x: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """Tokens back to a latent video.

        ``(batch, tokens, patch_volume * out_dim)`` -> ``(batch, out_dim, frames, height, width)``.
        """
        b = x.shape[0]
        pt, ph, pw = self.config.patch_size
        x = x.view(b, grid.frames, grid.height, grid.width, pt, ph, pw, self.config.out_dim)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, grid.frames * pt, grid.height * ph, grid.width * pw)


def frame_causal_mask(grid: TokenGrid, device: torch.device | None = None) -> torch.Tensor:
    """Bool ``(tokens, tokens)``: token ``i`` may attend to token ``j`` iff frame(j) <= frame(i)."""
    frame = torch.arange(grid.frames, device=device).repeat_interleave(grid.per_frame)
    return frame[:, None] >= frame[None, :]


def _expand(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Expand a batch-1 tensor to ``batch`` without copying."""
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


def _expand_kv(kv: KeyValue, batch: int) -> KeyValue:
    return (
        kv if kv.k.shape[0] == batch else KeyValue(k=_expand(kv.k, batch), v=_expand(kv.v, batch))
    )
