"""What the ZeroMQ endpoint makes of an ``OPEN``: the portraits, the scene's characters, and the
characters ``OPENED`` lists; and the version an error about a malformed message goes out in."""

from __future__ import annotations

from typing import Any

import zmq

from liveface.engines.base import SceneRequest
from liveface.protocol.messages import SUPPORTED_VERSIONS
from liveface.runtime.session import Session


def version_of(frames: list[zmq.Frame]) -> int:
    """The version to answer a malformed message in: its own when supported, else version 1
    (which every client decodes)."""
    prefix = frames[1].bytes if len(frames) > 1 else b""
    return prefix[0] if len(prefix) == 2 and prefix[0] in SUPPORTED_VERSIONS else 1


def portraits(payloads: list[Any]) -> bytes | list[bytes] | None:
    """One portrait, several (composed side by side, one character each), or none."""
    if not payloads:
        return None
    if len(payloads) == 1:
        return bytes(payloads[0])
    return [bytes(p) for p in payloads]


def scene_of(header: dict[str, Any]) -> SceneRequest | None:
    """The characters a version-2 ``OPEN`` declares (a count or boxes); None: one avatar, or
    one character per portrait.

    Raises:
        BadInputError: a count or boxes the scene refuses.
    """
    if "boxes" in header:
        return SceneRequest(boxes=tuple(tuple(b) for b in header["boxes"]))
    if "characters" in header:
        return SceneRequest(count=header["characters"])
    return None


def characters_of(session: Session) -> list[dict[str, Any]]:
    """The session's characters as ``OPENED`` lists them; a single avatar fills the frame."""
    if session.characters:
        return [c.to_json(i) for i, c in enumerate(session.characters)]
    one: dict[str, Any] = {"id": 0, "box": [0.0, 0.0, 1.0, 1.0]}
    mouth = session.describe().get("mouth_box")
    if mouth is not None:
        one["mouth_box"] = mouth
    return [one]
