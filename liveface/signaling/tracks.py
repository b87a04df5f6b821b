"""The outgoing WebRTC tracks: thin adapters that encode what the session's pacers yield.

Both pacers run on the same session anchor: media-clock sample ``s`` is sent at its due time
(:mod:`liveface.pipeline.pacer`). Video pts are ``frame_start(n)`` in 90 kHz units and audio pts are
media-clock samples in 48 kHz units, so the two RTP clocks and their RTCP sender reports describe
one timeline and the receiver lines lips and voice up by construction.
"""

from __future__ import annotations

import fractions
import time

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from liveface.pipeline.pacer import PacerStats
from liveface.pipeline.resample import StreamingResampler
from liveface.pipeline.videoframe import yuv420_frame
from liveface.runtime.session import Session

VIDEO_CLOCK = 90000
AUDIO_BLOCK_MS = 20


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


class AvatarVideoTrack(MediaStreamTrack):
    """Encodes what the session's :class:`VideoPacer` yields: its frames at their due times.

    Args:
        session: the session whose frames go out.
        video_delay_ms: send the video this much later than the audio it goes with, and stamp it
            so (both RTP clocks then still describe one timeline, shifted by this much): browsers
            present video ahead of the audio they play (see ``ServerConfig.video_delay_ms``).
    """

    kind = "video"

    def __init__(self, session: Session, video_delay_ms: int = 0) -> None:
        super().__init__()
        self._pacer = session.video_pacer()
        self._rate = session.spec.sample_rate
        self._shift = video_delay_ms * self._rate // 1000  # in media-clock samples
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.send_latency = SendLatency()

    @property
    def stats(self) -> PacerStats:
        return self._pacer.stats

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.send_latency.on_call()
        lead = self.send_latency.estimate - self._shift / self._rate
        item = await self._pacer.next_frame(lead=lead)
        if item is None:
            raise MediaStreamError
        vf = yuv420_frame(item.frame)
        vf.pts = (item.start + self._shift) * VIDEO_CLOCK // self._rate
        vf.time_base = self._time_base
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
        rate = session.spec.sample_rate
        if self.OUT_RATE * AUDIO_BLOCK_MS % 1000 or rate * AUDIO_BLOCK_MS % 1000:
            raise ValueError(f"{AUDIO_BLOCK_MS} ms must be whole samples at {rate} Hz")
        self._rate = rate
        self._pacer = session.audio_pacer(rate * AUDIO_BLOCK_MS // 1000)
        self._upsampler = StreamingResampler(rate, self.OUT_RATE)
        self._time_base = fractions.Fraction(1, self.OUT_RATE)
        self.send_latency = SendLatency()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.send_latency.on_call()
        block = await self._pacer.next_block(lead=self.send_latency.estimate)
        if block is None:
            raise MediaStreamError
        y = self._upsampler.push(block.samples)
        pcm = (np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
        stereo = np.repeat(pcm, 2).reshape(1, -1)  # packed s16: L R L R ...
        af = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        af.sample_rate = self.OUT_RATE
        af.pts = block.start * self.OUT_RATE // self._rate
        af.time_base = self._time_base
        self.send_latency.on_return()
        return af
