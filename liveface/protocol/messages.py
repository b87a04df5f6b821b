"""The ZeroMQ wire protocol, versions 1 and 2: message types, header schemas, encoding, decoding.

The written specification is ``docs/zmq-protocol.md``; this module is its executable form and is
shared by the server and the clients. A message is a multipart ZeroMQ message:

- frame 0: two bytes, ``version`` (1 or 2) and ``type`` (a :class:`MsgType`);
- frame 1: the header, a UTF-8 JSON object validated against the type's schema;
- frames 2..: binary payloads (a portrait image, PCM audio, a video frame and its audio).

Version 2 adds scenes with several characters (``character`` on requests and events, the
characters in ``OPEN``/``OPENED``, each character's own audio in ``FRAME``); every version-1
message means the same in version 2 apart from the fields it adds. Nothing here touches sockets,
so the codec is tested without a network.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from liveface.engines.base import MAX_CHARACTERS, check_box
from liveface.errors import BadInputError
from liveface.protocol.schema import MAX_JSON_INT, Field, ProtocolError, Schema, validate

#: The version this code speaks by default, and every version it understands.
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
_PREFIX = struct.Struct("!BB")


class MsgType(enum.IntEnum):
    """Typed message ids. Requests go client -> server, the rest server -> client."""

    # requests
    OPEN = 1
    AUDIO = 2
    SEGMENT_END = 3
    CLEAR = 4
    CLOSE = 5
    PING = 6
    # replies and events
    OPENED = 64
    ACK = 65
    PONG = 66
    FRAME = 67
    PLAYBACK_STARTED = 68
    PLAYBACK_FINISHED = 69
    ERROR = 70
    CLOSED = 71

    @property
    def is_request(self) -> bool:
        return self.value < 64


class ErrorCode(enum.StrEnum):
    """Codes of ``ERROR`` messages (besides the codes of :mod:`liveface.errors`)."""

    BAD_MESSAGE = "bad_message"  # truncated, not JSON, schema violated, wrong payload count
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    UNKNOWN_SESSION = "unknown_session"  # no such session, or it belongs to another client
    BUSY = "busy"  # the session's request queue is full; retry later
    INTERNAL = "internal"


class OutputFormat(enum.StrEnum):
    RGB = "rgb"  # raw uint8 RGB, (height, width, 3), row-major
    JPEG = "jpeg"


PCM_FORMATS = ("s16le", "s32le", "f32le")

_REQ = Field("int", lo=0, hi=MAX_JSON_INT)
_SESSION = Field("str", required=True, lo=1, hi=64)
_COUNT = Field("int", required=True, lo=0, hi=MAX_JSON_INT)


def _r(**fields: Field) -> dict[str, Field]:
    """A request schema: every request may carry ``req``, echoed in its reply."""
    return {"req": _REQ, **fields}


#: Checks that span fields and payloads (run after the schema): raise ``ProtocolError``.
CrossCheck = Callable[[dict[str, Any], int], None]


@dataclass(frozen=True)
class MessageSpec:
    """A message type's header schema and how many binary payload frames it carries."""

    schema: Schema
    payloads: tuple[int, int] = (0, 0)  # (min, max)
    check: CrossCheck | None = None


