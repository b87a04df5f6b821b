"""Test engines implementing the real engine contract (CONVENTIONS #3). Not for the product.

``PatternEngine`` draws frames whose pixels encode what the tests need to check from the outside:
- the frame index in the top rows (16 bits as black/white blocks), so a receiver can tell which
  media-clock frame it got;
- a "mouth" box whose brightness follows the chunk's audio RMS, so lip movement is measurable.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liveface.engines.base import AudioChunk, Engine, EngineSpec, EngineState, VideoChunk
from liveface.errors import NoFaceError

BITS = 16
#: Mouth box as fractions of the frame: x0, y0, x1, y1.
MOUTH_BOX = (0.35, 0.6, 0.65, 0.8)


@dataclass
class PatternState(EngineState):
    interrupted: int = 0
    chunks: list[int] = field(default_factory=list)
    closed: bool = False


class PatternEngine(Engine):
    """Deterministic, fast, and honest about time: see the module docstring.

    Args:
        delay_s: sleep per ``generate`` call (simulates a slow engine).
        first_delay_s: extra sleep in the first ``generate`` call (a late first frame).
        stall_every, stall_s: every ``stall_every``-th call sleeps ``stall_s`` more (a stall).
        fail_on: a prompt whose sessions make ``generate`` raise (fault isolation tests).
    """

    name = "pattern"

    def __init__(
        self,
        fps: int = 25,
        size: int = 128,
        chunk_frames: int = 2,
        first_chunk_frames: int = 1,
        lookahead: int = 0,
        left_context: int = 320,
        max_batch: int = 4,
        delay_s: float = 0.0,
        fail_on: str | None = None,
        first_delay_s: float = 0.0,
        stall_every: int = 0,
        stall_s: float = 0.0,
    ) -> None:
        self._spec = EngineSpec(
            fps=fps,
            width=size,
            height=size,
            chunk_frames=chunk_frames,
            first_chunk_frames=first_chunk_frames,
            left_context=left_context,
            lookahead=lookahead,
            max_batch=max_batch,
        )
        self.delay_s = delay_s
        self.first_delay_s = first_delay_s
        self.stall_every = stall_every
        self.stall_s = stall_s
        self.fail_on = fail_on
        self.opened: list[PatternState] = []
        self.batches: list[int] = []
        self.generate_threads: set[str] = set()
        self._lock = threading.Lock()
        self._fail_states: set[int] = set()

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> PatternState:
        if portrait is not None and float(np.std(portrait)) < 1.0:
            raise NoFaceError("no face found in the portrait (it is a flat image)")
        st = PatternState()
        with self._lock:
            self.opened.append(st)
            if prompt is not None and prompt == self.fail_on:
                self._fail_states.add(id(st))
        return st

    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        self.generate_threads.add(threading.current_thread().name)
        self.batches.append(len(batch))
        calls = len(self.batches)
        pause = self.delay_s + (self.first_delay_s if calls == 1 else 0.0)
        if self.stall_every and calls % self.stall_every == 0:
            pause += self.stall_s
        if pause:
            time.sleep(pause)
        out = []
        for state, chunk in batch:
            assert isinstance(state, PatternState)
            assert not state.closed
            if id(state) in self._fail_states:
                raise RuntimeError("pattern engine told to fail")
            state.chunks.append(chunk.index)
            out.append(self.render(chunk))
        return out

    def render(self, chunk: AudioChunk) -> VideoChunk:
        s = self._spec
        frames = np.full((chunk.num_frames, s.height, s.width, 3), 128, np.uint8)
        x0, y0, x1, y1 = (int(v * s.width) for v in MOUTH_BOX)
        for i in range(chunk.num_frames):
            n = chunk.first_frame + i
            a, b = s.frame_start(n) - chunk.start, s.frame_start(n + 1) - chunk.start
            seg = chunk.samples[a:b]
            rms = float(np.sqrt(np.mean(seg * seg))) if seg.size else 0.0
            level = int(min(255, 40 + rms * 2000)) if chunk.voiced else 40
            frames[i, y0:y1, x0:x1] = level
            frames[i, : s.height // 8] = encode_index(n, s.width, s.height // 8)
        return VideoChunk(
            frames=frames,
            first_frame=chunk.first_frame,
            start=chunk.start,
            audio=chunk.samples.copy(),
            voiced=chunk.voiced,
            epoch=chunk.epoch,
        )

    def describe(self, state: EngineState) -> dict[str, Any]:
        return {"mouth_box": list(MOUTH_BOX), "pid": os.getpid()}

    def interrupt(self, state: EngineState) -> None:
        assert isinstance(state, PatternState)
        state.interrupted += 1

    def close(self, state: EngineState) -> None:
        assert isinstance(state, PatternState)
        state.closed = True


def encode_index(n: int, width: int, rows: int) -> np.ndarray:
    """``(rows, width, 3)`` uint8 stripe: bit k of ``n`` as a black/white block."""
    stripe = np.zeros((rows, width, 3), np.uint8)
    block = width // BITS
    for k in range(BITS):
        if (n >> k) & 1:
            stripe[:, k * block : (k + 1) * block] = 255
    return stripe


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`encode_index`, robust to codec noise: ``frame (h, w, 3)``."""
    h, w = frame.shape[:2]
    rows = h // 8
    block = w // BITS
    n = 0
    for k in range(BITS):
        cell = frame[
            rows // 4 : rows * 3 // 4, k * block + block // 4 : (k + 1) * block - block // 4
        ]
        if cell.mean() > 128:
            n |= 1 << k
    return n


def mouth_level(frame: np.ndarray) -> float:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (
        int(MOUTH_BOX[0] * w),
        int(MOUTH_BOX[1] * h),
        int(MOUTH_BOX[2] * w),
        int(MOUTH_BOX[3] * h),
    )
    return float(frame[y0:y1, x0:x1].mean())
