"""Wan-S2V: the Wan DiT with its speech-to-video plug-ins, key-compatible with Wan2.2-S2V-14B.

:class:`WanS2VDiT` *is* a :class:`~..model.WanDiT` (same blocks, text path, head) whose extra
modules carry the official names: ``casual_audio_encoder`` (:mod:`.audio_encoder`),
``audio_injector`` (:mod:`.injector`, plugged into the DiT's block loop through the
:class:`~..audio_injection.AudioInjector` interface), ``frame_packer`` (:mod:`.frame_packer`),
``cond_encoder`` (pose, a Conv3d patch embedding added to the noisy tokens; zero pose gives its
bias) and ``trainable_cond_mask`` (an embedding of 0 noisy / 1 reference / 2 motion added to each
token).

One forward runs ``[noisy ; reference ; motion]`` tokens through every block together
(bidirectional attention, as the official model); the noisy tokens are modulated with the step's
timestep, the others with timestep 0 (``zero_timestep``), only the noisy tokens take audio and
reach the head. Everything that does not change across the denoising steps of a clip is prepared
once by :meth:`WanS2VDiT.prepare_clip` (:class:`ClipCondition`) and :meth:`WanS2VDiT.clip_audio`.

Building on it (block-causal / KV-cached variants such as LiveAvatar): the blocks are the DiT's
own :class:`~..blocks.DiTBlock` (``forward_with_kv`` returns a segment's keys/values with RoPE
applied; ``prefix`` makes tokens attend to cached ones first); :meth:`WanS2VDiT.denoise` takes such
a :class:`~..kv_cache.PrefixCache`; :meth:`~..model.WanDiT.embed_timesteps` modulates any segments
(``sizes``) at their own timesteps; :meth:`~..model.WanDiT.rotary` builds RoPE tables for any
positions (:mod:`.frame_packer` gives the official ones), so a sink can be re-roped per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.blocks import Modulation
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.dit.rope import RotaryTables
from liveface.engines.diffusion.dit.s2v.audio_encoder import CausalAudioEncoder
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.frame_packer import (
    FramePackMotioner,
    motion_positions,
    noisy_positions,
    reference_positions,
)
from liveface.engines.diffusion.dit.s2v.injector import S2VAudioInjector
from liveface.engines.diffusion.dit.tokens import TextContext, TokenGrid, expand_batch

#: ``trainable_cond_mask`` ids.
NOISY, REFERENCE, MOTION = 0, 1, 2


@dataclass(frozen=True)
class ClipCondition:
    """One clip's conditioning, fixed for all its denoising steps.

    Attributes:
        grid: token grid of the noisy latents.
        tokens: float32 ``(batch, cond_tokens, dim)``: reference then motion tokens, their mask
            embedding added.
        noisy_bias: float32 ``(batch, 1 or noisy_tokens, dim)`` added to the noisy tokens: the
            pose embedding (or the ``cond_encoder`` bias for no pose) plus the noisy mask
            embedding.
        rope: rotary tables of all ``noisy + cond`` tokens.
    """

    grid: TokenGrid
    tokens: torch.Tensor
    noisy_bias: torch.Tensor
    rope: RotaryTables

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]


class WanS2VDiT(WanDiT):
    """The S2V model (see the module docstring)."""

    def __init__(self, config: S2VConfig) -> None:
        super().__init__(config.dit)
        self.s2v = config
        c, d = config, config.dit
        if c.cond_dim > 0:
            self.cond_encoder = nn.Conv3d(
                c.cond_dim, d.dim, kernel_size=d.patch_size, stride=d.patch_size
            )
        self.casual_audio_encoder = CausalAudioEncoder(
            c.audio_dim, c.audio_layers, d.dim, c.audio_tokens, need_global=c.adain
        )
        self.audio_injector = S2VAudioInjector(d.dim, d.num_heads, c.inject_layers, c.adain)
        self.trainable_cond_mask = nn.Embedding(3, d.dim)
        self.frame_packer = FramePackMotioner(d.in_dim, d.dim, c.zip_buckets)

    # -- once per clip ----------------------------------------------------------------------------
    def clip_audio(self, features: torch.Tensor) -> AudioTokens:
        """Audio tokens of a clip from its features at the video rate.

        Args:
            features: ``(batch, audio_layers, audio_dim, 4 * latents)`` (bucketed speech features,
                :mod:`liveface.engines.diffusion.audio.s2v_features`).
        """
        tokens = self.casual_audio_encoder.clip_tokens(features, self.s2v.motion_frames)
        return AudioTokens(tokens=tokens, first_frame=0)

    def _embed(self, latents: torch.Tensor) -> torch.Tensor:
        return self.patch_grid(latents).flatten(2).transpose(1, 2)

    def _mask(self, kind: int) -> torch.Tensor:
        return self.trainable_cond_mask.weight[kind].float()

    @torch.no_grad()
    def prepare_clip(
        self,
        reference: torch.Tensor,
        motion: torch.Tensor | None,
        frames: int,
        *,
        pose: torch.Tensor | None = None,
    ) -> ClipCondition:
        """The reference and motion tokens, pose and positions of one clip.

        Args:
            reference: ``(batch, in_dim, 1, height, width)`` latent of the reference image.
            motion: ``(batch, in_dim, motion_latents, height, width)`` latents of the previous
                clip's last frames (oldest first), or None to drop motion (a first clip).
            frames: latent frames of the noisy clip.
            pose: ``(batch, cond_dim, frames, height, width)`` pose latents; None means no pose
                (the official zero condition).
        """
        b, _, _, h, w = reference.shape
        _, ph, pw = self.config.patch_size
        grid = TokenGrid(frames, h // ph, w // pw)
        parts = [self._embed(reference) + self._mask(REFERENCE)]
        positions = [
            noisy_positions(frames, grid.height, grid.width),
            reference_positions(grid.height, grid.width),
        ]
        if motion is not None:
            weight = self.frame_packer.proj.weight
            packed = self.frame_packer(motion.to(weight.device)).float()
            parts.append(packed + self._mask(MOTION))
            positions.append(motion_positions(self.s2v.zip_buckets, grid.height, grid.width))
        noisy = self._mask(NOISY)
        if self.s2v.cond_dim > 0:
            encoder = self.cond_encoder
            if pose is None:
                pose_tokens = cast(torch.Tensor, encoder.bias).float()[None, None]
            else:
                weight = encoder.weight
                pose_tokens = encoder(pose.to(weight.device, weight.dtype)).float()
                pose_tokens = pose_tokens.flatten(2).transpose(1, 2)
            noisy = pose_tokens + noisy
        if noisy.dim() == 1:
            noisy = noisy.view(1, 1, -1)
        tokens = torch.cat(parts, dim=1)
        rope = self.rotary(torch.cat(positions))
        return ClipCondition(grid, tokens, expand_batch(noisy, b), rope)

    # -- every step -------------------------------------------------------------------------------
    def modulation(self, timesteps: torch.Tensor, noisy: int, cond: int) -> Modulation:
        """Two segments: ``noisy`` tokens at ``timesteps`` ``(batch,)``, then ``cond`` tokens at
        0 (or at ``timesteps`` too without ``zero_timestep``)."""
        t = timesteps.float().reshape(-1, 1)
        other = torch.zeros_like(t) if self.s2v.zero_timestep else t
        return self.embed_timesteps(torch.cat([t, other], dim=1), sizes=(noisy, cond))

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextContext,
        clip: ClipCondition,
        audio: AudioTokens,
        *,
        prefix: PrefixCache | None = None,
    ) -> torch.Tensor:
        """Predict the flow of the noisy clip.

        Args:
            latents: ``(batch, in_dim, frames, height, width)`` noisy latents.
            timesteps: ``(batch,)`` in ``[0, num_train_timesteps]``.
            text: the prompt (batch 1 or ``batch``).
            clip: :meth:`prepare_clip` of this clip (batch 1 or ``batch``).
            audio: :meth:`clip_audio` (batch 1 or ``batch``), one latent frame per noisy frame.
            prefix: optional per-block keys/values every token also attends to (a KV cache of
                earlier tokens, for block-causal variants built on this model).

        Returns:
            float32 ``(batch, out_dim, frames, height, width)``.
        """
        b = latents.shape[0]
        grid = clip.grid
        if latents.shape[2] != grid.frames or audio.num_frames != grid.frames:
            raise ValueError(
                f"{latents.shape[2]} noisy latent frames and audio for {audio.num_frames}; the "
                f"clip was prepared for {grid.frames}"
            )
        x = self._embed(latents) + clip.noisy_bias
        cond = expand_batch(clip.tokens, b)
        x = torch.cat([x, cond], dim=1)
        t = timesteps.to(x.device)
        mod = self.modulation(t.expand(b) if t.dim() == 0 else t, grid.tokens, cond.shape[1])
        x = self.run_blocks(
            x,
            mod,
            clip.rope,
            self._batched_text(text, b),
            grid,
            audio=audio,
            injector=self.audio_injector,
            prefix=None if prefix is None else prefix.expand(b),
        )
        head_mod = Modulation(mod.embedding[:, :1], mod.projected[:, :1])
        out = self.head(x[:, : grid.tokens], head_mod)
        return self.unpatchify(out, grid)

    def s2v_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the official checkpoint's keys (the DiT's audio slot is unused)."""
        return cast(dict[str, torch.Tensor], self.state_dict())
