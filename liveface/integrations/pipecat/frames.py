"""From the server's ``FRAME`` messages to pipecat frames, and which frames a barge-in makes stale.

Kept apart from the service so the conversions and the stale-frame rule read (and test) on
their own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pipecat.frames.frames import OutputImageRawFrame, SpeechOutputAudioRawFrame

from liveface.client import Frame

#: Frames of slack when estimating which frame the server had reached when it cleared: a frame
#: arrives a little after its due time, so the estimate can run short by up to one frame.
STALE_MARGIN_FRAMES = 2


def pcm16(audio: np.ndarray) -> bytes:
    """float32 mono samples ``(n,)`` in [-1, 1] -> 16-bit little-endian PCM bytes (2n)."""
    x = np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0
    return np.rint(x).astype("<i2").tobytes()


def media_info(frame: Frame) -> dict[str, Any]:
    """What a pipecat frame carries about the server frame it came from (``metadata``)."""
    return {
        "index": frame.index,
        "pts": frame.pts,
        "rate": frame.rate,
        "fresh": frame.fresh,
        "session": frame.session,
    }


def to_pipecat(
    frame: Frame, rgb: bytes | memoryview
) -> tuple[OutputImageRawFrame, SpeechOutputAudioRawFrame]:
    """One server frame -> the image and the audio it animates, for any pipecat transport.

    The image is marked ``sync_with_audio``: the output transport queues it with the audio and
    shows it once the audio pushed before it has been played, so each image appears with its
    own audio. The audio is a :class:`SpeechOutputAudioRawFrame` (a continuous stream, silence
    included), from which the transport derives when the bot starts and stops speaking.

    Args:
        frame: the server frame; ``frame.audio`` float32 ``(samples,)`` at ``frame.rate``.
        rgb: the image as ``height * width * 3`` uint8 RGB bytes.
    """
    image = OutputImageRawFrame(image=bytes(rgb), size=(frame.width, frame.height), format="RGB")
    image.sync_with_audio = True
    audio = SpeechOutputAudioRawFrame(
        audio=pcm16(frame.audio), sample_rate=frame.rate, num_channels=1
    )
    info = media_info(frame)
    image.metadata["liveface"] = info
    audio.metadata["liveface"] = info
    return image, audio


class StaleFrames:
    """After a barge-in: drops the frames that still carry the interrupted speech.

    The server applies ``CLEAR`` at once, but frames it had already paced out may still be on
    their way (in its send queue, the socket, the client's queue). They are the frames due
    before the clear: index at most what the server's media clock had reached when the ``ACK``
    came back, estimated from the last frame seen and the time since. Of those, the ones that
    carry audio are dropped (the output transport would play the interrupted speech again);
    silent ones pass. Frames after the clear carry only silence until new audio is pushed,
    and new audio comes back later than the cutoff, so nothing new is ever dropped.
    """

    def __init__(self) -> None:
        #: Highest index that may still be stale; None when not filtering.
        self.cutoff: float | None = None
        #: Frames dropped so far.
        self.dropped = 0
        self._last_index = -1
        self._last_at = 0.0

    def seen(self, frame: Frame) -> None:
        """Record a frame as it arrives (dropped or not)."""
        self._last_index, self._last_at = frame.index, frame.received_at

    def begin(self) -> None:
        """A clear is on its way: drop every frame with audio until :meth:`cleared`."""
        self.cutoff = math.inf

    def cleared(self, now: float, fps: int) -> None:
        """The server acknowledged the clear at ``now`` (``time.monotonic()``)."""
        if self._last_index < 0:
            self.cutoff = None  # no frame yet: nothing can be stale
            return
        elapsed = max(0.0, now - self._last_at)
        self.cutoff = self._last_index + math.ceil(elapsed * fps) + STALE_MARGIN_FRAMES

    def cancel(self) -> None:
        """Stop filtering (the clear failed)."""
        self.cutoff = None

    def drop(self, frame: Frame) -> bool:
        """Whether ``frame`` is stale speech to drop; call for each frame, in order."""
        if self.cutoff is None:
            return False
        if frame.index > self.cutoff:
            self.cutoff = None
            return False
        if np.any(frame.audio):
            self.dropped += 1
            return True
        return False
