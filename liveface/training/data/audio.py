"""Speech-encoder states of a clip, computed the way the streaming engine computes them.

The engine (:class:`~liveface.engines.diffusion.audio.conditioner.AudioConditioner`) encodes each
chunk's own audio window: ``context`` samples of the past, the projector's warm-up frames, the
chunk, and the lookahead; the (bidirectional) encoder never hears later audio, and what it makes
of the warm-up frames depends on the window. Two ways to cache that:

- ``exact`` (default): for every chunk position ``a`` of a clip (chunks of ``K`` latent frames,
  the engine's chunk length), the encoder states of exactly the engine's window for the chunk
  ``[a, a + K)``, cut to what the adapter reads (:func:`encode_chunks`). A training chunk then
  sees bit for bit what the engine's chunk sees. Storage: ``warmup + K`` latent frames of states
  per latent frame of video;
- ``stitched``: one *feature timeline* per clip (:func:`encode_timeline`): every latent frame
  ``j`` encoded in the window of a one-latent chunk ending at it, keeping only its own four video
  frames' features, stitched together (``1 / (warmup + 1)`` of the storage). A chunk's warm-up
  features then come from earlier windows than the engine's, which changes what the projector
  reads in its few frames of left context.

Positions are samples of the clip, which starts at sample 0 with video frame 0; a session hears
silence before it. With frame rates whose frame is not a whole number of features (30 fps at
50 features/s) the stitched timeline rounds positions to the nearest feature.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from liveface.engines.diffusion.audio.conditioner import AudioPlan
from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.dit.audio_config import AudioConfig

#: Windows the speech encoder takes per call when preparing a clip.
ENCODE_BATCH = 16


@dataclass(frozen=True)
class AudioTimeline:
    """Where a clip's speech features come from (all positions in samples of the clip, which
    starts at sample 0 with video frame 0).

    Attributes:
        sample_rate, fps, frames_per_latent, feature_hop: the adapter's timing.
        warmup_latents: latent frames the projector reads before a chunk.
        context_features: encoder features of past audio in each window (dropped after encoding).
        lookahead: samples after a window's chunk the encoder may hear.
    """

    sample_rate: int
    fps: int
    frames_per_latent: int
    feature_hop: int
    warmup_latents: int
    context_features: int
    lookahead: int

    @classmethod
    def create(
        cls, config: AudioConfig, reach_frames: int, context_ms: int, lookahead_ms: int
    ) -> AudioTimeline:
        """The engine's plan (:class:`AudioPlan`) for an adapter with this config and reach."""
        look = lookahead_ms * config.sample_rate // 1000
        p = AudioPlan.create(config, reach_frames, context_ms, look)
        return cls(
            p.sample_rate,
            p.fps,
            p.frames_per_latent,
            p.feature_hop,
            p.warmup_latents,
            p.context_features,
            p.lookahead,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def frame_start(self, frame: int) -> int:
        """First sample of video frame ``frame`` (negative frames lie before the clip)."""
        return frame * self.sample_rate // self.fps

    def anchor(self, latent: int) -> int:
        """The first video frame latent frame ``latent`` animates (latent 0: frame -3)."""
        return self.frames_per_latent * latent - (self.frames_per_latent - 1)

    @property
    def origin(self) -> int:
        """Sample where feature 0 of the timeline starts (negative)."""
        return self.frame_start(self.anchor(0) - self.warmup_latents * self.frames_per_latent)

    def window(self, latent: int, count: int = 1) -> tuple[int, int]:
        """``[begin, end)`` samples of the engine's encoder input for the chunk of latent frames
        ``[latent, latent + count)`` (what ``AudioPlan.span`` cuts from a chunk's window)."""
        first = self.anchor(latent) - self.warmup_latents * self.frames_per_latent
        begin = self.frame_start(first) - self.context_features * self.feature_hop
        return begin, self.frame_start(self.anchor(latent + count)) + self.lookahead

    def features(self, latents: int) -> int:
        """Timeline length of a clip of ``latents`` latent frames."""
        span = self.frame_start(self.anchor(latents)) - self.origin
        return math.ceil(span / self.feature_hop)

    def chunk_slice(self, first: int, count: int) -> tuple[int, int]:
        """``(start, length)`` on the timeline of the features the adapter reads for a chunk of
        latent frames ``[first, first + count)`` (warm-up included)."""
        begin = self.frame_start(self.anchor(first) - self.warmup_latents * self.frames_per_latent)
        start = round((begin - self.origin) / self.feature_hop)
        frames = (self.warmup_latents + count) * self.frames_per_latent
        # What the adapter's resampling reads (``audio_projector.features_needed``).
        return start, math.ceil(frames * self.sample_rate / (self.fps * self.feature_hop))


def _padded(states: torch.Tensor, count: int) -> torch.Tensor:
    """``(batch, layers, n, dim)`` -> ``n = count``: cut, or repeat the last feature (as the
    adapter's resampling does when an encoder returns a feature short)."""
    n = states.shape[2]
    if n >= count:
        return states[:, :, :count]
    return torch.cat([states, states[:, :, -1:].expand(-1, -1, count - n, -1)], dim=2)


def _clip_audio(wave: np.ndarray, begin: int, end: int) -> np.ndarray:
    """Samples ``[begin, end)`` of ``wave`` with zeros outside it."""
    out = np.zeros(end - begin, np.float32)
    a, b = max(begin, 0), min(end, wave.shape[0])
    if b > a:
        out[a - begin : b - begin] = wave[a:b]
    return out


def _encode_windows(
    encoder: SpeechEncoder, wave: np.ndarray, spans: list[tuple[int, int]], context: int
) -> list[torch.Tensor]:
    """Encoder states ``(layers, features, dim)`` of each window, the context features dropped;
    windows of equal length are encoded together."""
    out: list[torch.Tensor | None] = [None] * len(spans)
    by_length: dict[int, list[int]] = {}
    for i, (b, e) in enumerate(spans):
        by_length.setdefault(e - b, []).append(i)
    for length, members in by_length.items():
        for lo in range(0, len(members), ENCODE_BATCH):
            group = members[lo : lo + ENCODE_BATCH]
            batch = np.stack([_clip_audio(wave, spans[i][0], spans[i][0] + length) for i in group])
            states = encoder(torch.from_numpy(batch))[:, :, context:].float().cpu()
            for j, i in enumerate(group):
                out[i] = states[j]
    return [t for t in out if t is not None]


@torch.no_grad()
def encode_chunks(
    encoder: SpeechEncoder, wave: np.ndarray, latents: int, timeline: AudioTimeline, count: int
) -> torch.Tensor:
    """``exact`` states: ``(latents - count + 1, layers, features, dim)``, entry ``a`` being what
    the adapter reads for the chunk of latent frames ``[a, a + count)``.

    Args:
        wave: the clip's 16 kHz audio from its frame 0 on (it may run past the clip's end: the
            lookahead hears it).
    """
    t = timeline
    spans = [t.window(a, count) for a in range(latents - count + 1)]
    states = _encode_windows(encoder, wave, spans, t.context_features)
    need = t.chunk_slice(0, count)[1]
    return torch.stack([_padded(s[None], need)[0] for s in states])


@torch.no_grad()
def encode_timeline(
    encoder: SpeechEncoder, wave: np.ndarray, latents: int, timeline: AudioTimeline
) -> torch.Tensor:
    """``stitched`` states: the clip's feature timeline ``(layers, features, dim)``.

    Args:
        wave: the clip's 16 kHz audio from its frame 0 on, float32; it may run past the clip's
            end (the lookahead hears it); silence is assumed before sample 0.
        latents: latent frames of the clip.
    """
    t = timeline
    spans = [t.window(j) for j in range(latents)]
    per_window = _encode_windows(encoder, wave, spans, t.context_features)
    total = t.features(latents)
    layers, dim = per_window[0].shape[0], per_window[0].shape[2]
    out = torch.empty(layers, total, dim)
    own_starts = [t.frame_start(t.anchor(j)) for j in range(latents + 1)]
    for f in range(total):
        pos = t.origin + f * t.feature_hop
        j = max(0, min(latents - 1, int(np.searchsorted(own_starts, pos, side="right")) - 1))
        begin = spans[j][0] + t.context_features * t.feature_hop
        k = round((pos - begin) / t.feature_hop)
        states = per_window[j]
        out[:, f] = states[:, min(max(k, 0), states.shape[1] - 1)]
    return out


@torch.no_grad()
def silence_states(encoder: SpeechEncoder, timeline: AudioTimeline, count: int) -> torch.Tensor:
    """What the engine's encoder gives for an unvoiced chunk of ``count`` latent frames (digital
    silence in the whole window), ``(layers, features, dim)``, already cut to what the adapter
    reads (:meth:`AudioTimeline.chunk_slice`)."""
    t = timeline
    begin, end = t.window(0, count)
    states = encoder(torch.zeros(1, end - begin))[:, :, t.context_features :]
    return _padded(states.float().cpu(), t.chunk_slice(0, count)[1])[0]


def timeline_slice(states: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """``length`` features of ``(layers, features, dim)`` from ``start`` (the end repeated if
    the timeline is too short)."""
    return _padded(states[None, :, start : start + length], length)[0]
