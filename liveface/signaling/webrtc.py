"""One WebRTC peer: its peer connection, its Session, the microphone adapter, the stats channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from liveface.errors import BadInputError
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import SessionCounter
from liveface.runtime.runtime import Runtime
from liveface.runtime.session import Session
from liveface.runtime.tasks import TaskSet
from liveface.signaling.fanout import FeedTrack
from liveface.signaling.jitter import tune_audio_jitter
from liveface.signaling.tracks import AUDIO_BLOCK_MS, AvatarAudioTrack, AvatarVideoTrack
from liveface.signaling.video_encoder import install_vp8_encoder

log = logging.getLogger(__name__)

#: A peer whose microphone sends nothing for this long is gone (browsers send silence packets
#: while muted, so a healthy peer is never this quiet).
PEER_SILENT_TIMEOUT_S = 5.0
STATS_INTERVAL_S = 1.0


def check_offer(sdp: str, kind: str) -> None:
    """Refuse an offer that cannot work before anything is spent on it.

    Raises:
        BadInputError: not an offer, no audio section, or no DTLS fingerprint.
    """
    if kind != "offer":
        raise BadInputError(f'"type" must be "offer" (got {kind!r})')
    lines = sdp.splitlines()
    if not any(line.startswith("m=audio") for line in lines):
        raise BadInputError("the offer has no audio: send the microphone track")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise BadInputError(
            "the SDP offer has no DTLS fingerprint (a=fingerprint): not a WebRTC offer"
        )


class RtpClock:
    """Unwraps 32-bit RTP timestamps into a growing sample count."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._base = 0

    def unwrap(self, ts: int) -> int:
        if self._last is not None:
            step = (ts - self._last) & 0xFFFFFFFF
            if step >= 0x80000000:  # an older timestamp (reordered): step back
                step -= 0x100000000
            self._base += step
        else:
            self._base = ts
        self._last = ts
        return self._base


class PeerSession:
    """Owns a peer connection and the session behind it; ``aclose`` ends both.

    Args:
        runtime: where the session was opened (and is closed); its config gives the ICE
            servers, the ICE deadline and the jitter buffer's least hold.
        session: the started session.
        on_closed: called once the peer and its session have ended.
        character: the scene's character this peer's microphone drives (0 for one avatar).
        tracks: ``(audio, video)`` to send instead of the session's own tracks (a scene's
            shared feed, see :mod:`.fanout`).
        owner: the peer's leaving ends the session (False: a peer that joined a scene; its
            character listens again when it leaves).
    """

    def __init__(
        self,
        runtime: Runtime,
        session: Session,
        on_closed: Callable[[PeerSession], None],
        *,
        character: int = 0,
        tracks: tuple[FeedTrack, FeedTrack] | None = None,
        owner: bool = True,
    ) -> None:
        self.runtime = runtime
        self.session = session
        config = runtime.config
        # No ICE servers unless configured: a loopback or LAN server makes no outbound requests.
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in config.ice_servers
        ]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._jitter = config.audio_jitter_packets
        self._ice_timeout = config.ice_timeout_s
        self._connected = asyncio.Event()
        self._on_closed = on_closed
        self._tasks = TaskSet()
        self._closing = False
        self.last_audio = time.monotonic()
        self.character = character
        self.owner = owner
        self.audio: MediaStreamTrack
        self.video: AvatarVideoTrack | FeedTrack
        self.audio, self.video = tracks or (
            AvatarAudioTrack(session),
            AvatarVideoTrack(session, config.video_delay_ms),
        )

    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Apply the client's offer and produce the answer.

        Raises:
            BadInputError: the SDP is not a usable offer.
        """
        check_offer(sdp, kind)
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as e:  # aiortc raises ValueError and friends for bad SDP
            raise BadInputError(f"the SDP offer could not be parsed: {e}") from e
        pc.addTrack(self.audio)
        pc.addTrack(self.video)
        try:
            answer = await pc.createAnswer()
        except Exception as e:  # no codec in common, for one
            raise BadInputError(f"the offer cannot be answered: {e}") from e
        await pc.setLocalDescription(answer)
        install_vp8_encoder(pc)
        block = self.session.spec.sample_rate * AUDIO_BLOCK_MS // 1000
        c = self.character
        tune_audio_jitter(
            pc, self._jitter, on_drop=lambda n: self.session.ingests[c].count_dropped(n * block)
        )
        self._tasks.spawn(self._ice_deadline())
        self._tasks.spawn(self._watchdog())
        return pc.localDescription

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.spawn(self._ingest(track))

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label == "stats":
            self._tasks.spawn(self._send_stats(channel))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        if state in ("failed", "closed"):
            reason = CloseReason.PEER_FAILED if state == "failed" else CloseReason.PEER_CLOSED
            self._tasks.spawn(self.aclose(reason))

    async def _ingest(self, track: MediaStreamTrack) -> None:
        """Microphone frames (48 kHz Opus, decoded) -> the session's ingest, placed by their RTP
        timestamps so that a lost packet leaves a gap of its length instead of shifting the rest."""
        session, c = self.session, self.character
        clock = RtpClock()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame):
                continue
            self.last_audio = time.monotonic()
            pts = None if frame.pts is None else clock.unwrap(int(frame.pts))
            session.push(session.ingests[c].push_frame(frame, pts), c)

    async def _ice_deadline(self) -> None:
        """An answered offer holds its slot only until its peer connects, or the deadline."""
        try:
            async with asyncio.timeout(self._ice_timeout):
                await self._connected.wait()
        except TimeoutError:
            self._tasks.spawn(self.aclose(CloseReason.ICE_TIMEOUT))

    async def _watchdog(self) -> None:
        while not self._closing:
            await asyncio.sleep(1.0)
            if time.monotonic() - self.last_audio > PEER_SILENT_TIMEOUT_S:
                self._tasks.spawn(self.aclose(CloseReason.PEER_SILENT))
                return

    async def _send_stats(self, channel: Any) -> None:
        session = self.session
        last_sent, last_t = self.video.stats.sent, time.monotonic()
        while channel.readyState != "closed" and not self._closing:
            await asyncio.sleep(STATS_INTERVAL_S)
            if channel.readyState != "open":
                continue
            now = time.monotonic()
            sent = self.video.stats.sent
            fps = (sent - last_sent) / (now - last_t)
            last_sent, last_t = sent, now
            counters = session.counters()
            engine_ms = sorted(session.engine_ms)
            channel.send(
                json.dumps(
                    {
                        "fps": round(fps, 1),
                        "server_delay_ms": session.stream.config.delay_ms,
                        "engine_ms_p50": engine_ms[len(engine_ms) // 2] if engine_ms else None,
                        "frames_repeated": counters[SessionCounter.FRAMES_REPEATED],
                        "frames_late": counters[SessionCounter.FRAMES_LATE],
                        "chunks_skipped": session.chunks_skipped,
                    }
                )
            )

    async def aclose(self, reason: CloseReason = CloseReason.PEER_CLOSED) -> None:
        if self._closing:
            return
        self._closing = True
        self._tasks.cancel()
        if self.owner:
            await self.runtime.close_session(self.session, reason)
        elif not self.session.closing:
            self.session.release_character(self.character)
        with contextlib.suppress(Exception):
            await self.pc.close()
        await self._tasks.aclose()
        self._on_closed(self)
