"""A normal ``render`` and a normal ``serve`` start/stop print no traceback or warning on stderr.

Only our own log records and the progress bar may appear; what native libraries print (LiteRT's
XNNPACK line) is routed to DEBUG logging, where ``--log-level DEBUG`` shows it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

from tests.packaging.quiet import assert_quiet, stray_lines

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # this checkout's liveface, run from another directory
    return env


def _wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype(np.int16).tobytes())
    return path


def _render(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    audio = _wav(tmp_path / "in.wav")
    cmd = [sys.executable, "-m", "liveface", "render", "--audio", str(audio)]
    return subprocess.run(
        [*cmd, "--out", str(tmp_path / "out.mp4"), *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )


def test_render_stderr_is_quiet(tmp_path):
    proc = _render(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_quiet(proc.stderr)
    assert "wrote" in proc.stdout


def test_native_output_goes_to_debug_logging(tmp_path):
    proc = _render(tmp_path, "--log-level", "DEBUG")
    assert proc.returncode == 0, proc.stderr
    assert_quiet(proc.stderr, levels=("DEBUG", "INFO"))
    assert "XNNPACK" in proc.stderr  # LiteRT's line, now a DEBUG record
    assert stray_lines(proc.stderr) != []  # and INFO alone would not allow it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_start_and_stop_stderr_is_quiet(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "liveface", "serve", "--port", str(port)]
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=f, env=_env())
    try:
        deadline = time.monotonic() + 120
        while "serving http://" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_quiet(err.read_text())
