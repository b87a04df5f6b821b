"""A chunk's audio window -> audio tokens for exactly the chunk's new latent frames.

Timing (all integer samples on the session's media clock, see :mod:`liveface.engines.base`):

- a chunk generating ``k`` latent frames covers the ``4k`` video frames ending at its last frame
  (the *anchor* is the first of them). For a session's first chunk of ``1 + 4(k - 1)`` frames the
  anchor lies 3 frames before the chunk: latent frame 0 decodes to one video frame, and its audio
  is the 4 frames ending at it;
- the causal audio front end
  (:class:`~liveface.engines.diffusion.dit.audio_projector.AudioProjector`) reads
  ``left_context_frames`` video frames before a latent frame: ``warmup`` extra latent frames are
  computed and dropped, so chunked tokens do not depend on where a chunk starts;
- the speech encoder (bidirectional within its input) gets ``context`` samples before that, so its
  features at the chunk are stable, and everything up to the window's end: the chunk plus the
  declared lookahead. Nothing after the window is ever read.

Idle (``AudioChunk.voiced`` False) is conditioned explicitly as silence with ``idle="silence"``:
the window is replaced by digital silence, whose tokens (what the adapter was trained to map to a
closed, resting mouth) are computed once per window length and reused. ``idle="input"`` encodes
the real audio even when it is unvoiced (breaths, noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from liveface.engines.base import AudioChunk
from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.errors import BadInputError

IDLE_MODES = ("silence", "input")


@dataclass(frozen=True)
class AudioPlan:
    """Where a chunk's encoder input lies within its window.

    Attributes:
        sample_rate, fps, frames_per_latent, feature_hop: from the adapter's config.
        context_features: encoder features (``feature_hop`` samples each) before the first video
            frame the adapter reads.
        warmup_latents: latent frames computed before the chunk's and dropped (projector context).
        lookahead: samples after the chunk's end that the window holds.
    """

    sample_rate: int
    fps: int
    frames_per_latent: int
    feature_hop: int
    context_features: int
    warmup_latents: int
    lookahead: int

    @classmethod
    def create(
        cls, config: AudioConfig, reach_frames: int, context_ms: int, lookahead: int
    ) -> AudioPlan:
        """Plan for an adapter whose projector reads ``reach_frames`` earlier video frames."""
        hop = config.feature_hop
        return cls(
            sample_rate=config.sample_rate,
            fps=config.fps,
            frames_per_latent=config.frames_per_latent,
            feature_hop=hop,
            context_features=math.ceil(context_ms * config.sample_rate / 1000 / hop),
            warmup_latents=math.ceil(reach_frames / config.frames_per_latent),
            lookahead=lookahead,
        )

    def frame_start(self, frame: int) -> int:
        return frame * self.sample_rate // self.fps

    @property
    def left_context(self) -> int:
        """Samples before a chunk's start its window must hold (``EngineSpec.left_context``)."""
        frames = self.frames_per_latent * (self.warmup_latents + 1)  # + 1: first-chunk anchor
        warm = math.ceil(frames * self.sample_rate / self.fps)
        return warm + self.context_features * self.feature_hop

    def span(self, chunk: AudioChunk, latents: int) -> tuple[int, int]:
        """``(offset, length)`` of the encoder input within ``chunk.window``."""
        anchor = chunk.first_frame + chunk.num_frames - latents * self.frames_per_latent
        first = anchor - self.warmup_latents * self.frames_per_latent
        begin = self.frame_start(first) - self.context_features * self.feature_hop
        offset = begin - (chunk.start - chunk.context)
        if offset < 0:
            raise BadInputError(
                f"chunk window holds {chunk.context} samples of left context; the engine needs "
                f"{chunk.context - offset}"
            )
        return offset, chunk.window.shape[0] - offset


class AudioConditioner:
    """Speech encoder + audio adapter, applied to chunks' windows."""

    def __init__(
        self, encoder: SpeechEncoder, adapter: AudioAdapter, plan: AudioPlan, idle: str = "silence"
    ) -> None:
        if idle not in IDLE_MODES:
            raise ValueError(f"idle must be one of {IDLE_MODES}")
        self.encoder = encoder
        self.adapter = adapter
        self.plan = plan
        self.idle = idle
        self._silence: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    @torch.no_grad()
    def tokens(self, chunks: Sequence[AudioChunk], latents: int) -> torch.Tensor:
        """Audio tokens ``(batch, latents, tokens_per_frame, dim)`` for chunks of ``latents`` new
        latent frames each, in order."""
        spans = [self.plan.span(c, latents) for c in chunks]
        out: list[torch.Tensor | None] = [None] * len(chunks)
        groups: dict[int, list[int]] = {}
        for i, (chunk, (_, length)) in enumerate(zip(chunks, spans, strict=True)):
            if self.idle == "silence" and not chunk.voiced:
                out[i] = self._silent(length, latents)
            else:
                groups.setdefault(length, []).append(i)
        for members in groups.values():
            wave = np.stack([chunks[i].window[spans[i][0] :] for i in members])
            encoded = self._encode(torch.from_numpy(wave.astype(np.float32)), latents)
            for j, i in enumerate(members):
                out[i] = encoded[j : j + 1]
        return torch.cat([t for t in out if t is not None])

    def _encode(self, wave: torch.Tensor, latents: int) -> torch.Tensor:
        """``(batch, samples)`` from the encoder input's start -> tokens of the last ``latents``."""
        p = self.plan
        states = self.encoder(wave.to(self.device))[:, :, p.context_features :]
        tokens = self.adapter.encode(states, num_latent_frames=p.warmup_latents + latents).tokens
        return tokens[:, p.warmup_latents :]

    def _silent(self, length: int, latents: int) -> torch.Tensor:
        key = (length, latents)
        if key not in self._silence:
            self._silence[key] = self._encode(torch.zeros(1, length), latents)
        return self._silence[key]
