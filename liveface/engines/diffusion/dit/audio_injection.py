"""The interface between the DiT and any audio conditioning module.

The DiT knows only :class:`AudioInjector`: which blocks take audio, at which point of the block
(:class:`InjectionPoint`), and a ``residual`` function computed frame by frame. It slices the
token grid into latent frames itself, so every implementation gets segment-wise attention for free:
the tokens of latent frame ``k`` only ever see the audio tokens of frame ``k``.

Two designs plug in here:

- Soul (Wan2.2-5B + audio): an audio cross-attention in every block, between the text
  cross-attention and the FFN (:attr:`InjectionPoint.AFTER_CROSS_ATTN`), see
  :class:`liveface.engines.diffusion.dit.audio_adapter.AudioAdapter`;
- Wan-S2V-14B: audio attention after selected blocks (:attr:`InjectionPoint.AFTER_BLOCK`) with
  its own front end; a subclass implements the same three members.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

import torch
from torch import nn


class InjectionPoint(enum.Enum):
    """Where in a block the audio residual is added."""

    #: After the text cross-attention, before the FFN (Soul).
    AFTER_CROSS_ATTN = "after_cross_attn"
    #: After the whole block (Wan-S2V ``after_transformer_block``).
    AFTER_BLOCK = "after_block"


@dataclass(frozen=True)
class AudioTokens:
    """Audio tokens aligned with latent frames, computed once per chunk (not per step).

    Attributes:
        tokens: ``(batch, frames, tokens_per_frame, dim)``; ``tokens[:, k]`` belongs to latent
            frame ``first_frame + k`` of the DiT's input.
        first_frame: latent frame of the DiT input that ``tokens[:, 0]`` animates; frames before it
            (a reference latent, motion frames) and after the last one get no audio.
    """

    tokens: torch.Tensor
    first_frame: int = 0

    def __post_init__(self) -> None:
        if self.tokens.dim() != 4:
            raise ValueError(
                f"audio tokens must be (batch, frames, tokens_per_frame, dim), got "
                f"{tuple(self.tokens.shape)}"
            )
        if self.first_frame < 0:
            raise ValueError("first_frame must be >= 0")

    @property
    def num_frames(self) -> int:
        return self.tokens.shape[1]

    def unconditional(self) -> AudioTokens:
        """Zero tokens of the same shape (the 'no audio' branch of audio guidance)."""
        return AudioTokens(tokens=torch.zeros_like(self.tokens), first_frame=self.first_frame)


class AudioInjector(nn.Module, abc.ABC):
    """An audio module attached to a DiT (its parameters live under the DiT's ``audio.`` prefix
    but are saved and loaded on their own, see :mod:`liveface.engines.diffusion.checkpoint.dit`)."""

    @property
    @abc.abstractmethod
    def point(self) -> InjectionPoint:
        """Where the residual is added."""

    @abc.abstractmethod
    def injects_at(self, block_index: int) -> bool:
        """Whether block ``block_index`` takes audio."""

    @abc.abstractmethod
    def residual(self, block_index: int, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The audio update of the video tokens, frame by frame.

        Args:
            block_index: the DiT block.
            frames: float32 video tokens ``(batch, frames, tokens_per_frame, dim)``.
            audio: audio tokens ``(batch, frames, audio_tokens_per_frame, dim)`` of the same frames.

        Returns:
            ``(batch, frames, tokens_per_frame, dim)``, added to ``frames``.
        """
