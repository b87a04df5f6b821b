"""Headless Chromium against a real server: run the driver, and read what the pages measured.

Shared by the browser test and ``bench/bench_glass_to_glass.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
MIC_THRESHOLD = 0.02
QUIET_S = 0.5


def browser_available() -> bool:
    return (
        Path(CHROMIUM).exists()
        and shutil.which("node") is not None
        and (HERE / "node_modules" / "playwright-core").is_dir()
    )


def make_speech_wav(path: Path, sentences: int = 4, gap_s: float = 1.5) -> Path:
    """espeak-ng sentences separated by silence, 48 kHz mono: the fake microphone's input."""
    parts: list[str] = []
    silence = path.parent / "silence.wav"
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(silence), "trim", "0", str(gap_s)],
        check=True,
    )
    parts.append(str(silence))
    for i in range(sentences):
        raw = path.parent / f"say{i}.wav"
        res = path.parent / f"say{i}_48k.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-w",
                str(raw),
                f"hello there, this is sentence {i + 1} spoken to the avatar",
            ],
            check=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(res)], check=True
        )
        parts += [str(res), str(silence)]
    subprocess.run(["sox", *parts, str(path)], check=True)
    return path


async def drive(url: str, wav: Path, pages: int, seconds: float) -> dict:
    """Run drive.mjs; returns its JSON (see the script's header)."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "drive.mjs"),
        url,
        str(wav),
        str(pages),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(HERE),
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 90)
    if proc.returncode != 0:
        raise RuntimeError(f"browser driver failed ({proc.returncode}): {err.decode()[-3000:]}")
    return json.loads(out)


@dataclass
class PageMeasure:
    """What one page saw. Times in ms on the page's clock."""

    onsets: list[float]  # speech onsets at the microphone
    offsets: list[float]  # speech ends at the microphone
    frames: np.ndarray  # (n, 2): presentation time, mouth brightness
    patches: np.ndarray  # (n, 32): the mouth as an 8x4 grid of grey levels
    sync_ms: np.ndarray  # video minus audio estimated playout, ms
    rest: float  # mouth brightness at rest

    def latencies(self, delta: float) -> list[float]:
        """Per onset: time to the first frame whose mouth differs by ``delta`` grey levels (mean
        absolute difference over an 8x4 grid of the mouth box) from the mouth in the 400 ms
        before the onset (a local baseline: idle head motion drifts slowly)."""
        out = []
        t = self.frames[:, 0]
        for onset in self.onsets:
            before = self.patches[(t >= onset - 400) & (t < onset)]
            if before.shape[0] == 0:
                continue
            base = np.median(before, axis=0)
            change = np.abs(self.patches - base).mean(axis=1)
            moved = np.nonzero((t >= onset) & (change > delta))[0]
            if moved.size and t[moved[0]] - onset < 1500:
                out.append(float(t[moved[0]] - onset))
        return out

    def levels_in(self, windows: list[tuple[float, float]]) -> list[np.ndarray]:
        """Mouth levels of the frames inside each window."""
        t = self.frames[:, 0]
        return [self.frames[(t >= a) & (t < b), 1] for a, b in windows]

    @staticmethod
    def spread(levels: list[np.ndarray]) -> float:
        """Mean over the windows of the mouth level's standard deviation within each window."""
        stds = [float(np.std(x)) for x in levels if x.size > 1]
        return float(np.mean(stds)) if stds else float("nan")

    def speech_windows(self, shift: float) -> list[tuple[float, float]]:
        return [(a + shift, b + shift) for a, b in zip(self.onsets, self.offsets, strict=False)]

    def silence_windows(self, shift: float, margin: float = 300.0) -> list[tuple[float, float]]:
        return [
            (b + shift + margin, a + shift - margin)
            for b, a in zip(self.offsets, self.onsets[1:], strict=False)
            if a - b > 2 * margin
        ]


def analyse(page: dict) -> PageMeasure:
    rec = page["rec"]
    mic = np.array(rec["mic"], dtype=float).reshape(-1, 2)
    onsets, offsets = [], []
    speaking = False
    last_loud = -1e9
    for t, rms in mic:
        if rms > MIC_THRESHOLD:
            if not speaking and t - last_loud > QUIET_S * 1000:
                onsets.append(t)
                speaking = True
            last_loud = t
        elif speaking and t - last_loud > QUIET_S * 1000:
            offsets.append(last_loud)
            speaking = False
    frames = np.array(rec["frames"], dtype=float).reshape(-1, 4)[:, :2]
    # Rest: the mouth in the silence before the first onset (the avatar idles from the start).
    before = frames[frames[:, 0] < (onsets[0] if onsets else np.inf), 1]
    rest = float(np.median(before)) if before.size else float(np.median(frames[:, 1]))
    sync = np.array([v for _, v in rec["sync"]], dtype=float)
    patches = np.array(rec.get("patches", []), dtype=float).reshape(-1, 32)
    return PageMeasure(onsets, offsets, frames, patches, sync, rest)


def played_offset_ms(page: dict, max_lag_ms: float = 250.0, frame_ms: float = 40.0) -> float:
    """How far the video plays ahead of the audio it animates (ms, negative: behind), measured
    from what the page played: the mouth brightness of each frame from its expected display time,
    against the level of the played audio from the time it left the audio output.

    Meant for engines whose mouth brightness follows each frame's own audio level (the pattern
    test engine: brightness = 40 + 2000 RMS); the lag of best correlation between the two
    envelopes is the offset."""
    rec = page["rec"]
    frames = np.array(rec["frames"], dtype=float).reshape(-1, 4)
    played = np.array(rec["played"], dtype=float).reshape(-1, 2)
    if frames.shape[0] < 50 or played.shape[0] < 500:
        raise ValueError("too little was played to measure the offset")
    shown, level = frames[:, 3], frames[:, 1]
    step = 2.0
    grid = np.arange(max(shown[0], played[0, 0]) + max_lag_ms,
                     min(shown[-1], played[-1, 0]) - max_lag_ms, step)  # fmt: skip
    # The video: each frame's level from its display time until the next frame.
    video = level[np.clip(np.searchsorted(shown, grid, side="right") - 1, 0, None)]
    # The audio: mean power over a frame's length, centred, like the frame's own level.
    order = np.argsort(played[:, 0])
    power = np.interp(grid, played[order, 0], played[order, 1] ** 2)
    k = max(1, round(frame_ms / step))
    audio = np.sqrt(np.convolve(power, np.ones(k) / k, mode="same"))
    video = (video - video.mean()) / (video.std() + 1e-9)
    best, best_corr = 0.0, -np.inf
    for lag in np.arange(-max_lag_ms, max_lag_ms + step, step):
        # Video behind by ``lag``: video(t) matches audio(t - lag).
        shifted = np.interp(grid - lag, grid, audio)
        a = (shifted - shifted.mean()) / (shifted.std() + 1e-9)
        corr = float(np.mean(a * video))
        if corr > best_corr:
            best, best_corr = float(lag), corr
    return -best
