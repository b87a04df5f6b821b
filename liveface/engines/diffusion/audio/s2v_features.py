"""Wan-S2V's speech features: wav2vec2 hidden states -> per-video-frame features.

Official pipeline (``wan/modules/s2v/audio_encoder.py``), for a whole clip:

1. wav2vec2 (``wav2vec2-large-xlsr-53-english``) on the whole 16 kHz waveform, normalised to zero
   mean and unit variance over the clip; all hidden states (25 for the large model), 50 per second;
2. linear interpolation to 30 per second: ``int(T / 50 * 30)`` outputs with ``align_corners``
   (so the exact positions depend on the clip length ``T``);
3. bucketing to the video rate: video frame ``n`` takes 30-fps feature ``round(n * 30 / fps)``
   (half to even), clips of ``clip_frames`` frames, ``int(T30 / (clip_frames * 30 / fps)) + 1``
   clips, frames past the audio get zeros.

:func:`whole_clip_features` does exactly that (the offline render). wav2vec2 attends over its whole
input, so no streamed computation can equal it; :class:`StreamingFeatures` is the streaming
definition used by the live engine: the same bucketing, interpolation at the nominal rate (30-fps
feature ``j`` at 50-fps position ``5 j / 3``), and the encoder run per block of video frames on a
window of fixed left context and lookahead on the media clock. Its features therefore depend only
on the audio inside each block's window: computed chunk by chunk they equal the same definition
computed over the whole clip, whatever the chunk boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

#: Rates of the official front end: wav2vec2 features and the intermediate video rate.
ENCODER_RATE = 50
INTERMEDIATE_RATE = 30
SAMPLE_RATE = 16000
#: Audio samples per wav2vec2 feature, and the receptive field of its convolutional front end.
HOP = SAMPLE_RATE // ENCODER_RATE
RECEPTIVE_FIELD = 400

#: ``encoder(waveforms (batch, samples)) -> hidden states (batch, layers, features, dim)``.
Encoder = Callable[[torch.Tensor], torch.Tensor]


def round_half_even(x: Fraction) -> int:
    """``numpy.round`` of an exact rational."""
    floor = x.numerator // x.denominator
    rest = x - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2):
        return floor + 1
    return floor


def bucket_index(frame: int, fps: int) -> int:
    """The 30-fps feature that video frame ``frame`` takes."""
    return round_half_even(Fraction(frame * INTERMEDIATE_RATE, fps))


def interpolate_official(hidden: torch.Tensor) -> torch.Tensor:
    """Step 2 on ``(layers, features, dim)`` -> ``(layers, int(T / 50 * 30), dim)``."""
    out_len = int(hidden.shape[1] / float(ENCODER_RATE) * INTERMEDIATE_RATE)
    x = F.interpolate(hidden.transpose(1, 2), size=out_len, mode="linear", align_corners=True)
    return x.transpose(1, 2)


def clip_count(num_intermediate: int, fps: int, clip_frames: int) -> int:
    """Clips the official pipeline renders for ``num_intermediate`` 30-fps features."""
    return int(num_intermediate / (clip_frames * (INTERMEDIATE_RATE / fps))) + 1


def bucket_official(features: torch.Tensor, fps: int, clip_frames: int) -> torch.Tensor:
    """Step 3 on ``(layers, T30, dim)`` -> ``(layers, dim, clips * clip_frames)``."""
    n30 = features.shape[1]
    frames = clip_count(n30, fps, clip_frames) * clip_frames
    index = torch.tensor([bucket_index(n, fps) for n in range(frames)])
    valid = index < n30
    picked = features[:, index.clamp(max=n30 - 1)] * valid[None, :, None].to(features.dtype)
    return picked.permute(0, 2, 1)


def whole_clip_features(
    encoder: Encoder, waveform: torch.Tensor, fps: int, clip_frames: int
) -> torch.Tensor:
    """The official features of a whole clip.

    Args:
        encoder: a speech encoder returning all hidden states (it normalises its input).
        waveform: float 16 kHz ``(samples,)``.

    Returns:
        float32 ``(1, layers, dim, clips * clip_frames)``; clip ``r`` is
        ``[..., r * clip_frames : (r + 1) * clip_frames]``.
    """
    hidden = encoder(waveform.reshape(1, -1))[0].float()
    return bucket_official(interpolate_official(hidden), fps, clip_frames)[None]


@dataclass(frozen=True)
class StreamingFeatures:
    """The streaming definition (see the module docstring).

    Attributes:
        fps: video frame rate.
        block_frames: video frames whose features share one encoder window.
        context_features: encoder features of left context before a block's first needed one.
        lookahead_features: encoder features after a block's last needed one.
    """

    fps: int
    block_frames: int = 4
    context_features: int = 50
    lookahead_features: int = 0

    def _position(self, frame: int) -> Fraction:
        return Fraction(bucket_index(frame, self.fps) * ENCODER_RATE, INTERMEDIATE_RATE)

    def needed(self, first: int, stop: int) -> tuple[int, int]:
        """50-fps features ``[lo, hi)`` that video frames ``[first, stop)`` interpolate from."""
        lo = math.floor(self._position(first))
        return lo, math.floor(self._position(stop - 1)) + 2

    @property
    def span(self) -> int:
        """Encoder features every block window covers besides context and lookahead (the most
        any block needs: the frame positions repeat every ``lcm(fps, block_frames)`` frames)."""
        period = math.lcm(self.fps, self.block_frames) // self.block_frames
        spans = []
        for b in range(period):
            lo, hi = self.needed(b * self.block_frames, (b + 1) * self.block_frames)
            spans.append(hi - lo)
        return max(spans)

    def window(self, block: int) -> tuple[int, int]:
        """Media-clock samples ``[begin, end)`` the encoder reads for block ``block`` (every
        window has the same length, so blocks batch in one encoder call)."""
        lo, _ = self.needed(block * self.block_frames, (block + 1) * self.block_frames)
        begin = (lo - self.context_features) * HOP
        count = self.context_features + self.span + self.lookahead_features
        return begin, begin + (count - 1) * HOP + RECEPTIVE_FIELD

    def reach(self, first: int, stop: int) -> tuple[int, int]:
        """Samples ``[begin, end)`` read to compute video frames ``[first, stop)``."""
        b0 = first // self.block_frames
        b1 = (stop - 1) // self.block_frames
        return self.window(b0)[0], self.window(b1)[1]

    def session_reach(self, window_frames: int, first_trim: int) -> tuple[int, int]:
        """Samples of left context and of lookahead that any chunk of a session needs.

        A session's chunks are ``window_frames`` video frames long, the first one
        ``first_trim`` shorter, and each chunk's features are those of the ``window_frames``
        frames that end with it (:func:`chunk_window`).
        """
        left = ahead = first = 0
        for index in range(8):  # the window pattern repeats within a few chunks
            count = window_frames - (first_trim if index == 0 else 0)
            begin, end = self.reach(*chunk_window(first, count, window_frames))
            left = max(left, first * SAMPLE_RATE // self.fps - begin)
            ahead = max(ahead, end - (first + count) * SAMPLE_RATE // self.fps)
            first += count
        return left, ahead

    def features(
        self, encoder: Encoder, read: Callable[[int, int], np.ndarray], first: int, stop: int
    ) -> torch.Tensor:
        """Features of video frames ``[first, stop)``.

        Args:
            encoder: as for :func:`whole_clip_features`.
            read: ``read(begin, end)`` -> float32 samples ``[begin, end)`` of the media clock
                (zeros before the session began).

        Returns:
            float32 ``(1, layers, dim, stop - first)``.
        """
        blocks = range(first // self.block_frames, (stop - 1) // self.block_frames + 1)
        windows = [self.window(b) for b in blocks]
        wave = torch.from_numpy(np.stack([read(b, e) for b, e in windows]).astype(np.float32))
        hidden = encoder(wave).float()  # (blocks, layers, features, dim)
        out = []
        for k, b in enumerate(blocks):
            base = windows[k][0] // HOP
            lo = max(first, b * self.block_frames)
            hi = min(stop, (b + 1) * self.block_frames)
            for n in range(lo, hi):
                p = self._position(n) - base
                i = math.floor(p)
                frac = float(p - i)
                h = hidden[k, :, min(i, hidden.shape[2] - 1)]
                h1 = hidden[k, :, min(i + 1, hidden.shape[2] - 1)]
                out.append(h + (h1 - h) * frac)
        return torch.stack(out, dim=-1)[None]


def chunk_window(first_frame: int, num_frames: int, window_frames: int) -> tuple[int, int]:
    """Video frames ``[a, b)`` whose features drive the chunk ``[first_frame, first_frame +
    num_frames)``: the whole window of ``window_frames`` frames that ends with it."""
    stop = first_frame + num_frames
    return stop - window_frames, stop