SPECS: dict[MsgType, MessageSpec] = {
    MsgType.OPEN: MessageSpec(
        _r(
            prompt=Field("str", nullable=True, hi=4000),
            options=Field("object", nullable=True, hi=64),
            format=Field("str", choices=tuple(OutputFormat)),
            jpeg_quality=Field("int", lo=1, hi=100),
        ),
        payloads=(0, 1),
    ),
    MsgType.AUDIO: MessageSpec(
        _r(
            session=_SESSION,
            rate=Field("int", required=True, lo=1, hi=10_000_000),
            format=Field("str", required=True, choices=PCM_FORMATS),
            channels=Field("int", lo=1, hi=8),
        ),
        payloads=(1, 1),
    ),
    MsgType.SEGMENT_END: MessageSpec(_r(session=_SESSION)),
    MsgType.CLEAR: MessageSpec(_r(session=_SESSION)),
    MsgType.CLOSE: MessageSpec(_r(session=_SESSION)),
    MsgType.PING: MessageSpec(_r()),
    MsgType.OPENED: MessageSpec(
        _r(
            session=_SESSION,
            width=_COUNT,
            height=_COUNT,
            fps=_COUNT,
            sample_rate=_COUNT,
            format=Field("str", required=True, choices=tuple(OutputFormat)),
            timeout_s=Field("float", required=True, lo=0),
        )
    ),
    MsgType.ACK: MessageSpec(
        _r(
            session=_SESSION,
            accepted=Field("int", lo=0),
            dropped=Field("int", lo=0),
            queued_s=Field("float", lo=0),
            segment=Field("int", nullable=True, lo=0),
        )
    ),
    MsgType.PONG: MessageSpec(_r(sessions=Field("list", required=True))),
    MsgType.FRAME: MessageSpec(
        {
            "session": _SESSION,
            "index": _COUNT,
            "pts": _COUNT,
            "rate": _COUNT,
            "samples": _COUNT,
            "width": _COUNT,
            "height": _COUNT,
            "format": Field("str", required=True, choices=tuple(OutputFormat)),
            "fresh": Field("bool", required=True),
            "dropped": _COUNT,
        },
        payloads=(2, 2),
    ),
    MsgType.PLAYBACK_STARTED: MessageSpec({"session": _SESSION, "segment": _COUNT}),
    MsgType.PLAYBACK_FINISHED: MessageSpec(
        {
            "session": _SESSION,
            "segment": _COUNT,
            "position": Field("float", required=True, lo=0),
            "interrupted": Field("bool", required=True),
        }
    ),
    MsgType.ERROR: MessageSpec(
        _r(
            session=Field("str", hi=64),
            code=Field("str", required=True, hi=64),
            message=Field("str", required=True, hi=4000),
            retryable=Field("bool", required=True),
        )
    ),
    MsgType.CLOSED: MessageSpec(
        _r(
            session=_SESSION,
            reason=Field("str", required=True, hi=200),
            frames_sent=_COUNT,
            frames_dropped=_COUNT,
            frames_repeated=_COUNT,
        )
    ),
}


_CHARACTER = Field("int", lo=0, hi=MAX_CHARACTERS - 1)


def _check_open(header: dict[str, Any], payloads: int) -> None:
    """Version 2 ``OPEN``: a count or boxes (not both), boxes well formed, portraits vs count."""
    boxes, count = header.get("boxes"), header.get("characters")
    if boxes is not None and count is not None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "open: give 'characters' or 'boxes', not both")
    try:
        for i, box in enumerate(boxes or ()):
            check_box(box, f"open: boxes[{i}]")
    except BadInputError as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(e)) from e
    if payloads > 1 and (boxes is not None or (count is not None and count != payloads)):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"open: {payloads} portraits are {payloads} characters, one each; send no boxes "
            "and no other count",
        )


def _check_frame(header: dict[str, Any], payloads: int) -> None:
    voices = header.get("voices", 0)
    if payloads != 2 + voices:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"frame: expected 2 + voices ({voices}) payloads, got {payloads}"
        )


def _extend(spec: MessageSpec, **fields: Field) -> MessageSpec:
    return replace(spec, schema={**spec.schema, **fields})


#: Version 2: version 1 plus the fields of scenes with several characters.
SPECS_V2: dict[MsgType, MessageSpec] = {
    **SPECS,
    MsgType.OPEN: replace(
        _extend(
            SPECS[MsgType.OPEN],
            characters=Field("int", lo=1, hi=MAX_CHARACTERS),
            boxes=Field("list", lo=1, hi=MAX_CHARACTERS),
            character_audio=Field("bool"),
        ),
        payloads=(0, MAX_CHARACTERS),
        check=_check_open,
    ),
    MsgType.AUDIO: _extend(SPECS[MsgType.AUDIO], character=_CHARACTER),
    MsgType.SEGMENT_END: _extend(SPECS[MsgType.SEGMENT_END], character=_CHARACTER),
    MsgType.CLEAR: _extend(SPECS[MsgType.CLEAR], character=_CHARACTER),
    MsgType.OPENED: _extend(
        SPECS[MsgType.OPENED], characters=Field("list", required=True, lo=1, hi=MAX_CHARACTERS)
    ),
    MsgType.ACK: _extend(SPECS[MsgType.ACK], character=_CHARACTER),
    MsgType.FRAME: replace(
        _extend(SPECS[MsgType.FRAME], voices=Field("int", lo=0, hi=MAX_CHARACTERS)),
        payloads=(2, 2 + MAX_CHARACTERS),
        check=_check_frame,
    ),
    MsgType.PLAYBACK_STARTED: _extend(SPECS[MsgType.PLAYBACK_STARTED], character=_CHARACTER),
    MsgType.PLAYBACK_FINISHED: _extend(SPECS[MsgType.PLAYBACK_FINISHED], character=_CHARACTER),
}
#: The message specs of each supported version.
VERSION_SPECS = {1: SPECS, 2: SPECS_V2}


