"""The pipecat video service: TTS audio in, the talking avatar's images and audio out.

Placed after the TTS service, like pipecat's own video services:

    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                         LivefaceVideoService(), transport.output(), assistant_agg])

It streams each ``TTSAudioRawFrame`` to an avatar server over ZeroMQ (``docs/zmq-protocol.md``)
instead of passing it on, and pushes what the server sends back, frame by frame: an
``OutputImageRawFrame`` (``sync_with_audio``) followed by a ``SpeechOutputAudioRawFrame`` with
exactly the audio that image animates, so the output transport plays them in sync. The server
keeps sending idle frames (breathing, blinks, silence) between utterances.

- ``TTSStartedFrame`` passes at once; ``TTSStoppedFrame`` ends the server's speech segment and
  is held back until that segment has played, so it reaches the transport after its audio.
- ``InterruptionFrame`` clears the server (queued audio and frames dropped, back to idle within
  one chunk); frames still in flight with the interrupted speech are dropped here.
- Errors go upstream as ``ErrorFrame``s (``push_error``). Without an avatar (the server cannot
  be reached, the session ended) the service passes the TTS audio through, so the bot still
  talks; a lost session is reopened at the next ``TTSStartedFrame``.
- Given no ``address``, it starts a private server (:class:`LocalServer`, CPU ``warp`` engine by
  default) when the pipeline starts and stops it when the pipeline ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputTransportReadyFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from liveface.client import AsyncClient, CurveKeys, Event
from liveface.client import Frame as ServerFrame
from liveface.client.remote_session import RemoteSession
from liveface.errors import ConfigError
from liveface.integrations.local_server import LocalServer, LocalServerConfig
from liveface.integrations.pipecat.frames import StaleFrames, to_pipecat
from liveface.integrations.pipecat.segments import Segments

log = logging.getLogger(__name__)

#: Extra time allowed, past the audio still queued on the server, for an ending pipeline to
#: play it out before the session is closed.
DRAIN_MARGIN_S = 2.0


class LivefaceVideoService(AIService):
    """A talking-portrait video service backed by a liveface server.

    Args:
        address: the server's ZeroMQ address (``tcp://host:port``, ``ipc://path``); None starts a
            private local server for the pipeline's lifetime.
        server: how to run that local server (engine, size, fps, ...); only without ``address``.
        portrait: the avatar's picture: image bytes, a file path, or RGB ``(h, w, 3)`` uint8
            (None: the server's default portrait).
        prompt: a text prompt for engines that take one.
        engine_options: per-session engine options (see the engine's documentation).
        image_format: ``rgb`` (raw frames, for a server on this machine) or ``jpeg`` (less
            bandwidth to a remote server; decoded here off the event loop).
        jpeg_quality: JPEG quality 1..100 with ``image_format="jpeg"``.
        curve: CURVE keys for a server that requires them.
        wait_for_transport: drop the avatar's frames until the output transport reports it is
            ready (``OutputTransportReadyFrame``), as pipecat's video services do; set False in a
            pipeline without a pipecat output transport.
        connect_timeout_s: how long a server at ``address`` may take to answer a first ping.
        open_timeout_s: how long opening the avatar session may take.
        **kwargs: passed to pipecat's ``AIService`` (``name``, ...).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        server: LocalServerConfig | None = None,
        portrait: bytes | str | Path | np.ndarray | None = None,
        prompt: str | None = None,
        engine_options: dict[str, Any] | None = None,
        image_format: str = "rgb",
        jpeg_quality: int | None = None,
        curve: CurveKeys | None = None,
        wait_for_transport: bool = True,
        connect_timeout_s: float = 5.0,
        open_timeout_s: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if image_format not in ("rgb", "jpeg"):
            raise ConfigError(f"image_format must be 'rgb' or 'jpeg', got {image_format!r}")
        if address is not None and server is not None:
            raise ConfigError("pass either address (a running server) or server (start one)")
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        self._address = address
        self._server_config = server
        self._portrait = portrait
        self._prompt = prompt
        self._engine_options = engine_options
        self._format = image_format
        self._jpeg_quality = jpeg_quality
        self._curve = curve
        self._connect_timeout_s = connect_timeout_s
        self._open_timeout_s = open_timeout_s
        self._transport_ready = not wait_for_transport

        self._server: LocalServer | None = None
        self._client: AsyncClient | None = None
        self._session: RemoteSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._lost = False  # a session ended under us: reopen it at the next response
        self._stale = StaleFrames()
        self._segments = Segments()
        self._awaiting_voice = False  # TTFB runs until the first frame with audio is pushed
        #: Frames pushed downstream, and frames dropped before the transport was ready.
        self.frames_pushed = 0
        self.frames_not_ready = 0

    @property
    def session(self) -> RemoteSession | None:
        """The avatar session (size, fps) while one is open."""
        return self._session

    def can_generate_metrics(self) -> bool:
        """TTFB here is TTS audio in -> first frame with that audio out."""
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        """Start the local server if needed, connect, and open the avatar session."""
        await super().start(frame)
        self._closing = False
        try:
            if self._address is None:
                self._server = LocalServer(self._server_config)
                address = await self._server.start()
                self._spawn(self._watch_server(self._server))
            else:
                address = self._address
            self._client = client = AsyncClient(
                address, curve=self._curve, open_timeout_s=self._open_timeout_s
            )
            await client.connect()
            async with asyncio.timeout(self._connect_timeout_s):  # fail fast: nobody there
                await client.ping()
            await self._open_session()
        except Exception as e:
            await self.push_error(
                error_msg=f"liveface: no avatar, the TTS audio passes through: {_describe(e)}",
                exception=e,
            )

    async def stop(self, frame: EndFrame) -> None:
        """Let the audio already sent play out (bounded), then disconnect."""
        await super().stop(frame)
        session = self._session
        if session is not None and not session.closed:
            try:
                if self._segments.open:
                    await self._end_segment(session, None)
                async with asyncio.timeout(self._segments.queued_s + DRAIN_MARGIN_S):
                    await self._segments.drained()
            except Exception as e:
                log.info("pipecat service: playback not drained before the end: %s", e)
        await self._disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._disconnect()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._disconnect()

    async def _open_session(self) -> None:
        assert self._client is not None
        self._session = session = await self._client.open(
            portrait=self._portrait,
            prompt=self._prompt,
            options=self._engine_options,
            format=self._format,
            jpeg_quality=self._jpeg_quality,
        )
        self._stale = StaleFrames()
        self._segments.reset()
        self._spawn(self._receive(session))

    async def _disconnect(self) -> None:
        """Close the session, the client and the local server; cancel the tasks. Idempotent."""
        self._closing = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                async with asyncio.timeout(2.0):
                    await session.close()
            except Exception as e:
                log.info("pipecat service: closing the avatar session: %s", e)
        for task in list(self._tasks):
            await self.cancel_task(task)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._server is not None:
            await self._server.aclose()
            self._server = None

    def _spawn(self, coro: Any) -> None:
        task = self.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- frames in -----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            if self._session is None:
                await self.push_frame(frame, direction)  # no avatar: the bot still talks
            else:
                await self._send_audio(self._session, frame)
        elif isinstance(frame, TTSStoppedFrame):
            session = self._session
            if session is not None and self._segments.open:
                await self._end_segment(session, frame)
            else:
                await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStartedFrame):
            if self._lost:
                await self._reopen()
            await self.push_frame(frame, direction)
        else:
            if isinstance(frame, OutputTransportReadyFrame):
                self._transport_ready = True
            await self.push_frame(frame, direction)

    async def _send_audio(self, session: RemoteSession, frame: TTSAudioRawFrame) -> None:
        if not frame.audio:
            return
        if self._segments.audio():
            self._awaiting_voice = True
            await self.start_ttfb_metrics()
        try:
            ack = await session.push(
                frame.audio, rate=frame.sample_rate, fmt="s16le", channels=frame.num_channels
            )
        except Exception as e:
            await self.push_error(
                error_msg=f"liveface: sending TTS audio failed: {_describe(e)}", exception=e
            )
            return
        assert ack is not None
        self._segments.queued_s = float(ack["queued_s"])
        if ack["dropped"]:
            await self.push_error(
                error_msg=f"liveface: the avatar server's audio queue is full; "
                f"{ack['dropped']} samples were dropped"
            )

    async def _end_segment(self, session: RemoteSession, stopped: TTSStoppedFrame | None) -> None:
        try:
            segment = await session.end_segment()
        except Exception as e:
            self._segments.reset()
            await self.push_error(
                error_msg=f"liveface: ending the segment failed: {_describe(e)}", exception=e
            )
            segment = None
        if segment is None:  # nothing will play: release the frame now
            self._segments.reset()
            if stopped is not None:
                await self.push_frame(stopped)
            return
        self._segments.closed(segment, stopped)

    async def _interrupt(self) -> None:
        """Barge-in: the server drops what is queued; stale frames in flight are dropped here."""
        self._segments.reset()
        self._awaiting_voice = False
        session = self._session
        if session is None or session.closed:
            return
        self._stale.begin()
        try:
            await session.clear()
        except Exception as e:
            self._stale.cancel()
            await self.push_error(
                error_msg=f"liveface: clearing the avatar failed: {_describe(e)}", exception=e
            )
            return
        self._stale.cleared(time.monotonic(), session.fps)

    async def _reopen(self) -> None:
        """Once per lost session: a failure leaves the service passing audio through."""
        self._lost = False
        if self._client is None or (
            self._server is not None and self._server.returncode is not None
        ):
            return
        try:
            await self._open_session()
        except Exception as e:
            await self.push_error(
                error_msg=f"liveface: reopening the avatar failed: {_describe(e)}", exception=e
            )

    # -- frames out ----------------------------------------------------------------------------

    async def _receive(self, session: RemoteSession) -> None:
        """Push the server's frames downstream and act on its events, in arrival order."""
        try:
            async for item in session:
                if isinstance(item, ServerFrame):
                    await self._on_frame(item)
                else:
                    await self._on_event(session, item)
        except Exception as e:  # a bug here must not pass silently: the avatar would freeze
            await self.push_error(
                error_msg=f"liveface: receiving frames failed: {e!r}", exception=e
            )

    async def _on_frame(self, frame: ServerFrame) -> None:
        self._stale.seen(frame)
        if self._stale.drop(frame):
            return
        if not self._transport_ready:
            self.frames_not_ready += 1
            return
        if frame.format == "rgb":
            rgb: bytes | memoryview = frame.data
        else:
            loop = asyncio.get_running_loop()
            rgb = (await loop.run_in_executor(None, frame.image)).tobytes()
        image, audio = to_pipecat(frame, rgb)
        await self.push_frame(image)
        await self.push_frame(audio)
        self.frames_pushed += 1
        if self._awaiting_voice and np.any(frame.audio):
            self._awaiting_voice = False
            await self.stop_ttfb_metrics()

    async def _on_event(self, session: RemoteSession, event: Event) -> None:
        if event.kind == "playback_finished":
            stopped = self._segments.finished(event.data.get("segment"))
            if stopped is not None:
                await self.push_frame(stopped)
        elif event.kind == "error":
            await self.push_error(
                error_msg=f"liveface server error {event.data.get('code')}: "
                f"{event.data.get('message')}"
            )
        elif event.kind == "closed" and not self._closing:
            if self._session is session:
                self._session = None
                self._lost = True
            self._segments.reset()
            await self.push_error(
                error_msg=f"liveface: the avatar session ended ({event.data.get('reason')}); "
                "the TTS audio passes through until it is reopened"
            )

    async def _watch_server(self, server: LocalServer) -> None:
        status = await server.wait()
        if server.stopping:
            return
        self._session = None
        self._segments.reset()
        await self.push_error(
            error_msg=f"liveface: the local avatar server exited with status {status}; "
            f"its log ends with:\n{server.log_tail()}"
        )


def _describe(e: BaseException) -> str:
    """A readable reason, also for exceptions without a message (timeouts)."""
    if isinstance(e, TimeoutError):
        return "the avatar server did not answer in time (is it running at that address?)"
    return str(e) or type(e).__name__
