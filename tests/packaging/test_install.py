"""``pip install`` of an sdist-built wheel into a fresh venv, outside the repository, then run it.

The chain is the one a user gets: the sdist (built from a copy of the tracked files, as a fresh
clone has them), a wheel built from that sdist, then an install that must resolve every runtime
dependency from the wheel's own metadata. To stay fast and offline the dependencies come from a
wheelhouse repacked from this environment (``wheelhouse.py``), with ``--no-index``: a dependency
that is not declared is not installed, so importing it fails the run below. torch and mediapipe
are not in the fresh venv (the CPU engine needs neither).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tests.packaging.quiet import assert_quiet
from tests.packaging.wheelhouse import wheelhouse

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tracked_copy(dst: Path) -> Path:
    """The files a fresh clone has (``git ls-files``), or the tree minus build output."""
    try:
        files = (
            subprocess.run(
                ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
        skip = (".git/", ".venv/", "node_modules/", "build/", "dist/", ".mypy_cache/")
        files = [f for f in files if not f.startswith(skip) and ".egg-info" not in f]
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    return dst


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _speech_like_wav(path: Path, seconds: float = 1.5, rate: int = 16000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with liveface installed from its sdist-built wheel; returns its bin dir."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("install")
    src = _tracked_copy(tmp / "src")
    dist = tmp / "dist"
    # sdist through the PEP 517 hook (needs the build backend here: pip builds it in isolation
    # for users; the tests reuse this environment's setuptools to stay offline)
    code = "from setuptools import build_meta as b; import sys; print(b.build_sdist(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    if proc.returncode != 0 and "license" in proc.stderr.lower():
        pytest.skip("this environment's setuptools is too old for the project's metadata")
    assert proc.returncode == 0, proc.stderr
    sdist = dist / proc.stdout.strip().splitlines()[-1]
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(sdist), cwd=tmp)
    (wheel,) = dist.glob("liveface-*.whl")
    reqs = [r for r in metadata.requires("liveface") or [] if "extra ==" not in r]
    wheelhouse(reqs, tmp / "wheelhouse")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    _pip("--python", str(py), "install", "--no-index", "--find-links", str(tmp / "wheelhouse"),
         str(wheel), cwd=tmp)  # fmt: skip
    return venv / "bin"


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_clean_env()
    )


def test_version_from_the_console_command_and_module(installed, tmp_path):
    version = metadata.version("liveface")
    for cmd in ([str(installed / "liveface")], [str(installed / "python"), "-m", "liveface"]):
        out = _run([*cmd, "--version"], tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"liveface {version}"


def test_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    code = (
        "import importlib.util as u, liveface, pathlib, sys\n"
        "print(liveface.__file__)\n"
        "print(u.find_spec('torch') is None, u.find_spec('mediapipe') is None)\n"
        "from liveface.engines.warp import facemesh\n"
        "print(sorted(p.name for p in facemesh.MODELS.glob('*.tflite')))\n"
    )
    out = _run([str(installed / "python"), "-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    where, missing, models = out.stdout.splitlines()
    assert Path(where).is_relative_to(installed.parent), where
    assert not Path(where).is_relative_to(ROOT)
    assert missing == "True True"  # neither torch nor mediapipe is needed
    assert "face_landmark_with_attention.tflite" in models


def test_render_from_the_installed_command(installed, tmp_path):
    import av

    audio = _speech_like_wav(tmp_path / "in.wav")
    out = tmp_path / "out.mp4"
    proc = _run(
        [str(installed / "liveface"), "render", "--audio", str(audio), "--out", str(out)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert_quiet(proc.stderr)
    with av.open(str(out)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == round(1.5 * 25)
