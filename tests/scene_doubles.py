"""A scene-capable test engine on the real engine contract (CONVENTIONS #3). Not for the product.

``ScenePatternEngine`` is :class:`~tests.doubles.PatternEngine` with scenes: character ``i`` of
``n`` owns the ``i``-th vertical strip of the frame, with a mouth box whose brightness follows the
RMS of *its own* voice (``chunk.voices[i]``), so a receiver can tell from the pixels which
character spoke when. The frame index is still encoded in the top rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveface.engines.base import (
    AudioChunk,
    Character,
    EngineState,
    SceneRequest,
    VideoChunk,
)
from liveface.errors import NoFaceError
from tests.doubles import PatternEngine, PatternState, encode_index

#: A character's mouth box inside its strip: fractions of the strip's width and the frame height.
STRIP_MOUTH = (0.25, 0.6, 0.75, 0.8)
IDLE = 40


@dataclass
class SceneState(PatternState):
    characters: int = 1


def mouth_boxes(n: int) -> list[tuple[float, float, float, float]]:
    """Each character's mouth box as fractions of the frame."""
    x0, y0, x1, y1 = STRIP_MOUTH
    return [((i + x0) / n, y0, (i + x1) / n, y1) for i in range(n)]


def mouth_levels(frame: np.ndarray, n: int) -> list[float]:
    """Mean brightness of each character's mouth box in ``frame (h, w, 3)``."""
    h, w = frame.shape[:2]
    return [
        float(frame[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())
        for x0, y0, x1, y1 in mouth_boxes(n)
    ]


class ScenePatternEngine(PatternEngine):
    """The pattern engine, plus ``open_scene`` (a flat portrait has no faces)."""

    name = "scene-pattern"

    def open_scene(
        self,
        portrait: np.ndarray | None,
        prompt: str | None,
        options: Mapping[str, Any],
        scene: SceneRequest,
    ) -> tuple[EngineState, tuple[Character, ...]]:
        if portrait is not None and float(np.std(portrait)) < 1.0:
            raise NoFaceError("no face found in the portrait (it is a flat image)")
        n = scene.size
        st = SceneState(characters=n)
        with self._lock:
            self.opened.append(st)
        chars = tuple(Character(((i + 0.1) / n, 0.2, (i + 0.9) / n, 0.9), b)
                      for i, b in enumerate(mouth_boxes(n)))  # fmt: skip
        return st, chars

    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        if not any(isinstance(st, SceneState) for st, _ in batch):
            return super().generate(batch)
        self.batches.append(len(batch))
        out = []
        for state, chunk in batch:
            if not isinstance(state, SceneState):
                out.extend(super().generate([(state, chunk)]))
                continue
            assert not state.closed
            assert len(chunk.voices) == state.characters, "a scene chunk carries every voice"
            state.chunks.append(chunk.index)
            out.append(self._render_scene(chunk, state.characters))
        return out

    def _render_scene(self, chunk: AudioChunk, n: int) -> VideoChunk:
        s = self.spec
        frames = np.full((chunk.num_frames, s.height, s.width, 3), 128, np.uint8)
        for i in range(chunk.num_frames):
            f = chunk.first_frame + i
            a = s.frame_start(f) - chunk.start + chunk.context
            b = s.frame_start(f + 1) - chunk.start + chunk.context
            for voice, box in zip(chunk.voices, mouth_boxes(n), strict=True):
                seg = voice.window[a:b]
                rms = float(np.sqrt(np.mean(seg * seg))) if seg.size else 0.0
                level = int(min(255, IDLE + rms * 2000)) if voice.voiced else IDLE
                x0, y0, x1, y1 = box
                frames[i, int(y0 * s.height) : int(y1 * s.height),
                       int(x0 * s.width) : int(x1 * s.width)] = level  # fmt: skip
            frames[i, : s.height // 8] = encode_index(f, s.width, s.height // 8)
        return VideoChunk(
            frames=frames,
            first_frame=chunk.first_frame,
            start=chunk.start,
            audio=chunk.samples.copy(),
            voiced=chunk.voiced,
            epoch=chunk.epoch,
        )
