"""The engine's per-chunk conditioning, for a training batch (with gradients where they flow).

The streaming engine (:mod:`liveface.engines.diffusion.streaming.generation`) conditions a chunk
on: the reference latent at frame position 0, encoded once through the DiT at timestep 0 into a
key/value prefix; the motion history patch-embedded and FramePack-pooled
(:class:`~liveface.engines.diffusion.streaming.motion.MotionLayout`), run at timestep 0 on top of
that prefix; audio tokens of exactly the new latent frames (after the projector's warm-up frames);
the prompt's context; and rotary positions of the new frames right after the history. Training
calls the same model methods with the same layout, so a trained adapter sees at inference what it
saw in training (only the history differs: real latents here, generated ones there).

:meth:`WanDiT.encode_prefix` runs without autograd (inference never needs it). When trained
weights act on the prefix (LoRA, full fine-tuning), its undecorated function is called so that
gradients flow through the conditioning tokens too.
"""

from __future__ import annotations

from typing import Any

import torch

from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import TextContext, WanDiT
from liveface.engines.diffusion.dit.rope import RotaryTables
from liveface.engines.diffusion.streaming.motion import MotionLayout

#: ``WanDiT.encode_prefix`` without its ``torch.no_grad`` decorator.
_encode_prefix_with_grad: Any = getattr(WanDiT.encode_prefix, "__wrapped__", None)


class Conditioning:
    """Rotary tables and the conditioning steps for one latent grid.

    Args:
        dit: the DiT (an audio adapter attached).
        layout: the engine's motion layout for this grid.
    """

    def __init__(self, dit: WanDiT, layout: MotionLayout) -> None:
        self.dit = dit
        self.layout = layout
        self.reference_rope = dit.rotary(layout.reference_positions())
        self.history_rope = dit.rotary(layout.history_positions())
        self._new: dict[int, RotaryTables] = {}

    def new_rope(self, latents: int) -> RotaryTables:
        """Positions of a chunk's ``latents`` new frames (right after the history)."""
        if latents not in self._new:
            self._new[latents] = self.dit.rotary(self.layout.new_positions(latents))
        return self._new[latents]

    def text(self, text: torch.Tensor) -> TextContext:
        """``(B, text_len, text_dim)`` zero-padded embeddings -> the DiT's context."""
        return self.dit.prepare_context(text)

    def prefix(
        self, reference: torch.Tensor, history: torch.Tensor, text: TextContext, *, grad: bool
    ) -> PrefixCache:
        """Keys/values of ``[reference ; pooled history]`` for every block.

        Args:
            reference: ``(B, C, 1, h, w)``.
            history: ``(B, C, H, h, w)``, oldest first.
            grad: let gradients flow into the DiT's weights through the prefix.
        """
        encode = self.dit.encode_prefix
        if grad:
            if _encode_prefix_with_grad is None:  # pragma: no cover - torch always wraps
                raise RuntimeError("WanDiT.encode_prefix has no undecorated function")

            def encode(*args: Any, **kwargs: Any) -> PrefixCache:
                out: PrefixCache = _encode_prefix_with_grad(self.dit, *args, **kwargs)
                return out

        tokens = self.dit.patch_grid(reference).flatten(2).transpose(1, 2)
        past = encode(tokens, self.reference_rope, text)
        pooled = self.layout.pool_tokens(self.dit.patch_grid(history))
        return encode(pooled, self.history_rope, text, past=past)

    @staticmethod
    def audio(
        adapter: AudioAdapter, states: torch.Tensor, keep: torch.Tensor, warmup: int, latents: int
    ) -> AudioTokens:
        """Audio tokens of a chunk's new frames, as the engine's conditioner computes them.

        Args:
            states: ``(B, layers, features, dim)`` from the chunk's warm-up on.
            keep: ``(B,)``; 0 gives the zero tokens of the engine's unconditional branch.
            warmup: latent frames computed and dropped before the chunk.
            latents: the chunk's new latent frames.
        """
        tokens = adapter.encode(states, num_latent_frames=warmup + latents).tokens[:, warmup:]
        tokens = tokens * keep.to(tokens.dtype)[:, None, None, None]
        return AudioTokens(tokens=tokens, first_frame=0)
