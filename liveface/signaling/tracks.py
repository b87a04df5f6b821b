"""The outgoing WebRTC tracks: they own the clock (CONVENTIONS #1).

Both tracks pace against the same session anchor: media-clock sample ``s`` is sent at
``stream.due(s)``. Video pts are ``frame_start(n)`` in 90 kHz units and audio pts are media-clock
samples in 48 kHz units, so the two RTP clocks and their RTCP sender reports describe one
timeline and the receiver lines lips and voice up by construction.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from liveface.pipeline.resample import StreamingResampler
from liveface.runtime.session import Session

VIDEO_CLOCK = 90000
AUDIO_BLOCK_MS = 20
#: How far behind its schedule a track may fall before it jumps to "now" instead of bursting.
CATCH_UP_S = 0.2


class SendLatency:
    """How long the sender takes from ``recv()`` returning a frame to asking for the next one:
    aiortc encodes the frame (in an executor) and sends its packets in between. A track hands
    frames out this much before their due time, so that packets leave *at* the due time and the
    RTCP sender reports map both tracks' RTP clocks to the same wall time."""

    MAX_S = 0.1

    def __init__(self) -> None:
        self._returned: float | None = None
        self.estimate = 0.0

    def on_call(self) -> None:
        if self._returned is not None:
            sample = min(time.monotonic() - self._returned, self.MAX_S)
            self.estimate += 0.1 * (sample - self.estimate)

    def on_return(self) -> None:
        self._returned = time.monotonic()


async def _wait_for_output(session: Session) -> None:
    """Wait until the session's first result arrived (or the session ended)."""
    out = session.stream.output
    while out.first_buffered() is None and out.last_frame is None:
        if session.closing:
            raise MediaStreamError
        session.new_result.clear()
        await session.new_result.wait()


class AvatarVideoTrack(MediaStreamTrack):
    """Frames of a session at its fps; the last frame is repeated when the engine is late."""

    kind = "video"

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session
        self._next: int | None = None
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent = 0
        self.send_latency = SendLatency()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live" or self._session.closing:
            raise MediaStreamError
        self.send_latency.on_call()
        session = self._session
        stream, spec = session.stream, session.spec
        out = stream.output
        if self._next is None:
            await _wait_for_output(session)
            first = out.first_buffered()
            self._next = first if first is not None else 0
        n = self._next
        delay = stream.frame_due(n) - self.send_latency.estimate - time.monotonic()
        if delay < -CATCH_UP_S:
            # Far behind (the event loop stalled): resume at the frame due now, don't burst.
            n = spec.frame_at(max(0, stream.play_sample(time.monotonic())))
        elif delay > 0:
            await asyncio.sleep(delay)
        if session.closing:
            raise MediaStreamError
        frame, _fresh = out.take_frame(n)
        self._next = n + 1
        assert frame is not None  # _wait_for_output guarantees a first frame
        vf = VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = spec.frame_start(n) * VIDEO_CLOCK // spec.sample_rate
        vf.time_base = self._time_base
        self.sent += 1
        self.send_latency.on_return()
        return vf


class AvatarAudioTrack(MediaStreamTrack):
    """The audio the frames animate, 20 ms at a time at 48 kHz, on the same clock as the video.

    aiortc's Opus encoder stamps packets by the samples it has encoded, and its resampler holds
    back a partial frame whenever the input is not already 48 kHz stereo in 960-sample frames -
    which would send the voice 20 ms after the picture. So the track upsamples itself with the
    streaming resampler (its delay, half a millisecond, is negligible next to a 40 ms frame) and
    hands the encoder frames it passes straight through.
    """

    kind = "audio"
    OUT_RATE = 48000

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session
        rate = session.spec.sample_rate
        if self.OUT_RATE * AUDIO_BLOCK_MS % 1000 or rate * AUDIO_BLOCK_MS % 1000:
            raise ValueError(f"{AUDIO_BLOCK_MS} ms must be whole samples at {rate} Hz")
        self._block = rate * AUDIO_BLOCK_MS // 1000
        self._next: int | None = None
        self._upsampler = StreamingResampler(rate, self.OUT_RATE)
        self._time_base = fractions.Fraction(1, self.OUT_RATE)
        self.send_latency = SendLatency()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live" or self._session.closing:
            raise MediaStreamError
        self.send_latency.on_call()
        session = self._session
        stream = session.stream
        out = stream.output
        if self._next is None:
            await _wait_for_output(session)
            self._next = out.audio_head // self._block
        start = self._next * self._block
        delay = stream.due(start) - self.send_latency.estimate - time.monotonic()
        if delay < -CATCH_UP_S:
            start = max(0, stream.play_sample(time.monotonic())) // self._block * self._block
        elif delay > 0:
            await asyncio.sleep(delay)
        if session.closing:
            raise MediaStreamError
        b = self._block
        y = self._upsampler.push(out.take_audio(start, b))
        self._next = start // b + 1
        pcm = (np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
        stereo = np.repeat(pcm, 2).reshape(1, -1)  # packed s16: L R L R ...
        af = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        af.sample_rate = self.OUT_RATE
        af.pts = start * self.OUT_RATE // session.spec.sample_rate
        af.time_base = self._time_base
        self.send_latency.on_return()
        return af
