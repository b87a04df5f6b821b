"""The example bot end to end: its page server and pipeline on pipecat's SmallWebRTC transport,
a real aiortc peer on loopback as the browser, espeak-ng as the TTS, a local warp server."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import aiohttp
import numpy as np
import pytest

pytest.importorskip("pipecat", reason="needs the pipecat extra: pip install -e '.[pipecat]'")

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from liveface.integrations.pipecat import LocalServer, LocalServerConfig

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipecat_avatar_bot.py"
SIZE = 128

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pipecat_avatar_bot", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Browser:
    """What the example's page does, with aiortc: audio then video transceivers, a data
    channel with pings, renegotiation on request; received frames are kept with arrival times."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("audio", direction="sendrecv")
        self.pc.addTransceiver("video", direction="sendrecv")
        self.channel = self.pc.createDataChannel("messages")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.pc_id: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_message(self, text: str) -> None:
        message = json.loads(text)
        if message.get("type") == "signalling" and message["message"]["type"] == "renegotiate":
            self._spawn(self.negotiate())

    def _on_track(self, track) -> None:
        self._spawn(self._read(track))

    async def _read(self, track) -> None:
        store = self.video if track.kind == "video" else self.audio
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            data = frame.to_ndarray(format="rgb24") if track.kind == "video" else frame.to_ndarray()
            store.append((time.monotonic(), data))

    async def _ping(self) -> None:
        while True:
            if self.channel.readyState == "open":
                self.channel.send(f"ping: {time.time()}")
            await asyncio.sleep(1)

    async def negotiate(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {
            "sdp": self.pc.localDescription.sdp,
            "type": self.pc.localDescription.type,
            "pc_id": self.pc_id,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/api/offer", json=offer) as reply,
        ):
            answer = await reply.json()
        self.pc_id = answer["pc_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    async def connect(self) -> None:
        await self.negotiate()
        self._spawn(self._ping())

    def send(self, message: dict) -> None:
        self.channel.send(json.dumps(message))

    def loud_since(self, t: float) -> bool:
        return any(np.abs(x).max() > 1000 for at, x in self.audio if at > t)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()


def motion(frames: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames around the mouth (the warp engine
    centres the face: the mouth lies in the lower middle of the frame)."""
    h, w = frames[0].shape[:2]
    x = np.stack(frames)[:, int(0.55 * h) : int(0.75 * h), int(0.3 * w) : int(0.7 * w)]
    return float(np.abs(np.diff(x.astype(np.int16), axis=0)).mean())


async def until(predicate, limit_s: float) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_example_bot_greets_speaks_and_stops_on_interrupt_over_webrtc():
    example = load_example()
    args = argparse.Namespace(size=SIZE, voice="en-us", wav=None, portrait=None)
    async with LocalServer(LocalServerConfig(size=(SIZE, SIZE))) as server:
        assert server.address is not None
        runner = web.AppRunner(example.build_app(args, server.address))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        browser = Browser(f"http://127.0.0.1:{port}")
        try:
            await browser.connect()
            # The avatar's video arrives, at the server's size, and the greeting is heard.
            await until(lambda: len(browser.video) >= 25 and browser.loud_since(0), 60)
            assert browser.video[-1][1].shape == (SIZE, SIZE, 3)
            await until(lambda: browser.channel.readyState == "open", 10)
            await asyncio.sleep(0.5)
            browser.send({"type": "interrupt"})  # cut the greeting off
            stopped = time.monotonic()
            await asyncio.sleep(1.0)
            assert not browser.loud_since(stopped + 0.5)
            # A typed line is spoken by the avatar, and the mouth moves while it is.
            said = time.monotonic()
            browser.send({"type": "say", "text": "The quick brown fox jumps over the lazy dog."})
            await until(lambda: browser.loud_since(said), 20)
            await until(lambda: sum(at > said for at, _ in browser.video) >= 75, 20)
            # The mouth moves while the line is spoken: frames change more than when idle.
            idle = motion([f for at, f in browser.video if stopped + 0.5 < at < said])
            talking = motion([f for at, f in browser.video if at > said])
            print(f"frame-to-frame change: idle {idle:.2f}, talking {talking:.2f}")
            assert talking > 3 * idle
        finally:
            await browser.close()
            await runner.cleanup()


async def test_example_tts_reads_a_wav_file_or_runs_espeak(tmp_path):
    example = load_example()
    wav = tmp_path / "line.wav"
    proc = await asyncio.create_subprocess_exec("espeak-ng", "-w", str(wav), "Hello there.")
    assert await proc.wait() == 0
    pcm, rate = example._read_wav(str(wav))
    assert rate == 22050
    assert len(pcm) > rate  # more than half a second of 16-bit audio
    for tts, expected in (
        (example.LocalTTSService(wav=str(wav)), pcm),
        (example.LocalTTSService(), None),
    ):
        frames = [f async for f in tts.run_tts("Hello there.", "ctx")]
        audio = b"".join(f.audio for f in frames)
        assert all(f.sample_rate == 22050 and f.context_id == "ctx" for f in frames)
        assert max(f.num_frames for f in frames) == int(22050 * example.CHUNK_S)
        if expected is not None:
            assert audio == expected  # the file, whatever the text
        else:
            assert abs(len(audio) - len(pcm)) < 0.1 * len(pcm)  # espeak says the same line
