"""Wan-S2V's causal audio encoder (checkpoint prefix ``casual_audio_encoder.``, spelled so there).

Speech features at the video rate ``(batch, layers, audio_dim, frames)`` become audio tokens per
latent frame:

1. the hidden states are mixed with weights ``silu(weights) / sum(silu(weights))``;
2. a causal Conv1d stack (kernel 3, strides 1, 2, 2, left padding by repeating the first frame,
   LayerNorm without affine + SiLU after each) compresses 4 video frames into one latent frame. The
   local branch is ``audio_tokens`` channel groups wide (one per token); the global branch is one
   group and ends in a linear layer. Both share the stride-2 convolutions;
3. a learned padding token is appended to the local tokens of every latent frame.

With kernel 3 and left padding 2, output ``j`` of a stride-``s`` layer reads inputs
``s*j - 2 .. s*j``; so latent frame ``k`` reads video frames up to ``4k`` of the encoder's input.
The model prepends ``motion_frames`` copies of a clip's first audio frame and drops the first
``motion_latents`` outputs (:meth:`CausalAudioEncoder.clip_tokens`), after which latent frame ``k``
of the clip reads the clip's audio frames up to ``4k + 3``: its own four and earlier ones only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: LayerNorm epsilon of the encoder's norms.
_EPS = 1e-6
#: Temporal kernel of every causal convolution.
_KERNEL = 3


class CausalConv1d(nn.Module):
    """``nn.Conv1d`` after left padding ``kernel - 1`` by repeating the first frame."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, _KERNEL, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels_in, time)`` -> ``(batch, channels_out, ceil(time / stride))``."""
        return self.conv(F.pad(x, (_KERNEL - 1, 0), mode="replicate"))


def _norm_act(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm (no affine) over channels then SiLU; ``x`` ``(batch, channels, time)``."""
    y = F.layer_norm(x.transpose(1, 2), (x.shape[1],), eps=_EPS)
    return F.silu(y).transpose(1, 2)


class MotionEncoder(nn.Module):
    """The convolution stack (official ``MotionEncoder_tc``; keys ``conv1_local``,
    ``conv1_global``, ``conv2``, ``conv3``, ``final_linear``, ``padding_tokens``)."""

    def __init__(self, in_dim: int, dim: int, num_tokens: int, need_global: bool) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.need_global = need_global
        quarter = dim // 4
        self.conv1_local = CausalConv1d(in_dim, quarter * num_tokens, 1)
        if need_global:
            self.conv1_global = CausalConv1d(in_dim, quarter, 1)
            self.final_linear = nn.Linear(dim, dim)
        self.conv2 = CausalConv1d(quarter, dim // 2, 2)
        self.conv3 = CausalConv1d(dim // 2, dim, 2)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, dim // 4, time)`` -> ``(n, time_latent, dim)`` through the shared convolutions."""
        x = _norm_act(self.conv2(_norm_act(x)))
        return _norm_act(self.conv3(x)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Mixed features ``(batch, in_dim, frames)`` -> global tokens ``(batch, latents, 1,
        dim)`` (None without the global branch) and local tokens ``(batch, latents,
        num_tokens + 1, dim)`` (the last one the learned padding token)."""
        b = x.shape[0]
        # The local branch's channels are num_tokens groups, each its own token stream.
        local = self.conv1_local(x).unflatten(1, (self.num_tokens, -1)).flatten(0, 1)
        tokens = self._down(local).unflatten(0, (b, self.num_tokens)).transpose(1, 2)
        pad = self.padding_tokens.to(tokens.dtype).expand(b, tokens.shape[1], 1, -1)
        tokens = torch.cat([tokens, pad], dim=2)
        if not self.need_global:
            return None, tokens
        glob = self.final_linear(self._down(self.conv1_global(x)))
        return glob[:, :, None], tokens


class CausalAudioEncoder(nn.Module):
    """Learned layer mix + :class:`MotionEncoder` (keys ``weights``, ``encoder.*``)."""

    def __init__(
        self, audio_dim: int, num_layers: int, dim: int, num_tokens: int, need_global: bool
    ) -> None:
        super().__init__()
        self.encoder = MotionEncoder(audio_dim, dim, num_tokens, need_global)
        self.weights = nn.Parameter(torch.full((1, num_layers, 1, 1), 0.01))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(batch, layers, audio_dim, frames)`` -> see :meth:`MotionEncoder.forward`."""
        if features.dim() != 4 or features.shape[1] != self.weights.shape[1]:
            raise ValueError(
                f"audio features must be (batch, {self.weights.shape[1]}, audio_dim, frames), "
                f"got {tuple(features.shape)}"
            )
        w = F.silu(self.weights.float())
        x = features.float() * w / w.sum(dim=1, keepdim=True)
        weight = self.encoder.conv2.conv.weight
        return self.encoder(x.sum(dim=1).to(weight.dtype))

    def clip_tokens(self, features: torch.Tensor, history_frames: int) -> torch.Tensor:
        """Audio tokens of one clip as the S2V model consumes them.

        Args:
            features: ``(batch, layers, audio_dim, 4 * latents)``, the clip's audio at the video
                rate.
            history_frames: video frames of motion history (73); that many copies of the first
                frame are prepended and their ``(history_frames + 3) // 4`` latent frames dropped.

        Returns:
            ``(batch, latents, tokens, dim)``: per latent frame the local tokens, the padding
            token and (with the global branch) the global token last.
        """
        prefix = features[..., :1].expand(*features.shape[:-1], history_frames)
        glob, local = self(torch.cat([prefix, features], dim=-1))
        drop = (history_frames + 3) // 4
        parts = [local[:, drop:]] + ([] if glob is None else [glob[:, drop:]])
        return torch.cat(parts, dim=2)
