"""Cutting a video into training clips: at shot changes and at silences.

A clip is a run of speech inside one shot. Speech is labelled per video frame by the runtime's
own voice activity detector (:class:`~liveface.pipeline.vad.VoiceActivity`, the one that decides
whether a live chunk is voiced), pauses shorter than ``max_pause`` frames are bridged, a short
margin of silence is kept on both sides, and runs longer than ``max_frames`` are split evenly.

Every clip has ``1 + 4k`` frames: with the causal VAE that is ``1 + k`` latent frames, the first
one a single video frame, exactly like a session of the streaming engine.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from liveface.pipeline.vad import VoiceActivity


class SkipReason(enum.Enum):
    """Why a video or a clip did not make it into the dataset."""

    UNREADABLE = "unreadable"
    NO_AUDIO = "no_audio"
    NO_SPEECH = "no_speech"
    TOO_SHORT = "too_short"
    NO_FACE = "no_face"


@dataclass(frozen=True)
class ClipSpan:
    """Frames ``[start, start + frames)`` of a video at the model's frame rate."""

    start: int
    frames: int

    @property
    def stop(self) -> int:
        return self.start + self.frames


def shot_changes(thumbs: np.ndarray, threshold: float) -> list[int]:
    """Frames that start a new shot: the grey-level histogram distance (total variation, 0..1)
    to the previous frame exceeds ``threshold``.

    Args:
        thumbs: uint8 ``(frames, h, w)``.
    """
    if thumbs.shape[0] < 2:
        return []
    bins = 32
    hist = np.stack(
        [np.bincount(t.reshape(-1) // (256 // bins), minlength=bins) for t in thumbs]
    ).astype(np.float64)
    hist /= hist.sum(axis=1, keepdims=True)
    dist = 0.5 * np.abs(np.diff(hist, axis=0)).sum(axis=1)
    return [int(i) + 1 for i in np.flatnonzero(dist > threshold)]


def voiced_frames(audio: np.ndarray, rate: int, fps: int, frames: int) -> np.ndarray:
    """Bool ``(frames,)``: whether the audio of each video frame holds speech."""
    # Remember every label of the file (the live default keeps the last minute only).
    step = rate * VoiceActivity.FRAME_MS // 1000
    vad = VoiceActivity(rate, history_frames=audio.shape[0] // step + 1)
    vad.push(audio)
    return np.array(
        [vad.voiced(n * rate // fps, (n + 1) * rate // fps) for n in range(frames)], dtype=bool
    )


def valid_length(frames: int, ratio: int = 4) -> int:
    """The longest ``1 + ratio * k`` not above ``frames`` (0 when ``frames`` is 0)."""
    return 0 if frames <= 0 else 1 + ratio * ((frames - 1) // ratio)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plan_clips(
    voiced: np.ndarray,
    shots: list[int],
    *,
    min_frames: int,
    max_frames: int,
    max_pause: int,
    margin: int,
    ratio: int = 4,
) -> tuple[list[ClipSpan], Counter[SkipReason]]:
    """Clips of speech within shots.

    Args:
        voiced: bool ``(frames,)`` speech labels.
        shots: frames that start a new shot (:func:`shot_changes`).
        min_frames: shorter clips are skipped (``too_short``).
        max_frames: longer runs are split into equal parts no longer than this.
        max_pause: silences up to this many frames do not cut a clip.
        margin: frames of silence kept before and after a run of speech.

    Returns:
        the clips (``1 + ratio * k`` frames each) and the skipped ones by reason; a video without
        any speech counts one ``no_speech``.
    """
    skipped: Counter[SkipReason] = Counter()
    n = voiced.shape[0]
    if not voiced.any():
        skipped[SkipReason.NO_SPEECH] += 1
        return [], skipped
    bounds = [0, *[s for s in shots if 0 < s < n], n]
    clips: list[ClipSpan] = []
    for lo, hi in itertools.pairwise(bounds):
        mask = voiced[lo:hi].copy()
        for a, b in _runs(~mask):  # bridge short pauses (not the shot's leading/trailing silence)
            if a > 0 and b < mask.shape[0] and b - a <= max_pause:
                mask[a:b] = True
        for a, b in _runs(mask):
            start, stop = max(0, a - margin) + lo, min(hi - lo, b + margin) + lo
            parts = max(1, math.ceil((stop - start) / max_frames))
            edges = np.linspace(start, stop, parts + 1).round().astype(int)
            for s, e in itertools.pairwise(edges):
                length = valid_length(int(e - s), ratio)
                if length < min_frames:
                    skipped[SkipReason.TOO_SHORT] += 1
                else:
                    clips.append(ClipSpan(int(s), length))
    return clips, skipped
