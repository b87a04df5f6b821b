"""What a session tells its transport: playback events, errors, its end (typed, no free strings)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from liveface.errors import AvatarError
from liveface.pipeline.segments import PlaybackEvent, PlaybackKind

__all__ = ["CloseReason", "PlaybackEvent", "PlaybackKind", "SessionClosed", "SessionError"]


class CloseReason(enum.Enum):
    """Why a session ended (the ZeroMQ ``CLOSED`` message carries the value)."""

    CLIENT_CLOSED = "client_closed"
    CLIENT_TIMEOUT = "client_timeout"
    PEER_CLOSED = "peer_closed"
    PEER_FAILED = "peer_failed"
    PEER_SILENT = "peer_silent"
    ICE_TIMEOUT = "ice_timeout"
    ENGINE_FAILED = "engine_failed"
    INTERNAL_ERROR = "internal_error"
    OPEN_FAILED = "open_failed"
    SERVER_STOPPING = "server_stopping"


@dataclass(frozen=True)
class SessionError:
    """A failure the client should hear about (the session may end because of it)."""

    error: AvatarError


@dataclass(frozen=True)
class SessionClosed:
    """The session has ended and freed what it held."""

    reason: CloseReason


#: Everything a session emits, in order, on its event loop.
SessionEvent = PlaybackEvent | SessionError | SessionClosed
