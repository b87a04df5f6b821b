"""What a ZeroMQ client receives: frames, events and errors, plus its CURVE keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liveface.errors import AvatarError


class ServerError(AvatarError):
    """The server answered a request with an ``ERROR`` message."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class Frame:
    """One video frame of a session and the audio it animates.

    Attributes:
        index: media-clock frame index (frames arrive in increasing order; gaps are drops).
        pts: media-clock position of the frame's first audio sample, in samples at ``rate``.
        rate: sample rate of ``pts`` and ``audio`` (Hz).
        fresh: False when the server repeated the previous frame (the engine was late).
        dropped: frames the server dropped so far because this client read too slowly.
        format: ``rgb`` or ``jpeg``.
        width, height: frame size in pixels.
        data: the image payload (raw RGB bytes or JPEG bytes).
        audio: float32 mono ``(samples,)``, the samples ``[pts, pts + samples)`` the frame
            animates (a scene: the characters' mix).
        received_at: ``time.monotonic()`` when the client received it (for latency metrics).
        voices: each character's own audio over the same samples, float32 ``(samples,)`` each,
            in character order (a scene opened with ``character_audio``; else empty).
    """

    session: str
    index: int
    pts: int
    rate: int
    fresh: bool
    dropped: int
    format: str
    width: int
    height: int
    data: Any
    audio: np.ndarray
    received_at: float = 0.0
    voices: tuple[np.ndarray, ...] = ()

    def image(self) -> np.ndarray:
        """The frame as uint8 RGB ``(height, width, 3)`` (decodes JPEG)."""
        if self.format == "rgb":
            return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        import cv2

        bgr = cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("the server sent a JPEG that cannot be decoded")
        return np.ascontiguousarray(bgr[:, :, ::-1])


@dataclass
class Event:
    """A session event.

    ``kind`` is ``playback_started`` (data: segment), ``playback_finished`` (segment, position in
    seconds, interrupted), ``error`` (code, message, retryable) or ``closed`` (reason and frame
    counters); ``closed`` is always a session's last item. Playback events of protocol version 2
    also carry ``character``.
    """

    session: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CurveKeys:
    """A client's CURVE key pair and the server's public key (Z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, client_secret: str | Path, server_public: str | Path) -> CurveKeys:
        """Keys from a client ``*.key_secret`` file and the server's ``server.key``."""
        from liveface.protocol.curve import load_keypair, load_public

        public, secret = load_keypair(client_secret)
        return cls(load_public(server_public), public, secret)
