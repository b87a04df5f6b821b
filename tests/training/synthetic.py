"""A synthetic talking-head world for the training tests (test fixtures, never product code).

Videos: a real face photo (scikit-image's astronaut, so the CPU engine's face landmarks find it)
whose mouth is a dark ellipse that opens with the loudness of a speech-like signal (glottal pulses
through vowel formants, in syllables and pauses), written as real mp4/mkv files with audio at
30 fps and 44.1 kHz, so preparation has to resample both. Bad videos: no face, no speech, too short.

Measuring: :func:`mouth_darkness` reads how open the mouth is in a rendered frame, and
:func:`frame_energy` the audio loudness per video frame; their correlation is what the tests assert.
"""

from __future__ import annotations

import fractions
import functools
from pathlib import Path

import av
import cv2
import numpy as np

SOURCE_FPS = 30
SOURCE_RATE = 44100
SOURCE_SIZE = 384
#: The mouth ellipse's half-width and its height range (pixels at SOURCE_SIZE).
MOUTH_HALF_WIDTH = 25
MOUTH_MAX_HEIGHT = 20.0


@functools.cache
def face_image() -> tuple[np.ndarray, tuple[float, float]]:
    """The face photo at SOURCE_SIZE and its mouth centre (x, y), from the real landmarks."""
    from liveface.engines.warp import landmarks as L
    from liveface.engines.warp.face import default_portrait, detect_landmarks

    img = cv2.resize(default_portrait(), (SOURCE_SIZE, SOURCE_SIZE), interpolation=cv2.INTER_AREA)
    lm = detect_landmarks(img, 32, 1280)
    lips = lm[list(L.LIPS_OUTER_UPPER + L.LIPS_OUTER_LOWER)]
    cx, cy = lips.mean(axis=0)
    return img, (float(cx), float(cy))


def speech_signal(
    seconds: float, seed: int, rate: int = SOURCE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """A voiced, speech-like signal and its amplitude envelope (both ``(samples,)``, the
    envelope in [0, 1]): syllables of 120-350 ms with gaps, sometimes a longer pause."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    env = np.zeros(n)
    t = int(rng.uniform(0.05, 0.25) * rate)
    while t < n:
        length = int(rng.uniform(0.12, 0.35) * rate)
        peak = rng.uniform(0.45, 1.0)
        shape = np.sin(np.linspace(0, np.pi, length)) ** 0.6 * peak
        env[t : t + length] = shape[: max(0, min(length, n - t))]
        gap = rng.uniform(0.05, 0.2) if rng.random() > 0.2 else rng.uniform(0.35, 0.6)
        t += length + int(gap * rate)
    f0 = rng.uniform(105, 170) * (1 + 0.03 * np.sin(2 * np.pi * 5 * np.arange(n) / rate))
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    from scipy.signal import lfilter

    voice = pulses
    formants = ((rng.uniform(500, 800), 90), (rng.uniform(1000, 1600), 120), (2500, 200))
    for formant, bandwidth in formants:  # a cascade of vowel resonances
        r = np.exp(-np.pi * bandwidth / rate)
        voice = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * formant / rate), r * r], voice)
    voice = voice / (np.abs(voice).max() + 1e-9)
    x = 0.5 * voice * env + 0.002 * rng.normal(size=n)
    return x.astype(np.float32), env


def _mouth(frame: np.ndarray, center: tuple[float, float], opening: float, scale: float) -> None:
    h = max(0.6, MOUTH_MAX_HEIGHT * opening) * scale
    axes = (round(MOUTH_HALF_WIDTH * scale), round(h))
    c = (round(center[0] * scale), round(center[1] * scale))
    cv2.ellipse(frame, c, axes, 0, 0, 360, (40, 10, 12), -1, lineType=cv2.LINE_AA)


def render_frames(
    envelope: np.ndarray, rate: int, *, fps: int = SOURCE_FPS, face: bool = True, seed: int = 0
) -> np.ndarray:
    """uint8 ``(frames, SOURCE_SIZE, SOURCE_SIZE, 3)``: the mouth opens with the envelope."""
    img, center = face_image()
    if not face:  # the same mouth on a blurred, faceless background
        rng = np.random.default_rng(seed)
        img = cv2.GaussianBlur(rng.integers(60, 200, img.shape, dtype=np.uint8), (0, 0), 12)
    frames = []
    count = int(envelope.shape[0] / rate * fps)
    for i in range(count):
        a, b = int(i * rate / fps), int((i + 1) * rate / fps)
        frame = img.copy()
        _mouth(frame, center, float(envelope[a:b].mean()), 1.0)
        frames.append(frame)
    return np.stack(frames)


def write_video(
    path: Path,
    frames: np.ndarray,
    audio: np.ndarray | None,
    *,
    fps: int = SOURCE_FPS,
    rate: int = SOURCE_RATE,
) -> Path:
    """Write frames (and mono audio) with PyAV: H.264 + AAC in mp4, VP9 + Opus in webm/mkv."""
    webm = path.suffix in (".webm", ".mkv")
    with av.open(str(path), mode="w") as c:
        vs = c.add_stream("libvpx-vp9" if webm else "libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if not webm:
            vs.options = {"crf": "12", "preset": "veryfast"}
        a_rate = 48000 if webm else rate
        astream = None
        if audio is not None:
            astream = c.add_stream("libopus" if webm else "aac", rate=a_rate)
            astream.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        if astream is not None and audio is not None:
            x = audio if a_rate == rate else _resample(audio, rate, a_rate)
            step = 1024
            for i in range(0, x.shape[0], step):
                af = av.AudioFrame.from_ndarray(
                    x[None, i : i + step].astype(np.float32), format="flt", layout="mono"
                )
                af.sample_rate, af.pts = a_rate, i
                af.time_base = fractions.Fraction(1, a_rate)
                c.mux(astream.encode(af))
            c.mux(astream.encode(None))
    return path


def _resample(x: np.ndarray, a: int, b: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = np.gcd(a, b)
    return resample_poly(x, b // g, a // g).astype(np.float32)


def talking_video(
    path: Path, seconds: float, seed: int, *, face: bool = True, speech: bool = True
) -> Path:
    """One synthetic talking video (see the module docstring)."""
    x, env = speech_signal(seconds, seed)
    if not speech:
        x, env = (
            (0.001 * np.random.default_rng(seed).normal(size=x.shape)).astype(np.float32),
            env * 0,
        )
    return write_video(path, render_frames(env, SOURCE_RATE, face=face, seed=seed), x)


def frame_energy(wave: np.ndarray, frames: int, rate: int = 16000, fps: int = 25) -> np.ndarray:
    """RMS loudness of each video frame's audio, ``(frames,)``."""
    out = np.zeros(frames)
    for n in range(frames):
        seg = wave[n * rate // fps : (n + 1) * rate // fps]
        out[n] = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if seg.size else 0.0
    return out
