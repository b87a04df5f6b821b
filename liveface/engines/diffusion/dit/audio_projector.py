"""Causal audio front end: encoder hidden states -> audio tokens per latent frame.

Three stages, each causal in time:

1. the speech encoder's hidden states (all layers) are mixed with learned softmax weights;
2. the mixed features (``sample_rate / feature_hop`` per second, 50 Hz) are resampled to the video
   frame rate with a box filter: video frame ``n`` averages the features that overlap its time
   span, weighted by the overlap. This handles non-integer ratios (50 Hz -> 24 or 30 fps) and
   reads no feature that starts after the frame ends;
3. causal 1D convolutions with strides multiplying to ``frames_per_latent`` compress the video rate
   to the latent rate (25 fps -> 6.25 latent frames/s), and a linear layer gives
   ``tokens_per_frame`` tokens per latent frame.

The convolutions are *end-aligned*: with kernel ``K`` and stride ``S``, output ``j`` reads inputs
``[S*j + S - K, S*j + S - 1]`` (left-padded by replicating the first input), so latent frame ``k``
sees video frames up to ``4k + 3`` (its own) and never later ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from liveface.engines.diffusion.dit.attention import FP32LayerNorm
from liveface.engines.diffusion.dit.audio_config import AudioConfig


class CausalConv1d(nn.Module):
    """End-aligned causal convolution over time; input length must be a multiple of the stride."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel {kernel_size} shorter than stride {stride}")
        self.pad = kernel_size - stride
        self.stride = stride
        self.conv = nn.Conv1d(channels_in, channels_out, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels_in, time)`` -> ``(batch, channels_out, time // stride)``."""
        if x.shape[-1] % self.stride:
            raise ValueError(f"time length {x.shape[-1]} is not a multiple of stride {self.stride}")
        return self.conv(F.pad(x, (self.pad, 0), mode="replicate") if self.pad else x)


class ConvStage(nn.Module):
    """Causal convolution, LayerNorm over channels, SiLU."""

    def __init__(
        self, channels_in: int, channels_out: int, kernel_size: int, stride: int, eps: float
    ) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels_in, channels_out, kernel_size, stride)
        self.norm = FP32LayerNorm(channels_out, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels_in, time)`` -> ``(batch, channels_out, time // stride)``."""
        y = self.conv(x)
        return F.silu(self.norm(y.transpose(1, 2)).to(y.dtype)).transpose(1, 2)


def video_frame_weights(
    num_features: int, num_frames: int, config: AudioConfig, device: torch.device | None = None
) -> torch.Tensor:
    """Box-filter weights from encoder features to video frames.

    Feature ``j`` spans samples ``[j * hop, (j + 1) * hop)``; video frame ``n`` spans
    ``[n * sr / fps, (n + 1) * sr / fps)``. Integer arithmetic in units of ``1 / fps`` samples.

    Returns:
        float32 ``(num_frames, num_features)``, rows summing to 1.
    """
    fps, sr, hop = config.fps, config.sample_rate, config.feature_hop
    j = torch.arange(num_features, device=device, dtype=torch.int64)
    n = torch.arange(num_frames, device=device, dtype=torch.int64)
    f_start, f_end = (j * hop * fps)[None], ((j + 1) * hop * fps)[None]
    v_start, v_end = (n * sr)[:, None], ((n + 1) * sr)[:, None]
    overlap = (torch.minimum(f_end, v_end) - torch.maximum(f_start, v_start)).clamp_min(0)
    return overlap.double().div(sr).float()


def features_needed(num_frames: int, config: AudioConfig) -> int:
    """Encoder features that cover ``num_frames`` video frames."""
    return math.ceil(num_frames * config.sample_rate / (config.fps * config.feature_hop))


class AudioProjector(nn.Module):
    """Learned layer mix + causal resampling + causal temporal compression (see module doc)."""

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.layer_logits = nn.Parameter(torch.zeros(c.num_feature_layers))
        self.conv_in = ConvStage(c.feature_dim, c.hidden_dim, c.kernel_size, 1, c.eps)
        self.down = nn.ModuleList(
            ConvStage(c.hidden_dim, c.hidden_dim, c.kernel_size, s, c.eps) for s in c.strides
        )
        self.to_tokens = nn.Linear(c.hidden_dim, c.tokens_per_frame * c.dim)
        self.norm_out = FP32LayerNorm(c.dim, c.eps, affine=True)

    @property
    def left_context_frames(self) -> int:
        """Video frames before a latent frame's own four that its tokens depend on (the left
        context a streaming caller keeps so that chunked and whole-clip tokens agree)."""
        c = self.config
        reach, scale = c.kernel_size - 1, 1
        for s in c.strides:
            reach += scale * (c.kernel_size - s)
            scale *= s
        return reach

    def mix_layers(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Mix all hidden states with softmax weights.

        ``(batch, layers, features, feature_dim)`` -> float32 ``(batch, features, feature_dim)``.
        """
        if hidden_states.shape[1] != self.config.num_feature_layers:
            raise ValueError(
                f"{hidden_states.shape[1]} hidden states, config expects "
                f"{self.config.num_feature_layers}"
            )
        w = torch.softmax(self.layer_logits.float(), dim=0)
        return torch.einsum("blfc,l->bfc", hidden_states.float(), w)

    def to_video_rate(self, features: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(batch, features, channels)`` at the encoder rate -> ``(batch, num_frames, channels)``.

        Missing features at the end (an encoder returns slightly fewer than the audio spans) are
        filled by repeating the last one, which keeps the result causal.
        """
        need = features_needed(num_frames, self.config)
        if features.shape[1] < need:
            tail = features[:, -1:].expand(-1, need - features.shape[1], -1)
            features = torch.cat([features, tail], dim=1)
        weights = video_frame_weights(features.shape[1], num_frames, self.config, features.device)
        return torch.einsum("nf,bfc->bnc", weights, features.float())

    def forward(
        self, hidden_states: torch.Tensor, num_latent_frames: int | None = None
    ) -> torch.Tensor:
        """Audio tokens for consecutive latent frames starting at feature 0.

        Args:
            hidden_states: ``(batch, layers, features, feature_dim)`` from the speech encoder.
            num_latent_frames: latent frames to produce; None means as many as the features cover.

        Returns:
            ``(batch, latent_frames, tokens_per_frame, dim)`` in the weights' dtype.
        """
        c = self.config
        if num_latent_frames is None:
            covered = hidden_states.shape[2] * c.feature_hop * c.fps // c.sample_rate
            num_latent_frames = covered // c.frames_per_latent
        if num_latent_frames <= 0:
            raise ValueError("audio too short for one latent frame")
        video = self.to_video_rate(
            self.mix_layers(hidden_states), num_latent_frames * c.frames_per_latent
        )
        x = video.to(self.to_tokens.weight.dtype).transpose(1, 2)
        x = self.conv_in(x)
        for stage in self.down:
            x = stage(x)
        tokens = self.to_tokens(x.transpose(1, 2)).unflatten(-1, (c.tokens_per_frame, c.dim))
        return self.norm_out(tokens).to(tokens.dtype)
