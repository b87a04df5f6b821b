"""Tuning of the ZeroMQ endpoint (the bind address and CURVE directory come from ServerConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from liveface.errors import ConfigError


@dataclass(frozen=True)
class ZmqOptions:
    """Tuning of the ZeroMQ endpoint (the address and CURVE directory come from ServerConfig).

    Attributes:
        client_timeout_s: a client silent this long is gone; its sessions end.
        max_header_bytes, max_payload_bytes: larger frames get a ``too_large`` error; frames over
            four times ``max_payload_bytes`` make libzmq drop the connection (``ZMQ_MAXMSGSIZE``).
        frame_queue: frames a session holds for a slow client before dropping the oldest.
        control_queue: replies/events a session holds while its client is at the high-water mark.
        inbox: requests a session holds before answering ``busy``.
        sndhwm, rcvhwm: ZeroMQ high-water marks (messages per client / in total).
        jpeg_quality: default JPEG quality (a client may ask for another).
        max_queued_s: most not-yet-played audio a client may push ahead.
        encode_threads: threads for JPEG encoding, audio decoding and portrait decoding.
    """

    client_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_payload_bytes: int = 8 * 1024 * 1024
    frame_queue: int = 8
    control_queue: int = 256
    inbox: int = 64
    sndhwm: int = 32
    rcvhwm: int = 256
    jpeg_quality: int = 85
    max_queued_s: float = 60.0
    encode_threads: int = 2

    def __post_init__(self) -> None:
        positive = (
            "client_timeout_s",
            "max_header_bytes",
            "max_payload_bytes",
            "frame_queue",
            "control_queue",
            "inbox",
            "sndhwm",
            "rcvhwm",
            "max_queued_s",
            "encode_threads",
        )
        bad = [name for name in positive if getattr(self, name) <= 0]
        if not 1 <= self.jpeg_quality <= 100:
            bad.append("jpeg_quality (1..100)")
        if bad:
            raise ConfigError(f"ZeroMQ options must be positive: {', '.join(bad)}")
