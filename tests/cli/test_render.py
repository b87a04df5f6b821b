"""``run_avatar.py render``: any common audio file in, an mp4 with the audio muxed out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def tone_file(path: Path, rate: int, seconds: float) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = (0.3 * np.sin(2 * np.pi * 200 * t) * (t < seconds / 2)).astype(np.float32)
    with av.open(str(path), "w") as c:
        codec = {".mp3": "libmp3lame", ".ogg": "libvorbis", ".wav": "pcm_s16le"}[path.suffix]
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        fmt = "s16" if codec == "pcm_s16le" else s.codec_context.format.name
        frame = av.AudioFrame.from_ndarray(
            (x * 32767).astype(np.int16).reshape(1, -1) if fmt == "s16" else x.reshape(1, -1),
            format=fmt if fmt in ("s16", "fltp", "flt") else "fltp",
            layout="mono",
        )
        frame.sample_rate = rate
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.mark.parametrize(("suffix", "rate"), [(".wav", 44100), (".mp3", 22050)])
def test_render_makes_an_mp4_with_audio(tmp_path, suffix, rate):
    if suffix == ".mp3" and "libmp3lame" not in av.codecs_available:
        pytest.skip("this PyAV has no mp3 encoder to make the input")
    audio = tone_file(tmp_path / f"in{suffix}", rate, 2.0)
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_avatar.py"),
            "render",
            "--audio",
            str(audio),
            "--out",
            str(out),
            "--size",
            "256",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "frame" in proc.stderr  # the progress bar
    with av.open(str(out)) as c:
        video = c.streams.video[0]
        audio_stream = c.streams.audio[0]
        assert (video.width, video.height) == (256, 256)
        frames = sum(1 for _ in c.decode(video=0))
    assert abs(frames - 50) <= 1  # 2 s at 25 fps
    assert audio_stream.rate == 16000  # the engine's rate: nothing above it was heard
    with av.open(str(out)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    # The tone is in the first half and silence in the second, in the muxed audio too.
    half = pcm.shape[0] // 2
    assert np.abs(pcm[: half - 4800]).mean() > 10 * np.abs(pcm[half + 4800 :]).mean()


def test_render_reports_bad_audio_clearly(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_avatar.py"),
            "render",
            "--audio",
            str(bad),
            "--out",
            str(tmp_path / "o.mp4"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_refuses_bad_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_avatar.py"), "serve", "--size", "63"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "width must be an even number" in proc.stderr


def _render_cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    audio = tone_file(tmp_path / "in.wav", 22050, 2.0)
    return subprocess.run(
        [sys.executable, str(ROOT / "run_avatar.py"), "render", "--audio", str(audio),
         "--out", str(tmp_path / "out.mp4"), "--size", "256", *extra],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(float)


def test_still_render_keeps_the_head_in_place(tmp_path):
    """``--still``: no head sway, so the top rows (hair, forehead; no mouth or eye there) hardly
    change over the file, while the default render's head moves them."""
    tops = {}
    for name, extra in (("still", ("--still", "--seed", "3")), ("moving", ("--seed", "3"))):
        d = tmp_path / name
        d.mkdir()
        proc = _render_cli(d, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        frames = _decoded(d / "out.mp4")
        top = frames[:, 0:60]
        tops[name] = float(np.abs(top - top[:1]).mean(axis=(1, 2, 3)).max())
    # Only coding noise (about 1.5 levels at CRF 20) is left in the still render; the sway moves
    # the hair by pixels (5 to 9 levels).
    assert tops["still"] < 2.5
    assert tops["moving"] > 2.0 * tops["still"]


def test_still_is_refused_for_the_diffusion_engine(tmp_path):
    proc = _render_cli(tmp_path, "--still", "--engine", "diffusion", "--checkpoint", str(tmp_path))
    assert proc.returncode == 2
    assert "--still is an option of the CPU (warp) engine" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_output_path_is_refused_before_any_work(tmp_path):
    audio = tone_file(tmp_path / "in.wav", 22050, 1.0)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_avatar.py"), "render", "--audio", str(audio),
         "--out", str(tmp_path / "missing" / "out.mp4")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "the folder" in proc.stderr
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "render:" not in proc.stderr  # no progress bar: nothing was rendered
