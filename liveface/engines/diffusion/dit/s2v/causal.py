"""LiveAvatar: Wan-S2V run block-causally over a stream, as their ``CausalWanModel_S2V`` does.

:class:`CausalS2V` drives a :class:`~.model.WanS2VDiT` (same weights, a LoRA merged in) in two
kinds of forward pass:

- :meth:`CausalS2V.prefill_sink`: the reference and motion tokens alone at t = 0 (mask ids 1 and
  2, reference at RoPE frame 30, motion at the FramePack positions, no audio), attending only to
  each other through every block. Each block's keys (before RoPE) and values are kept in a
  :class:`~.causal_cache.SinkCache`; the pass's output is not used.
- :meth:`CausalS2V.step`: one denoising step of a block of ``block_frames`` noisy latent frames
  (mask id 0, one timestep for the block, RoPE frames from the block's place in the stream). In
  every DiT block the tokens' keys (RoPE applied) and values are written into that step's
  :class:`~.causal_cache.RollingCache` first, then the tokens attend to the cache followed by the
  sink, whose keys are rotated again for this call with the reference moved to
  ``30 + max(0, frame - 30 + offset)`` (``offset`` drawn per call by the caller); the block's audio
  tokens are injected after the listed blocks as in S2V; the head gives the flow.

Numerics kept from their code because the distilled LoRA was trained with them: the RoPE
cosines and sines are rounded to float16 (their table is ``complex32``); the input of the text
cross-attention is rounded to bfloat16 before its LayerNorm and the norm's output again (a
hard-coded cast in their block); the residual stream is rounded to the weights' dtype after each
block (a no-op in float32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F

from liveface.engines.diffusion.dit.attention import KeyValue, compute_dtype
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.blocks import DiTBlock, Modulation
from liveface.engines.diffusion.dit.rope import RotaryTables, apply_rotary, rope_axis_dims
from liveface.engines.diffusion.dit.s2v.causal_block import BlockFunctions
from liveface.engines.diffusion.dit.s2v.causal_cache import CausalLayout, RollingCache, SinkCache
from liveface.engines.diffusion.dit.s2v.frame_packer import (
    REFERENCE_FRAME,
    motion_positions,
    reference_positions,
)
from liveface.engines.diffusion.dit.s2v.model import MOTION, NOISY, REFERENCE, WanS2VDiT
from liveface.engines.diffusion.dit.tokens import TextContext, TokenGrid, expand_batch

#: ``attend(layer, q, k, v, k_raw) -> (batch, heads, tokens, head_dim)``: q/k with RoPE applied,
#: ``k_raw`` the keys before it; all ``(batch, heads, tokens, head_dim)``.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def axis_rotary(
    coords: torch.Tensor, dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines ``(..., dim // 2)`` of one RoPE axis at ``coords``, rounded to float16
    once from float64 (LiveAvatar's table is ``complex32``), returned as float32."""
    # 1 / theta ** (2k / dim), in the order their rope_params computes it.
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = coords.to(torch.float64)[..., None] * inv.to(coords.device)
    return angle.cos().half().float(), angle.sin().half().float()


