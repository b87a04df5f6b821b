"""The project's small error hierarchy.

Every error carries a short message that tells the user what to fix, and a ``retryable`` flag that
says whether trying the same thing again later may succeed (a full server) or not (a bad portrait).
"""

from __future__ import annotations


class AvatarError(Exception):
    """Base class of every error this project raises on purpose."""

    retryable: bool = False
    #: A short machine-readable code, used in HTTP and ZeroMQ error replies.
    code: str = "error"


class ConfigError(AvatarError):
    """The configuration is invalid; the message names the field and what to change."""

    code = "bad_config"


class BadInputError(AvatarError):
    """Client input (offer, portrait, audio, message) is invalid."""

    code = "bad_input"


class NoFaceError(BadInputError):
    """The portrait has no usable face (none, several, or too small)."""

    code = "no_face"


class AudioFormatError(BadInputError):
    """Audio arrived in a format or rate the server cannot use."""

    code = "bad_audio"


class CapacityError(AvatarError):
    """The server holds its configured maximum of sessions; try again later."""

    code = "at_capacity"
    retryable = True


class CheckpointError(AvatarError):
    """A checkpoint is missing, truncated, or does not match the model's config."""

    code = "bad_checkpoint"


class SessionClosedError(AvatarError):
    """The session has ended; nothing more can be sent to it."""

    code = "session_closed"


class EngineError(AvatarError):
    """The engine failed on a session's audio; the session ends, the server keeps serving."""

    code = "engine_failed"


class OutputError(AvatarError):
    """An offline render could not write its output file (a full disk, a file system error)."""

    code = "output_failed"


class UnauthorizedError(AvatarError):
    """The request lacks the server's access token."""

    code = "unauthorized"


class UnknownCharacterError(BadInputError):
    """A request named a character the session does not have."""

    code = "unknown_character"


class JoinRefusedError(AvatarError):
    """A peer asked to join a scene with a token that is unknown or spent, or for a character
    that is taken."""

    code = "join_refused"
