"""Face-masked audio routing for scenes with several characters (AnyAvatar's face-aware adapter).

AnyAvatar drives several people in one picture from their own voices by masking the audio
cross-attention with each character's face mask in the latent token grid: ``y + alpha *
CrossAttn(audio, y) * mask``. Here every character has its own audio tokens and its own mask, and
the attention itself is routed: a video token inside character ``c``'s face mask attends only to
``c``'s audio tokens (to several characters' when their masks overlap), and a token outside every
mask gets no audio update at all. So a character's voice changes nothing outside its face mask in
the block where it is injected (later blocks spread it through self-attention, as any audio does).

Usage, with any per-frame audio adapter (:class:`~.audio_adapter.AudioAdapter`)::

    router = FaceMaskedAudio(adapter)
    dit.attach_audio(router)
    tokens = scene_audio_tokens([adapter.encode(h, first_frame=1) for h in per_character])
    routing = FaceRouting.from_boxes(boxes, grid_height, grid_width, tokens_per_character=...)
    with router.routed(routing):
        velocity = dit(latents, timesteps, context, audio=tokens)

Without a routing the router is its adapter unchanged (one character, the whole frame).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_injection import (
    AudioInjector,
    AudioTokens,
    InjectionPoint,
)


@dataclass(frozen=True)
class FaceRouting:
    """Which video tokens each character's audio may reach.

    Attributes:
        masks: bool ``(batch, characters, tokens_per_frame)``: True where a token of one latent
            frame's grid (row-major, as the DiT flattens it) lies inside the character's face
            mask; the same for every frame that gets audio (faces are placed once per scene).
        tokens_per_character: audio tokens of one character per latent frame; the DiT's audio
            tokens of a frame are the characters' blocks in character order (see
            :func:`scene_audio_tokens`).
    """

    masks: torch.Tensor
    tokens_per_character: int

    def __post_init__(self) -> None:
        if self.masks.dim() != 3 or self.masks.dtype != torch.bool:
            raise ValueError("masks must be bool (batch, characters, tokens_per_frame)")
        if self.tokens_per_character <= 0:
            raise ValueError("tokens_per_character must be positive")

    @property
    def characters(self) -> int:
        return self.masks.shape[1]

    @classmethod
    def from_boxes(
        cls,
        boxes: Sequence[tuple[float, float, float, float]],
        grid_height: int,
        grid_width: int,
        tokens_per_character: int,
        device: torch.device | None = None,
    ) -> FaceRouting:
        """Masks from face boxes ``(x0, y0, x1, y1)`` (fractions of the frame, one per character):
        a token is inside when its cell of the ``grid_height x grid_width`` token grid overlaps
        the box (so a face smaller than a token still gets one)."""
        masks = torch.zeros(1, len(boxes), grid_height, grid_width, dtype=torch.bool)
        for c, (x0, y0, x1, y1) in enumerate(boxes):
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(f"box {c} must be fractions x0 < x1, y0 < y1 in [0, 1]")
            r0, r1 = math.floor(y0 * grid_height), math.ceil(y1 * grid_height)
            c0, c1 = math.floor(x0 * grid_width), math.ceil(x1 * grid_width)
            masks[0, c, r0:r1, c0:c1] = True
        return cls(masks.flatten(2).to(device), tokens_per_character)

    def key_owners(self, keys: int) -> torch.Tensor:
        """The character of each of a frame's ``keys`` audio tokens, ``(keys,)`` long.

        A token frame spanning several latent frames (temporal patch) holds their audio tokens
        one frame after the other, each frame's in character blocks.
        """
        per_frame = self.characters * self.tokens_per_character
        if keys % per_frame:
            raise ValueError(
                f"{keys} audio tokens per frame are not whole blocks of {self.characters} "
                f"characters x {self.tokens_per_character} tokens"
            )
        index = torch.arange(keys, device=self.masks.device)
        return (index % per_frame) // self.tokens_per_character

    def attention_mask(self, keys: int) -> torch.Tensor:
        """bool ``(batch, tokens_per_frame, keys)``: video token ``t`` may attend to audio token
        ``k`` when ``t`` is inside the mask of ``k``'s character."""
        owners = self.key_owners(keys)
        return self.masks[:, owners, :].transpose(1, 2)


def scene_audio_tokens(per_character: Sequence[AudioTokens]) -> AudioTokens:
    """The characters' audio tokens side by side: ``(batch, frames, characters * tokens, dim)``.

    Raises:
        ValueError: the characters' tokens cover different frames or shapes.
    """
    if not per_character:
        raise ValueError("a scene has at least one character")
    first = per_character[0]
    for t in per_character[1:]:
        if t.tokens.shape != first.tokens.shape or t.first_frame != first.first_frame:
            raise ValueError("every character's audio tokens must cover the same frames")
    tokens = torch.cat([t.tokens for t in per_character], dim=2)
    return AudioTokens(tokens=tokens, first_frame=first.first_frame)


class FaceMaskedAudio(AudioInjector):
    """An audio adapter whose attention is routed by face masks (see the module docstring).

    Its parameters are the adapter's (under ``adapter.``), so its checkpoint is the adapter's.
    """

    def __init__(self, adapter: AudioAdapter) -> None:
        super().__init__()
        self.adapter = adapter
        self._routing: FaceRouting | None = None

    @property
    def point(self) -> InjectionPoint:
        return self.adapter.point

    def injects_at(self, block_index: int) -> bool:
        return self.adapter.injects_at(block_index)

    @contextlib.contextmanager
    def routed(self, routing: FaceRouting) -> Iterator[FaceMaskedAudio]:
        """Route the audio of the DiT calls made inside the block by ``routing``."""
        previous, self._routing = self._routing, routing
        try:
            yield self
        finally:
            self._routing = previous

    def residual(self, block_index: int, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The routed audio update ``(batch, frames, tokens_per_frame, dim)``; zero outside every
        face mask.

        Args:
            frames: video tokens ``(batch, frames, tokens_per_frame, dim)``.
            audio: ``(batch, frames, keys, dim)``: each frame's characters' audio tokens.
        """
        routing = self._routing
        if routing is None:
            return self.adapter.residual(block_index, frames, audio)
        b, f, t, _ = frames.shape
        if routing.masks.shape[2] != t:
            raise ValueError(f"routing masks cover {routing.masks.shape[2]} tokens, frames {t}")
        allowed = routing.attention_mask(audio.shape[2]).expand(b, -1, -1)  # (b, t, keys)
        inside = allowed.any(dim=2)  # (b, t): in some character's mask
        # A token outside every mask would attend to nothing (NaN): let it attend to all, its
        # update is zeroed below anyway.
        allowed = allowed | ~inside[:, :, None]
        layer = self.adapter.layer(block_index)
        x = layer.norm(frames.flatten(0, 1))
        mask = allowed.repeat_interleave(f, dim=0)[:, None]  # (b * f, 1, t, keys)
        out = layer(x, context=audio.flatten(0, 1), mask=mask).unflatten(0, (b, f))
        return out * inside[:, None, :, None].to(out.dtype)