@dataclass(frozen=True)
class Limits:
    """Sizes a receiver accepts; larger frames are refused with ``too_large``."""

    max_header_bytes: int = 64 * 1024
    max_payload_bytes: int = 8 * 1024 * 1024


@dataclass
class Message:
    """A decoded message: its type, validated header, payload frames (bytes-like) and the
    protocol version it came in."""

    type: MsgType
    header: dict[str, Any]
    payloads: list[Any] = field(default_factory=list)
    version: int = PROTOCOL_VERSION

    @property
    def req(self) -> int | None:
        req = self.header.get("req")
        return req if isinstance(req, int) else None


def encode(
    msg_type: MsgType, header: dict[str, Any], *payloads: Any, version: int = PROTOCOL_VERSION
) -> list[Any]:
    """The frames of a message (without any routing id): prefix, JSON header, payloads."""
    body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return [_PREFIX.pack(version, int(msg_type)), body, *payloads]


def _peek_req(header: Any) -> int | None:
    """The request id of a (possibly invalid) header, when it carried a usable one."""
    if isinstance(header, dict):
        req = header.get("req")
        if isinstance(req, int) and not isinstance(req, bool) and 0 <= req <= MAX_JSON_INT:
            return req
    return None


def decode(frames: Sequence[Any], limits: Limits, requests: bool) -> Message:
    """Parse and validate one message's frames (the routing id already removed).

    Args:
        frames: bytes-like frames (``bytes``, ``memoryview`` or ``zmq.Frame`` buffers).
        limits: size limits.
        requests: True on the server (only request types are accepted), False on a client.

    Raises:
        ProtocolError: with the error code to send back; ``error.req`` holds the request id
            when the header carried one.
    """
    if len(frames) < 2:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"expected at least 2 frames (version+type, JSON header), got {len(frames)}",
        )
    prefix = bytes(frames[0])
    if len(prefix) != _PREFIX.size:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"frame 0 must be 2 bytes (version, type), got {len(prefix)}"
        )
    version, type_id = _PREFIX.unpack(prefix)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported; this peer speaks versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
        )
    try:
        msg_type = MsgType(type_id)
    except ValueError:
        msg_type = None
    if msg_type is None or msg_type.is_request != requests:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {type_id}")
    raw = frames[1]
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header is over {limits.max_header_bytes} bytes")
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header is not valid JSON: {e}") from e
    req = _peek_req(header)
    spec = VERSION_SPECS[version][msg_type]
    where = msg_type.name.lower()
    try:
        header = validate(header, spec.schema, where)
        payloads = list(frames[2:])
        lo, hi = spec.payloads
        if not lo <= len(payloads) <= hi:
            want = str(lo) if lo == hi else f"{lo}..{hi}"
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"{where}: expected {want} payload frame(s), got {len(payloads)}",
            )
        for p in payloads:
            if len(p) > limits.max_payload_bytes:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"{where}: payload of {len(p)} bytes is over the limit of "
                    f"{limits.max_payload_bytes}",
                )
        if spec.check is not None:
            spec.check(header, len(payloads))
    except ProtocolError as e:
        e.req = req
        raise
    return Message(msg_type, header, payloads, version)


def error_header(
    code: str,
    message: str,
    retryable: bool = False,
    req: int | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    """The header of an ``ERROR`` message (messages are cut to the schema's limit)."""
    header: dict[str, Any] = {"code": code, "message": message[:4000], "retryable": retryable}
    if req is not None:
        header["req"] = req
    if session is not None:
        header["session"] = session[:64]
    return header
