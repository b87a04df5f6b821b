"""The Wan-style diffusion transformer (DiT).

Parameter names equal the official Wan2.2 ``WanModel`` checkpoint, so its weights load with strict
key checking (see :mod:`liveface.engines.diffusion.checkpoint.dit`). Differences from the official
forward, none of which change the numbers for the official inputs:

- timesteps may be given per sample ``(batch,)``, per token frame ``(batch, frames)`` or per token
  ``(batch, tokens)``; per-frame modulation is broadcast over each frame's tokens instead of being
  materialised per token;
- rotary positions are an input ``(tokens, 3)`` so conditioning frames can sit anywhere;
- the projected prompt and its per-block keys/values can be computed once per session
  (:meth:`WanDiT.prepare_context`) instead of at every step;
- an optional audio module (:class:`~liveface.engines.diffusion.dit.audio_injection.AudioInjector`)
  adds segment-wise audio attention;
- conditioning tokens (reference latent, compressed motion frames) can be run once per chunk at
  timestep 0 (:meth:`WanDiT.encode_prefix`), attending only among themselves; every denoising step
  then attends to their cached per-block keys/values (a
  :class:`~liveface.engines.diffusion.dit.kv_cache.PrefixCache`) instead of recomputing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from liveface.engines.diffusion.dit.attention import KeyValue
from liveface.engines.diffusion.dit.audio_injection import (
    AudioInjector,
    AudioTokens,
    InjectionPoint,
)
from liveface.engines.diffusion.dit.blocks import (
    BLOCK_MODULATIONS,
    DiTBlock,
    Head,
    Modulation,
    StreamHook,
    linear_fp32,
    sinusoidal_embedding,
)
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.rope import RotaryTables, grid_positions, rotary_tables
from liveface.engines.diffusion.dit.tokens import (
    TextContext,
    TokenGrid,
    expand_batch,
    expand_kv,
    frame_causal_mask,
)

__all__ = ["AUDIO_PREFIX", "TextContext", "TokenGrid", "WanDiT", "frame_causal_mask"]

#: Prefix of the audio module's parameters inside the DiT's ``state_dict``.
AUDIO_PREFIX = "audio."


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
        return self.embed_timesteps(t)

    def embed_timesteps(
        self, timesteps: torch.Tensor, sizes: tuple[int, ...] | None = None
    ) -> Modulation:
        """The modulation of ``(batch, segments)`` timesteps (segments of ``sizes`` tokens)."""
        h = sinusoidal_embedding(
            timesteps.to(self.patch_embedding.weight.device), self.config.freq_dim
        )
        emb = linear_fp32(
            cast(nn.Linear, self.time_embedding[2]),
            torch.nn.functional.silu(linear_fp32(cast(nn.Linear, self.time_embedding[0]), h)),
        )
        proj = linear_fp32(cast(nn.Linear, self.time_projection[1]), torch.nn.functional.silu(emb))
        return Modulation(emb, proj.unflatten(-1, (BLOCK_MODULATIONS, -1)), sizes)

    # -- forward ----------------------------------------------------------------------------------
    def patch_grid(self, latents: torch.Tensor) -> torch.Tensor:
        """Patch-embed latents, keeping the token grid.

        ``(batch, in_dim, frames, height, width)`` -> float32 ``(batch, dim, token_frames,
        token_rows, token_columns)``. The embedding is linear, so a token averaged over a window of
        tokens is the embedding of the mean of the window's latent patches (FramePack-style
        pooling works on this grid).
        """
        c = self.config
        f, h, w = latents.shape[2:]
        pt, ph, pw = c.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent size {(f, h, w)} is not a multiple of patch {c.patch_size}")
        weight = self.patch_embedding.weight
        return self.patch_embedding(latents.to(device=weight.device, dtype=weight.dtype)).float()

    def rotary(self, positions: torch.Tensor) -> RotaryTables:
        """Rotary tables for ``positions`` ``(tokens, 3)``, reusable across forward passes."""
        device = self.patch_embedding.weight.device
        return rotary_tables(positions.to(device), self.config.head_dim, self.config.rope_theta)

    @torch.no_grad()
    def encode_prefix(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | RotaryTables,
        context: TextContext,
        *,
        past: PrefixCache | None = None,
    ) -> PrefixCache:
        """Run clean conditioning tokens through the blocks at timestep 0 and keep their
        per-block self-attention keys/values.

        The tokens attend to ``past``'s tokens and to each other, never to later (noisy) tokens,
        so the result is fixed for all denoising steps of a chunk.

        Args:
            tokens: float32 ``(batch, tokens, dim)`` from :meth:`patch_grid` (possibly pooled).
            positions: ``(tokens, 3)`` rotary positions or their tables.
            context: the prompt (batch 1 or ``batch``).
            past: an earlier segment's prefix (e.g. the session's reference), batch 1 or ``batch``.

        Returns:
            ``past`` followed by these tokens (or these tokens alone without ``past``).
        """
        b = tokens.shape[0]
        rope = positions if isinstance(positions, RotaryTables) else self.rotary(positions)
        if rope.num_tokens != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens but positions for {rope.num_tokens}")
        zero = torch.zeros(b, device=tokens.device)
        mod = self.time_modulation(zero, TokenGrid(1, 1, tokens.shape[1]), b)
        text = self._batched_text(context, b)
        before = None if past is None else past.expand(b)
        own: list[KeyValue] = []
        x = tokens.float()
        blocks = self._blocks()
        for i, block in enumerate(blocks):
            prior = None if before is None else before.kv[i]
            if i == len(blocks) - 1:  # the last block's output feeds nothing: keys/values only
                own.append(block.self_kv(x, mod, rope))
            else:
                x, kv = block.forward_with_kv(x, mod, rope, text[i], prefix=prior)
                own.append(kv)
        mine = PrefixCache(tuple(own))
        return mine if before is None else before.then(mine)

    def _batched_text(self, context: TextContext, b: int) -> list[KeyValue | torch.Tensor]:
        if context.batch not in (1, b):
            raise ValueError(f"text context batch {context.batch} does not match batch {b}")
        if context.kv is None:
            return [expand_batch(context.states, b)] * len(self.blocks)
        return [expand_kv(kv, b) for kv in context.kv]

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: TextContext | torch.Tensor | Sequence[torch.Tensor],
        *,
        positions: torch.Tensor | RotaryTables | None = None,
        audio: AudioTokens | None = None,
        prefix: PrefixCache | None = None,
    ) -> torch.Tensor:
        """Predict the flow (velocity) for every latent cell.

        Args:
            latents: ``(batch, in_dim, frames, height, width)``; conditioning frames (reference,
                motion frames) are part of it, typically with timestep 0, unless they are given
                as a ``prefix``.
            timesteps: ``(batch,)``, ``(batch, token_frames)`` or ``(batch, tokens)`` in
                ``[0, num_train_timesteps]``.
            context: a :class:`TextContext` from :meth:`prepare_context` (preferred), or the raw
                prompt embedding(s) accepted by it; batch 1 is broadcast to ``batch``.
            positions: ``(tokens, 3)`` or ``(batch, tokens, 3)`` rotary (frame, row, column) per
                token in grid order, or their tables (:meth:`rotary`); None means the grid's own
                indices.
            audio: audio tokens for some of the latent frames (needs an attached audio module).
            prefix: cached keys/values of conditioning tokens (:meth:`encode_prefix`), batch 1
                or ``batch``; every token attends to them before the latents' own tokens.

        Returns:
            float32 ``(batch, out_dim, frames, height, width)``.
        """
        c = self.config
        b, _, f, h, w = latents.shape
        pt, ph, pw = c.patch_size
        grid = TokenGrid(f // pt, h // ph, w // pw)
        x = self.patch_grid(latents).flatten(2).transpose(1, 2)

        mod = self.time_modulation(timesteps, grid, b)
        if positions is None:
            positions = grid_positions(grid.frames, grid.height, grid.width, device=x.device)
        rope = positions if isinstance(positions, RotaryTables) else self.rotary(positions)
        if rope.num_tokens != grid.tokens:
            raise ValueError(f"positions hold {rope.num_tokens} tokens, grid has {grid.tokens}")

        mask = frame_causal_mask(grid, x.device) if c.frame_causal else None
        before = None if prefix is None else prefix.expand(b)
        if mask is not None and before is not None:
            seen = mask.new_ones(grid.tokens, before.tokens)
            mask = torch.cat([seen, mask], dim=1)
        text = context if isinstance(context, TextContext) else self.prepare_context(context)
        texts = self._batched_text(text, b)

        x = self.run_blocks(
            x, mod, rope, texts, grid, audio=audio, injector=self.audio, mask=mask, prefix=before
        )
        out = self.head(x, mod)
        return self.unpatchify(out, grid)

    def run_blocks(
        self,
        x: torch.Tensor,
        mod: Modulation,
        rope: RotaryTables,
        texts: Sequence[KeyValue | torch.Tensor],
        grid: TokenGrid,
        *,
        audio: AudioTokens | None = None,
        injector: AudioInjector | None = None,
        mask: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
    ) -> torch.Tensor:
        """Every block over the residual stream ``x`` ``(batch, tokens, dim)`` (float32), with the
        audio module's residuals; the grid's tokens come first in ``x`` (later tokens, such as
        Wan-S2V's reference and motion tokens, get no audio).

        ``prefix``: per-block keys/values every token also attends to (batch ``batch``)."""
        for i, block in enumerate(self._blocks()):
            mid = self._audio_hook(i, InjectionPoint.AFTER_CROSS_ATTN, audio, grid, injector)
            x = block(
                x,
                mod,
                rope,
                texts[i],
                after_cross_attn=mid,
                self_attn_mask=mask,
                prefix=None if prefix is None else prefix.kv[i],
            )
            after = self._audio_hook(i, InjectionPoint.AFTER_BLOCK, audio, grid, injector)
            if after is not None:
                x = after(x)
        return x

    def _audio_hook(
        self,
        index: int,
        point: InjectionPoint,
        audio: AudioTokens | None,
        grid: TokenGrid,
        injector: AudioInjector | None,
    ) -> StreamHook | None:
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
            res = injector.residual(index, seg, expand_batch(tokens, x.shape[0]))
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
