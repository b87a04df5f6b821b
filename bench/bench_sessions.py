"""How many WebRTC sessions one server holds at real time (25 fps, < 1% repeated frames).

A real ``liveface serve`` runs in its own process (optionally pinned to some CPUs with
``--server-cpus``); this process opens N real aiortc peers against it, each sending a speech-like
microphone signal, and counts the video frames that arrive. The receivers do not decode video
(a counting decoder replaces VP8 in this process only), so that the clients, which share this
machine, cost as little as possible; everything the server does is real.

For each N: frames received per session per second (median over sessions), the server's repeated
frames (``liveface_frames_repeated_total`` over frames shown) and audio underrun, from its
``/metrics``. The answer is the largest N with every session at >= 24 fps and < 1% repeats.

    python bench/bench_sessions.py --sessions 1 2 3 4 6 --seconds 20
    python bench/bench_sessions.py --server-cpus 0 --client-cpus 1      # server on one core
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

ROOT = Path(__file__).resolve().parents[1]
MIC_RATE = 48000
PTIME = 0.02


class CountingDecoder:
    """Stands in for VP8 in the benchmark's receivers: counts whole frames, decodes nothing."""

    def __init__(self) -> None:
        self.frames = 0

    def decode(self, encoded_frame: object) -> list[object]:
        self.frames += 1
        return []


DECODERS: list[CountingDecoder] = []


def install_counting_decoder() -> None:
    import aiortc.rtcrtpreceiver as receiver

    real = receiver.get_decoder

    def get_decoder(codec):  # type: ignore[no-untyped-def]
        if codec.mimeType.lower().startswith("video/"):
            d = CountingDecoder()
            DECODERS.append(d)
            return d
        return real(codec)

    receiver.get_decoder = get_decoder


class Mic(MediaStreamTrack):
    """A speech-like signal (voiced bursts and pauses) at real time, 20 ms frames."""

    kind = "audio"

    def __init__(self, seed: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        t = np.arange(int(4 * MIC_RATE)) / MIC_RATE
        f0 = 120 + 40 * rng.random()
        buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10))
        envelope = (np.sin(2 * np.pi * 0.5 * t) > -0.3) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
        self.signal = (0.1 * buzz * envelope).astype(np.float32)
        self.n = 0
        self.start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        block = int(MIC_RATE * PTIME)
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.n * PTIME - time.monotonic()))
        a = (self.n * block) % (self.signal.shape[0] - block)
        pcm = (self.signal[a : a + block] * 32767).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self.n * block
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self.n += 1
        return frame


async def open_peer(url: str, seed: int) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Mic(seed))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": "offer"}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json=body) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"offer refused: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return pc


async def metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        text = await r.text()
    out = {}
    for m in re.finditer(r"^(liveface_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", text, re.M):
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


async def measure(url: str, n: int, seconds: float, warmup: float) -> dict[str, float]:
    DECODERS.clear()
    peers = [await open_peer(url, seed) for seed in range(n)]
    try:
        deadline = time.monotonic() + 20
        while len(DECODERS) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        before = await metrics(url)
        counts0 = [d.frames for d in DECODERS]
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        counts1 = [d.frames for d in DECODERS]
        after = await metrics(url)
    finally:
        for pc in peers:
            await pc.close()
    fps = [(b - a) / elapsed for a, b in zip(counts0, counts1, strict=True)]

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    shown = delta("liveface_frames_out_total") + delta("liveface_frames_repeated_total")
    audio = seconds * 16000 * n
    return {
        "sessions": n,
        "fps_median": statistics.median(fps) if fps else 0.0,
        "fps_min": min(fps) if fps else 0.0,
        "repeated_pct": 100.0 * delta("liveface_frames_repeated_total") / max(shown, 1.0),
        "underrun_pct": 100.0 * delta("liveface_audio_underrun_samples_total") / audio,
        "input_dropped_pct": 100.0 * delta("liveface_input_dropped_samples_total") / audio,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(args: argparse.Namespace, port: int):  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "liveface", "serve", "--port", str(port), "--max-sessions", "64",
           "--size", str(args.size), "--log-level", "WARNING", *args.server_args]  # fmt: skip
    if args.server_cpus:
        cmd = ["taskset", "-c", args.server_cpus, *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(args.server_log, "w") if getattr(args, "server_log", None) else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=log)
    try:
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.kill()


async def wait_healthy(url: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("the server did not come up")


async def main_async(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(args, port):
        await wait_healthy(url)
        print(f"server: liveface serve --size {args.size} {' '.join(args.server_args)} "
              f"(cpus {args.server_cpus or 'all'}); clients: cpus {args.client_cpus or 'all'}, "
              f"{args.seconds:.0f} s per point", flush=True)  # fmt: skip
        best = 0
        for n in args.sessions:
            r = await measure(url, n, args.seconds, args.warmup)
            ok = r["fps_min"] >= 24.0 and r["repeated_pct"] < 1.0
            best = n if ok else best
            print(f"  {n:2d} sessions: fps median {r['fps_median']:5.1f} min {r['fps_min']:5.1f}, "
                  f"repeated {r['repeated_pct']:5.1f}%, audio underrun {r['underrun_pct']:5.1f}%, "
                  f"input dropped {r['input_dropped_pct']:4.1f}%  {'ok' if ok else 'FAIL'}",
                  flush=True)  # fmt: skip
            await asyncio.sleep(2.0)  # let the server free the sessions
    print(f"sessions held at real time: {best}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--server-cpus", default="", help="taskset CPU list for the server, e.g. 0")
    ap.add_argument("--client-cpus", default="", help="taskset CPU list for this process")
    ap.add_argument("server_args", nargs="*", help="extra arguments for liveface serve (after --)")
    args = ap.parse_args()
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    install_counting_decoder()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
