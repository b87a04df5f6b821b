"""Fixtures of the warp engine tests: the engine, espeak-ng speech, a chunked renderer, metrics,
and lip measurements of rendered frames by MediaPipe's face mesh."""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from liveface.engines.base import AudioChunk, VideoChunk
from liveface.engines.warp import WarpConfig, WarpEngine, WarpState
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker

SR = 16000
SENTENCE = (
    "Hello there. I am a talking portrait, and my mouth moves when I speak. "
    "Nice to meet you, and thank you for listening."
)
#: Silence appended after the speech (seconds).
TAIL_S = 3.0
#: Energy threshold of the tests' voice-activity oracle (RMS, full scale 1).
VAD_RMS = 0.005

RenderFn = Callable[..., tuple[np.ndarray, list[AudioChunk], list[VideoChunk]]]


@pytest.fixture(scope="session")
def engine() -> WarpEngine:
    return WarpEngine(WarpConfig())


@pytest.fixture(scope="session")
def still_state(engine: WarpEngine) -> WarpState:
    """The default portrait with head motion off (shared read-mostly: tests interrupt first)."""
    return engine.open(None, None, {"head_motion": False})


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        rate, width, n = w.getframerate(), w.getsampwidth(), w.getnframes()
        raw = w.readframes(n)
    assert width == 2, "espeak-ng writes 16-bit PCM"
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0, rate


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """espeak-ng speech at 16 kHz followed by silence: ``(audio (n,), speech_samples)``."""
    x = espeak(SENTENCE, tmp_path_factory.mktemp("speech"))
    lead = np.zeros(SR // 4, np.float32)
    tail = np.zeros(int(TAIL_S * SR), np.float32)
    return np.concatenate([lead, x, tail]), lead.size + x.size


def espeak(text: str, tmp: Path, word_gap_ms: int = 0) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz, float32 ``(n,)``; skips the test without it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp / "espeak.wav"
    cmd = [exe, "-w", str(path)] + (["-g", str(word_gap_ms // 10)] if word_gap_ms else [])
    subprocess.run([*cmd, text], check=True, capture_output=True, timeout=60)
    x, rate = _read_wav(path)
    g = np.gcd(SR, rate)
    return resample_poly(x, SR // g, rate // g).astype(np.float32)


@pytest.fixture(scope="session")
def say(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    """``say(text, word_gap_ms=0)``: :func:`espeak` into a fresh temporary folder."""

    def run(text: str, word_gap_ms: int = 0) -> np.ndarray:
        return espeak(text, tmp_path_factory.mktemp("say"), word_gap_ms)

    return run


def energy_vad(audio: np.ndarray) -> Callable[[int, int], bool]:
    """A causal voice oracle for :class:`Chunker`: RMS of ``[start, end)`` over a threshold."""

    def voiced(start: int, end: int) -> bool:
        seg = audio[max(0, start) : end]
        return bool(seg.size) and float(np.sqrt(np.mean(np.square(seg)))) > VAD_RMS

    return voiced


@pytest.fixture(scope="session")
def render() -> RenderFn:
    """``render(engine, state, audio, batch=1, keep=None)`` -> ``(frames, chunks, videos)``.

    ``frames`` is ``(n, H, W, 3)``, or whatever ``keep`` makes of each chunk's frames (a crop, to
    keep long runs small); ``videos`` then hold no frames.
    """

    def run(
        engine: WarpEngine,
        state: WarpState,
        audio: np.ndarray,
        batch: int = 1,
        keep: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        ring = AudioRing(audio.size + 1)
        ring.append(audio)
        chunks = Chunker(engine.spec, ring, energy_vad(audio)).pop_ready()
        videos: list[VideoChunk] = []
        kept = []
        for i in range(0, len(chunks), batch):
            for v in engine.generate([(state, c) for c in chunks[i : i + batch]]):
                if keep is not None:
                    kept.append(keep(v.frames))
                    v.frames = v.frames[:0]
                else:
                    kept.append(v.frames)
                videos.append(v)
        frames = np.concatenate(kept) if kept else np.zeros((0,))
        return frames, chunks, videos

    return run


class Metrics:
    """Measurements taken from rendered frames (pixels only, never the engine's internals)."""

    @staticmethod
    def luma(frames: np.ndarray) -> np.ndarray:
        """Rec. 601 luma of uint8 RGB ``(..., 3)`` as float32 ``(...)``, one image at a time."""
        w = np.array([0.299, 0.587, 0.114], np.float32)
        if frames.ndim <= 3:
            return frames.astype(np.float32) @ w
        out = np.empty(frames.shape[:-1], np.float32)
        for i in range(frames.shape[0]):
            out[i] = frames[i].astype(np.float32) @ w
        return out

    @staticmethod
    def mouth_opening(
        frames: np.ndarray, rest: np.ndarray, box: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Per-frame darkening of the mouth box against the rest portrait (grey levels), ``(n,)``.

        An open mouth shows a dark cavity where the rest portrait has lips or teeth, so the mean
        of ``max(0, rest - frame)`` over the box grows with the opening; 0 for the rest mouth.
        """
        y0, y1, x0, x1 = box
        diff = Metrics.luma(rest[y0:y1, x0:x1])[None] - Metrics.luma(frames[:, y0:y1, x0:x1])
        return np.clip(diff, 0, None).mean(axis=(1, 2))

    @staticmethod
    def envelope(chunks: list[AudioChunk]) -> np.ndarray:
        """RMS of the audio each frame animates, ``(frames,)`` (one-frame chunks or not)."""
        out = []
        for c in chunks:
            for part in np.array_split(c.samples, c.num_frames):
                out.append(float(np.sqrt(np.mean(np.square(part)))) if part.size else 0.0)
        return np.array(out)


@pytest.fixture(scope="session")
def metrics() -> type[Metrics]:
    return Metrics


class LipMeter:
    """Lip opening of rendered frames, measured by MediaPipe's face mesh on the pixels alone.

    The mesh is the project's LiteRT port of MediaPipe's static-image face mesh
    (:func:`liveface.engines.warp.facemesh.face_mesh`): each frame is measured on its own, from its
    pixels, never from the engine's landmarks. ``measure(frames (n, H, W, 3))`` returns ``(n, 2)``:
    the width between the inner mouth corners and the mean gap between the inner lips at the three
    middle pairs, pixels (NaN without a face).
    """

    MIDDLE_UPPER = (82, 13, 312)
    MIDDLE_LOWER = (87, 14, 317)
    CORNERS = (78, 308)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """``(478, 2)`` pixel landmarks of the face in ``image (H, W, 3)``, or None."""
        from liveface.engines.warp.facemesh import face_mesh

        faces = face_mesh(np.ascontiguousarray(image), max_faces=1)
        if not faces:
            return None
        h, w = image.shape[:2]
        return faces[0].astype(np.float64) * np.array([w, h])

    def measure(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 2), np.nan)
        for i, frame in enumerate(frames):
            p = self.landmarks(frame)
            if p is not None:
                out[i, 0] = np.linalg.norm(p[self.CORNERS[0]] - p[self.CORNERS[1]])
                gap = p[list(self.MIDDLE_LOWER), 1] - p[list(self.MIDDLE_UPPER), 1]
                out[i, 1] = float(np.mean(gap))
        return out


@pytest.fixture(scope="session")
def lips() -> LipMeter:
    return LipMeter()
