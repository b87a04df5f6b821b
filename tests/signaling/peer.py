"""A real aiortc client for the loopback tests: a paced microphone track and a frame collector."""

from __future__ import annotations

import asyncio
import fractions
import time

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

MIC_RATE = 48000
PTIME = 0.02


class SignalTrack(MediaStreamTrack):
    """Plays ``signal`` (mono float at 48 kHz) in real time, then silence, as 20 ms frames."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self.signal = signal
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        block = int(MIC_RATE * PTIME)
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._n * PTIME - time.monotonic()))
        a = self._n * block
        x = self.signal[a : a + block]
        x = np.pad(x, (0, block - x.shape[0]))
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = a
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._n += 1
        return frame


class Client:
    """Connects to ``base_url``, sends the track, collects received video and audio frames."""

    def __init__(self, base_url: str, signal: np.ndarray) -> None:
        self.base_url = base_url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback: no STUN
        self.mic = SignalTrack(signal)
        self.video: list[tuple[float, int, np.ndarray]] = []  # (arrival, pts, rgb)
        self.audio: list[tuple[float, int, np.ndarray]] = []
        self._tasks: list[asyncio.Task] = []
        self.answer: dict = {}

    async def connect(self, **extra) -> dict:
        self.pc.addTrack(self.mic)
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track):
            sink = self.video if track.kind == "video" else self.audio
            self._tasks.append(asyncio.ensure_future(self._collect(track, sink)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", **extra}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.base_url}/offer", json=body) as r,
        ):
            self.answer = await r.json()
            if r.status != 200:
                return {"status": r.status, **self.answer}
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=self.answer["sdp"], type=self.answer["type"])
        )
        return {"status": 200, **self.answer}

    async def _collect(self, track, sink) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arr = frame.to_ndarray(format="rgb24") if track.kind == "video" else frame.to_ndarray()
            sink.append((time.monotonic(), frame.pts, arr))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()