def half_rotary(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> RotaryTables:
    """RoPE tables of ``positions`` ``(tokens, 3)`` or ``(batch, tokens, 3)`` from
    :func:`axis_rotary` (every channel depends on one axis only)."""
    pos = positions if positions.dim() == 3 else positions.unsqueeze(0)
    parts = [axis_rotary(pos[..., a], d, theta) for a, d in enumerate(rope_axis_dims(head_dim))]
    cos = torch.cat([c for c, _ in parts], dim=-1).unsqueeze(2)
    sin = torch.cat([s for _, s in parts], dim=-1).unsqueeze(2)
    return RotaryTables(cos=cos, sin=sin)


class CausalS2V:
    """Block-causal streaming forward passes of a Wan-S2V model (see the module docstring).

    Args:
        dit: the S2V model (LoRA merged).
        block_frames, clip_frames: latent frames per block and per rolling cache.
        cross_attn_round: dtype the cross-attention input is rounded to (None: not rounded).
    """

    def __init__(
        self,
        dit: WanS2VDiT,
        *,
        block_frames: int = 3,
        clip_frames: int = 12,
        cross_attn_round: torch.dtype | None = torch.bfloat16,
    ) -> None:
        self.dit = dit
        self.block_frames = block_frames
        self.clip_frames = clip_frames
        self.cross_attn_round = cross_attn_round
        # Rows and columns of the token grid never move: their RoPE parts are made once.
        self._axes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._mods: dict[float, Modulation] = {}
        #: The block's two dense halves, eager or compiled (:meth:`BlockFunctions.compile`).
        self.functions = BlockFunctions()

    @property
    def device(self) -> torch.device:
        return self.dit.patch_embedding.weight.device

    @property
    def cache_dtype(self) -> torch.dtype:
        return compute_dtype(cast(DiTBlock, self.dit.blocks[0]).self_attn.k)

    def layout(self, latent_height: int, latent_width: int) -> CausalLayout:
        _, ph, pw = self.dit.config.patch_size
        return CausalLayout(
            latent_height // ph, latent_width // pw, self.block_frames, self.clip_frames
        )

    def new_cache(self, layout: CausalLayout) -> RollingCache:
        """An empty rolling cache for one session and one step."""
        c = self.dit.config
        return RollingCache(
            layout, c.num_layers, c.num_heads, c.head_dim, device=self.device,
            dtype=self.cache_dtype,
        )  # fmt: skip

    def _tables(self, positions: torch.Tensor) -> RotaryTables:
        c = self.dit.config
        return half_rotary(positions.to(self.device), c.head_dim, c.rope_theta)

    def modulation(self, timesteps: torch.Tensor) -> Modulation:
        """The modulation of ``(batch,)`` timesteps (one segment each); the few distinct
        timesteps of the schedule are embedded once and reused."""
        rows = []
        for t in timesteps.float().tolist():
            if t not in self._mods:
                one = torch.tensor([[t]], dtype=torch.float32, device=self.device)
                self._mods[t] = self.dit.embed_timesteps(one)
            rows.append(self._mods[t])
        if len(rows) == 1:
            return rows[0]
        return Modulation(
            torch.cat([m.embedding for m in rows]), torch.cat([m.projected for m in rows])
        )

    def _axis(self, axis: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached tables of grid positions ``0 .. count - 1`` on axis 1 (rows) or 2 (columns)."""
        if (axis, count) not in self._axes:
            c = self.dit.config
            coords = torch.arange(count, dtype=torch.float64, device=self.device)
            dim = rope_axis_dims(c.head_dim)[axis]
            self._axes[(axis, count)] = axis_rotary(coords, dim, c.rope_theta)
        return self._axes[(axis, count)]

    def grid_tables(self, frames: torch.Tensor, rows: int, cols: int) -> RotaryTables:
        """Tables of full token grids at ``frames`` ``(batch, frames_per_grid)`` (float64 frame
        positions): equal to :func:`half_rotary` of the grid positions, without recomputing the
        rows and columns. Returns ``(batch, frames * rows * cols, 1, head_dim // 2)`` tables."""
        c = self.dit.config
        b, f = frames.shape
        fc, fs = axis_rotary(frames.to(self.device), rope_axis_dims(c.head_dim)[0], c.rope_theta)
        (rc, rs), (cc, cs) = self._axis(1, rows), self._axis(2, cols)
        shape = (b, f, rows, cols)

        def grid(fp: torch.Tensor, rp: torch.Tensor, cp: torch.Tensor) -> torch.Tensor:
            parts = (
                fp[:, :, None, None].expand(*shape, -1),
                rp[None, None, :, None].expand(*shape, -1),
                cp[None, None, None, :].expand(*shape, -1),
            )
            return torch.cat(parts, dim=-1).reshape(b, f * rows * cols, 1, -1)

        return RotaryTables(cos=grid(fc, rc, cc), sin=grid(fs, rs, cs))

    # -- one DiT block -----------------------------------------------------------------------------
    def _layer(
        self,
        index: int,
        x: torch.Tensor,
        mod: Modulation,
        rope: RotaryTables,
        text: KeyValue,
        attend: Attend,
    ) -> torch.Tensor:
        """Block ``index`` over the float32 residual stream ``x`` ``(batch, tokens, dim)``."""
        block = cast(DiTBlock, self.dit.blocks[index])
        f = self.functions
        q, k, v, k_raw = f.pre(block, x, mod.projected, rope.cos, rope.sin)
        out = attend(index, q, k, v, k_raw)
        return cast(
            torch.Tensor,
            f.post(block, x, out, mod.projected, text.k, text.v, self.cross_attn_round),
        )

    def _text(self, text: TextContext, b: int) -> list[KeyValue]:
        if text.kv is None:
            raise ValueError("prepare the prompt with cache_kv=True (per-block keys and values)")
        return [KeyValue(expand_batch(kv.k, b), expand_batch(kv.v, b)) for kv in text.kv]

    # -- the sink ----------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill_sink(
        self, reference: torch.Tensor, motion: torch.Tensor, text: TextContext
    ) -> SinkCache:
        """The sink of one session.

        Args:
            reference: ``(1, in_dim, 1, h, w)`` latent of the reference image.
            motion: ``(1, in_dim, motion_latents, h, w)`` motion latents, oldest first.
            text: the session's prompt (keys/values cached).
        """
        dit = self.dit
        lay = self.layout(*reference.shape[-2:])
        ref = self._embed(reference) + self._mask(REFERENCE)
        packer = dit.frame_packer
        mot = packer(motion.to(packer.proj.weight.device)).float() + self._mask(MOTION)
        x = torch.cat([ref, mot], dim=1)
        positions = torch.cat(
            [
                reference_positions(lay.rows, lay.cols),
                motion_positions(dit.s2v.zip_buckets, lay.rows, lay.cols),
            ]
        )
        rope = self._tables(positions)
        mod = dit.embed_timesteps(torch.zeros(1, 1, device=self.device))
        texts = self._text(text, 1)
        n = lay.per_frame  # reference tokens
        ref_keys: list[torch.Tensor] = []
        motion_keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []

        def attend(
            i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_raw: torch.Tensor
        ) -> torch.Tensor:
            ref_keys.append(k_raw[:, :, :n])
            motion_keys.append(k[:, :, n:])  # rotated at positions that never move
            values.append(v)
            return F.scaled_dot_product_attention(q, k, v)

        for i in range(len(dit.blocks)):
            x = self._layer(i, x, mod, rope, texts[i], attend)
        return SinkCache(
            reference_k=torch.stack(ref_keys), motion_k=torch.stack(motion_keys),
            v=torch.stack(values), positions=positions,
        )  # fmt: skip

    def _embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(batch, in_dim, frames, h, w)`` -> float32 tokens ``(batch, tokens, dim)``."""
        return self.dit.patch_grid(latents).flatten(2).transpose(1, 2)

    def _mask(self, kind: int) -> torch.Tensor:
        """The ``trainable_cond_mask`` embedding of a segment kind, float32 ``(dim,)``."""
        return self.dit.trainable_cond_mask.weight[kind].float()

    # -- a block step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        texts: Sequence[TextContext],
        audio: AudioTokens,
        caches: Sequence[RollingCache],
        sinks: Sequence[SinkCache],
        blocks: Sequence[int],
        offsets: Sequence[int],
    ) -> torch.Tensor:
        """One denoising step of one block per sample (samples may be different sessions).

        Args:
            latents: ``(batch, in_dim, block_frames, h, w)`` noisy latents.
            timesteps: ``(batch,)`` float32 timesteps in ``[0, num_train_timesteps]``.
            texts: each sample's prompt.
            audio: ``(batch, block_frames, tokens, dim)`` audio tokens of the blocks.
            caches: each sample's rolling cache of this step.
            sinks: each sample's sink.
            blocks: each sample's block number in its stream (0, 1, ...).
            offsets: each sample's sink offset for this call.

        Returns:
            float32 flow ``(batch, out_dim, block_frames, h, w)``.
        """
        dit = self.dit
        b, _, f = latents.shape[:3]
        lay = caches[0].layout
        if f != lay.block_frames or audio.num_frames != f:
            raise ValueError(f"a block has {lay.block_frames} latent frames (got {f})")
        if not len(texts) == len(caches) == len(sinks) == len(blocks) == len(offsets) == b:
            raise ValueError("one text, cache, sink, block number and offset per sample")
        for cache, n in zip(caches, blocks, strict=True):
            cache.check_next(n)
        grid = TokenGrid(f, lay.rows, lay.cols)
        bias = cast(torch.Tensor, dit.cond_encoder.bias).float() if dit.s2v.cond_dim else 0.0
        x = self._embed(latents) + (bias + self._mask(NOISY))
        starts = [n * lay.block_frames for n in blocks]
        frames = torch.tensor(starts, dtype=torch.float64)[:, None] + torch.arange(f)
        rope = self.grid_tables(frames, lay.rows, lay.cols)
        ref_frames = [
            float(SinkCache.reference_frame(start, off, REFERENCE_FRAME))
            for start, off in zip(starts, offsets, strict=True)
        ]
        ref_ropes = self.grid_tables(torch.tensor(ref_frames, dtype=torch.float64)[:, None],
                                     lay.rows, lay.cols)  # fmt: skip
        mod = self.modulation(timesteps)
        layers = range(len(dit.blocks))
        if b == 1:
            texts_by_layer = self._text(texts[0], 1)
        else:
            text_kv = [self._text(t, 1) for t in texts]
            texts_by_layer = [
                KeyValue(torch.cat([t[i].k for t in text_kv]), torch.cat([t[i].v for t in text_kv]))
                for i in layers
            ]

        def attend(
            i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, _: torch.Tensor
        ) -> torch.Tensor:
            outs = []
            for j in range(b):
                cache, sink = caches[j], sinks[j]
                active = cache.write(i, blocks[j], k[j : j + 1], v[j : j + 1])
                tables = RotaryTables(ref_ropes.cos[j : j + 1], ref_ropes.sin[j : j + 1])
                rk = sink.reference_k[i].transpose(1, 2)  # (1, tokens, heads, head_dim)
                rk = apply_rotary(rk, tables).transpose(1, 2).to(k.dtype)
                keys = torch.cat([cache.k[i, :, :, :active], rk, sink.motion_k[i]], dim=2)
                vals = torch.cat([cache.v[i, :, :, :active], sink.v[i]], dim=2)
                outs.append(F.scaled_dot_product_attention(q[j : j + 1], keys, vals))
            return outs[0] if b == 1 else torch.cat(outs)

        injector = dit.audio_injector
        tokens = audio.tokens.to(self.device)
        for i in layers:
            x = self._layer(i, x, mod, rope, texts_by_layer[i], attend)
            if injector.injects_at(i):
                seg = x.unflatten(1, (f, lay.per_frame))
                x = (seg + injector.residual(i, seg, tokens).float()).flatten(1, 2)
        for cache in caches:
            cache.blocks += 1
        out = dit.head(x, mod)
        return dit.unpatchify(out, grid)
