"""Small value types shared by the DiT and its plug-ins: the token grid and the prepared prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from liveface.engines.diffusion.dit.attention import KeyValue


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


def frame_causal_mask(grid: TokenGrid, device: torch.device | None = None) -> torch.Tensor:
    """Bool ``(tokens, tokens)``: token ``i`` may attend to token ``j`` iff frame(j) <= frame(i)."""
    frame = torch.arange(grid.frames, device=device).repeat_interleave(grid.per_frame)
    return frame[:, None] >= frame[None, :]


def expand_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Expand a batch-1 tensor to ``batch`` without copying."""
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


def expand_kv(kv: KeyValue, batch: int) -> KeyValue:
    """:func:`expand_batch` for both keys and values."""
    if kv.k.shape[0] == batch:
        return kv
    return KeyValue(k=expand_batch(kv.k, batch), v=expand_batch(kv.v, batch))
