#!/usr/bin/env python3
"""A talking-avatar bot on pipecat's own local WebRTC transport, with no cloud service or key.

    pip install -e '.[pipecat]'          # pipecat-ai with its WebRTC transport
    sudo apt-get install espeak-ng       # the "TTS" (or pass --wav FILE instead)
    python examples/pipecat_avatar_bot.py [--portrait me.jpg] [--wav speech.wav]

then open http://127.0.0.1:7860 in a browser and press Connect. The bot greets you; type a line
and press Say to have the avatar speak it; press Interrupt (or just start talking, with the
microphone allowed) to cut it off, as a user barging in on a voice agent would.

The pipeline is the one a voice agent uses, with the cloud parts replaced by local stand-ins:

    transport.input() -> VADProcessor -> Turns -> TTS -> LivefaceVideoService -> transport.output()

- ``SmallWebRTCTransport`` (pipecat's peer-to-peer WebRTC transport) carries the microphone in
  and the avatar's video and audio out; this script serves the page and the SDP offer itself.
- The TTS is a pipecat ``TTSService`` that runs ``espeak-ng`` (or plays a WAV file for every
  line, with ``--wav``). Put a real STT -> LLM -> TTS chain here for a real agent.
- ``Turns`` stands in for the LLM: it answers each thing you say with how long you spoke, and
  interrupts the bot when you start speaking (Silero VAD, bundled with pipecat).
- ``LivefaceVideoService`` turns the TTS audio into the avatar's synchronized video and audio.
  One local liveface server (CPU ``warp`` engine) is started here and shared by every
  connection; without ``address`` each service would start its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import wave
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from aiohttp import web
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from liveface.integrations.pipecat import LivefaceVideoService, LocalServer, LocalServerConfig

PAGE = Path(__file__).with_suffix(".html")
GREETING = "Hello! I am a local avatar. Type something for me to say, or just talk to me."
CHUNK_S = 0.02  # TTS audio per frame


class LocalTTSService(TTSService):
    """A pipecat TTS service with no cloud: ``espeak-ng`` speaks the text, or, given a WAV file,
    the file is played for every line (the text is then ignored)."""

    def __init__(self, *, voice: str = "en-us", wav: str | None = None, **kwargs: Any) -> None:
        settings = TTSSettings(model=None, voice=voice, language=None)
        super().__init__(push_start_frame=True, push_stop_frames=True, settings=settings, **kwargs)
        self._voice = voice
        self._wav = _read_wav(wav) if wav else None

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        if self._wav is not None:
            pcm, rate = self._wav
        else:
            pcm, rate = await self._espeak(text)
        await self.stop_ttfb_metrics()
        step = int(rate * CHUNK_S) * 2
        for i in range(0, len(pcm), step):
            yield TTSAudioRawFrame(pcm[i : i + step], rate, 1, context_id=context_id)

    async def _espeak(self, text: str) -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "--stdout", "-v", self._voice, text, stdout=asyncio.subprocess.PIPE
        )
        data, _ = await proc.communicate()
        # A RIFF header (rate at bytes 24..28) and 16-bit mono PCM after the 44-byte header.
        return data[44:], int.from_bytes(data[24:28], "little")


def _read_wav(path: str) -> tuple[bytes, int]:
    """16-bit PCM WAV -> (mono PCM bytes, rate); convert other files with sox or ffmpeg."""
    import numpy as np

    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM (try: sox {path} -b 16 out.wav)")
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return x.mean(axis=1).astype("<i2").tobytes(), w.getframerate()


class Turns(FrameProcessor):
    """The stand-in for STT + LLM: interrupts the bot when you start talking, answers when you
    stop, and speaks what the page sends (``say``) or interrupts on request (``interrupt``)."""

    def __init__(self) -> None:
        super().__init__()
        self._started: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._started = asyncio.get_running_loop().time()
            await self.broadcast_interruption()
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._started is not None:
            spoken = asyncio.get_running_loop().time() - self._started
            self._started = None
            await self.push_frame(TTSSpeakFrame(f"You spoke for {spoken:.1f} seconds."))
        await self.push_frame(frame, direction)

    async def on_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if message.get("type") == "say" and str(message.get("text", "")).strip():
            await self.queue_frame(TTSSpeakFrame(str(message["text"])))
        elif message.get("type") == "interrupt":
            await self.queue_frame(InterruptionFrame())


async def run_bot(connection: SmallWebRTCConnection, args: argparse.Namespace, address: str):
    """One conversation: a pipeline on this peer connection until the peer leaves."""
    size = args.size
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            video_out_enabled=True,
            video_out_is_live=False,  # images come synced with the audio (sync_with_audio)
            video_out_width=size,
            video_out_height=size,
            video_out_framerate=25,
        ),
    )
    turns = Turns()
    # The portrait is the shared server's default (--portrait); a service may bring its own
    # with portrait=... (bytes, a path or an RGB array).
    avatar = LivefaceVideoService(address=address, name="avatar")
    pipeline = Pipeline(
        [
            transport.input(),
            VADProcessor(vad_analyzer=SileroVADAnalyzer()),
            turns,
            LocalTTSService(voice=args.voice, wav=args.wav),
            avatar,
            transport.output(),
        ]
    )
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    @transport.event_handler("on_client_connected")
    async def on_connected(transport: Any, client: Any) -> None:
        await worker.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_app_message")
    async def on_message(transport: Any, message: Any, sender: Any) -> None:
        await turns.on_message(message)

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(transport: Any, client: Any) -> None:
        await runner.cancel()

    await runner.run()


def build_app(args: argparse.Namespace, address: str) -> web.Application:
    connections: dict[str, SmallWebRTCConnection] = {}
    bots: set[asyncio.Task[Any]] = set()

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        existing = connections.get(body.get("pc_id") or "")
        if existing is not None:  # the transport asked the page to renegotiate
            await existing.renegotiate(sdp=body["sdp"], type=body["type"])
            return web.json_response(existing.get_answer())
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])

        @connection.event_handler("closed")
        async def on_closed(conn: SmallWebRTCConnection) -> None:
            connections.pop(conn.pc_id, None)

        answer = connection.get_answer()
        connections[answer["pc_id"]] = connection
        task = asyncio.create_task(run_bot(connection, args, address))
        bots.add(task)
        task.add_done_callback(bots.discard)
        return web.json_response(answer)

    async def cleanup(app: web.Application) -> None:
        for task in list(bots):
            task.cancel()
        for task in list(bots):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/api/offer", offer)
    app.on_cleanup.append(cleanup)
    return app


async def main(args: argparse.Namespace) -> None:
    config = LocalServerConfig(size=(args.size, args.size), portrait=args.portrait)
    print("starting the avatar server (CPU warp engine)...", file=sys.stderr)
    async with LocalServer(config) as server:
        assert server.address is not None
        runner = web.AppRunner(build_app(args, server.address))
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"open http://{args.host}:{args.port} and press Connect", file=sys.stderr)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="page and offer address")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--portrait", help="the avatar's picture (default: the server's portrait)")
    p.add_argument("--size", type=int, default=512, help="video size in pixels (square)")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice")
    p.add_argument("--wav", help="play this 16-bit WAV file as every line instead of espeak-ng")
    args = p.parse_args(argv)
    if args.wav is None and shutil.which("espeak-ng") is None:
        p.error("espeak-ng is not installed: install it, or pass --wav FILE")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
