"""Wan-S2V clip by clip, as the official ``WanS2V.generate`` does it.

A video is made of clips of ``infer_frames`` video frames (``infer_frames / 4`` latent frames).
Per clip:

1. fresh noise from a generator seeded ``seed + clip`` (on the model's device, in its dtype);
2. UniPC (``steps``, ``shift``) with classifier-free guidance: the conditional branch has the
   prompt and the clip's audio, the unconditional one the negative prompt and zeroed audio
   features; both see the reference and motion tokens;
3. the first clip has no motion (``drop_first_motion``); it is decoded after the reference latent
   and its first ``FIRST_CLIP_TRIM`` frames are dropped. Later clips are decoded after the motion
   latents and keep their last ``infer_frames`` frames;
4. the last ``motion_frames`` decoded frames (float, before any rounding) are VAE-encoded again
   into the next clip's motion latents.

:class:`ClipGenerator` runs steps 1-4; its per-video state is a :class:`ClipState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.dit.tokens import TextContext
from liveface.engines.diffusion.sampling.unipc import UniPCSampler
from liveface.engines.diffusion.vae import WanVAE
from liveface.errors import ConfigError

#: Frames the official pipeline drops from the start of the first clip.
FIRST_CLIP_TRIM = 3
#: ``sample_neg_prompt`` of the official S2V config (wan/configs/wan_s2v_14B.py).
OFFICIAL_NEGATIVE_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class S2VSampling:
    """The official sampling settings (``wan_s2v_14B.py`` and ``generate.py`` defaults).

    Attributes:
        infer_frames: video frames per clip (a multiple of 4).
        steps, shift, guidance: UniPC steps, timestep shift and CFG scale (1: no guidance).
        fps: video frame rate of the model.
        seed: default noise seed of clip 0 (clip ``r`` uses ``seed + r``).
        prompt: the prompt when none is given.
        negative_prompt: the unconditional branch's prompt.
    """

    infer_frames: int = 80
    steps: int = 40
    shift: float = 3.0
    guidance: float = 4.5
    fps: int = 16
    seed: int = 0
    prompt: str = "A person is talking to the camera."
    negative_prompt: str = field(default=OFFICIAL_NEGATIVE_PROMPT, repr=False)

    def __post_init__(self) -> None:
        if self.infer_frames < 8 or self.infer_frames % 4:
            raise ConfigError(
                f"infer_frames must be a multiple of 4, >= 8 (got {self.infer_frames})"
            )
        if self.steps < 1 or self.shift <= 0 or self.guidance < 1 or self.seed < 0:
            raise ConfigError("steps >= 1, shift > 0, guidance >= 1 and seed >= 0 are required")

    @property
    def latents_per_clip(self) -> int:
        return self.infer_frames // 4


@dataclass
class ClipState:
    """One video's state between clips.

    Attributes:
        reference: ``(1, C, 1, h, w)`` latent of the reference image.
        last_frames: float ``(1, motion_frames, H, W, 3)`` in [-1, 1], the newest decoded frames.
        motion: ``(1, C, motion_latents, h, w)`` their latents (None before the first clip).
        text, text_null: the prompt and the negative prompt.
        seed: noise seed of clip 0 (clip ``r`` draws from ``seed + r``).
        clips: clips generated so far.
    """

    reference: torch.Tensor
    last_frames: torch.Tensor
    motion: torch.Tensor | None
    text: TextContext
    text_null: TextContext
    seed: int = 0
    clips: int = 0


class ClipGenerator:
    """The S2V model, its VAE and the sampler, clip by clip (see the module docstring)."""

    def __init__(self, dit: WanS2VDiT, vae: WanVAE, sampling: S2VSampling) -> None:
        if vae.latent_channels != dit.config.in_dim:
            raise ConfigError(
                f"the VAE has {vae.latent_channels} latent channels, the S2V DiT takes "
                f"{dit.config.in_dim} (S2V uses the Wan2.1 VAE)"
            )
        self.dit = dit
        self.vae = vae
        self.sampling = sampling

    @property
    def device(self) -> torch.device:
        return self.dit.patch_embedding.weight.device

    @torch.no_grad()
    def start(
        self,
        image: torch.Tensor,
        text: TextContext,
        text_null: TextContext,
        seed: int | None = None,
    ) -> ClipState:
        """A video's state from its reference image, float ``(H, W, 3)`` in [-1, 1] (``seed``
        None: the configured one)."""
        h, w = image.shape[:2]
        if h % 64 or w % 64:
            raise ConfigError(f"S2V needs a size divisible by 64 (got {w}x{h})")
        reference = self.vae.encode(image[None, None].to(self.device))
        frames = self.dit.s2v.motion_frames
        last = torch.zeros(1, frames, h, w, 3, device=self.device)
        seed = self.sampling.seed if seed is None else seed
        return ClipState(reference, last, None, text, text_null, seed)

    @torch.no_grad()
    def clip(
        self,
        state: ClipState,
        features: torch.Tensor,
        *,
        keep: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """The next clip's frames, float ``(1, keep, H, W, 3)`` in [-1, 1].

        Args:
            features: the clip's speech features ``(1, layers, dim, infer_frames)``.
            keep: the clip's last frames to return; default ``infer_frames``, and
                ``FIRST_CLIP_TRIM`` fewer for a first clip (the official pipeline).
            steps, guidance: override the configured ones (cheaper quality levels).
        """
        s, dit = self.sampling, self.dit
        if features.shape[-1] != s.infer_frames:
            raise ValueError(
                f"clip features cover {features.shape[-1]} frames, not {s.infer_frames}"
            )
        first = state.motion is None
        h, w = state.reference.shape[-2:]
        frames = s.latents_per_clip
        clip = dit.prepare_clip(state.reference, state.motion, frames)
        features = features.to(self.device)
        audio = dit.clip_audio(features)
        scale = s.guidance if guidance is None else guidance
        # The unconditional pass (silent audio) runs only where guidance uses it.
        uncond = None
        if scale != 1.0:
            silent = dit.clip_audio(torch.zeros_like(features))

            def uncond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return dit.denoise(x, t, state.text_null, clip, silent)

        g = torch.Generator(device=self.device).manual_seed(state.seed + state.clips)
        dtype = dit.patch_embedding.weight.dtype
        noise = torch.randn(
            (1, dit.config.in_dim, frames, h, w), generator=g, device=self.device, dtype=dtype
        )
        sampler = UniPCSampler(steps or s.steps, s.shift, scale)
        latents = sampler.sample(
            lambda x, t: dit.denoise(x, t, state.text, clip, audio),
            noise,
            uncond=uncond,
            on_step=on_step,
        )
        before = state.reference if first else state.motion
        assert before is not None
        z = torch.cat([before.to(latents.dtype), latents], dim=2)
        if keep is None:
            keep = s.infer_frames - (FIRST_CLIP_TRIM if first else 0)
        if not 0 < keep <= s.infer_frames:
            raise ValueError(f"keep must be in 1..{s.infer_frames}")
        video = self.vae.decode(z.to(self.vae_dtype), latents_per_step=1)[:, -keep:]
        n = min(state.last_frames.shape[1], video.shape[1])
        state.last_frames = torch.cat(
            [state.last_frames[:, n:], video[:, -n:].to(state.last_frames.dtype)], dim=1
        )
        state.motion = self.vae.encode(state.last_frames.to(self.vae_dtype), latents_per_step=1)
        state.clips += 1
        return video

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype
