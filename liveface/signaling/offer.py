"""``POST /offer``: read and check a WebRTC offer, open a session, answer.

Everything that can be refused cheaply is refused first (the token, the body, the SDP), before a
slot is taken or a portrait decoded. Every bad request is a 4xx JSON error.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import BodyPartReader, web

from liveface.engines.base import SceneRequest
from liveface.errors import BadInputError, UnauthorizedError
from liveface.runtime.runtime import SessionRequest
from liveface.signaling.join import JoinRequest

#: Deepest JSON nesting accepted in an offer (a real one nests 2 levels).
MAX_JSON_DEPTH = 32
#: Fields of an offer besides the portrait, in a multipart form.
TEXT_FIELD_LIMIT = 256 * 1024


def authorize(request: web.Request, token: str | None) -> None:
    """Refuse a request without ``Authorization: Bearer <token>`` when a token is configured.

    Raises:
        UnauthorizedError: missing or wrong token.
    """
    if token is None:
        return
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        raise UnauthorizedError("this server needs an access token: Authorization: Bearer <token>")


def _depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, counted without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` that refuses deep nesting instead of recursing into a crash."""
    if _depth(text) > MAX_JSON_DEPTH:
        raise BadInputError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise BadInputError(f"{what} is not valid JSON: {e}") from e


async def _fields(request: web.Request) -> dict[str, Any]:
    if not request.content_type.startswith("multipart/"):
        try:
            text = await request.text()
        except UnicodeDecodeError as e:
            raise BadInputError("body is not UTF-8 text") from e
        fields = parse_json(text, "body")
        if not isinstance(fields, dict):
            raise BadInputError('body must be a JSON object with "sdp" and "type"')
        return fields
    fields = {}
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadInputError("nested multipart bodies are not accepted")
            if part.name == "portrait":
                fields["portrait"] = await part.read()
            elif part.name:
                data = await part.read_chunk(TEXT_FIELD_LIMIT + 1)
                if len(data) > TEXT_FIELD_LIMIT:
                    raise BadInputError(f"form field {part.name!r} is too long")
                fields[part.name] = data.decode("utf-8")
    except (ValueError, AssertionError, UnicodeDecodeError) as e:
        # aiohttp raises these for a missing boundary, a truncated body or a bad part header.
        raise BadInputError(f"the multipart body cannot be read: {e}") from e
    return fields


def _field(fields: dict[str, Any], name: str, form: bool) -> Any:
    """A JSON-valued field: as sent in a JSON body, or parsed from a form's text."""
    value = fields.get(name)
    return parse_json(value, f'"{name}"') if form and isinstance(value, str) else value


def _scene(fields: dict[str, Any], form: bool) -> SceneRequest | None:
    """``"characters": n`` (faces found left to right) or ``"boxes": [[x0, y0, x1, y1], ...]``."""
    count, boxes = _field(fields, "characters", form), _field(fields, "boxes", form)
    if count is None and boxes is None:
        return None
    if boxes is not None and not isinstance(boxes, list):
        raise BadInputError('"boxes" must be a list of [x0, y0, x1, y1] fractions')
    return SceneRequest(count=count, boxes=tuple(boxes or ()))


def _join(fields: dict[str, Any], form: bool) -> JoinRequest | None:
    """``"join": token`` (and ``"character"``?): this peer joins an existing scene."""
    token, character = fields.get("join"), _field(fields, "character", form)
    if token is None:
        if character is not None:
            raise BadInputError('"character" goes with "join" (the scene\'s join token)')
        return None
    if any(k in fields for k in ("portrait", "prompt", "options", "characters", "boxes")):
        raise BadInputError("a joining offer takes the scene as it is: send only sdp, type, join")
    return JoinRequest(token, character)


async def read_offer(
    request: web.Request,
) -> tuple[str, str, SessionRequest, JoinRequest | None]:
    """Parse ``{"sdp", "type", "prompt"?, "portrait"? (data URL), "options"?, "characters"? |
    "boxes"?}`` or the same as a multipart form; or a joining offer ``{"sdp", "type", "join",
    "character"?}``. The portrait stays encoded: it is decoded only once a slot is held.

    Raises:
        BadInputError: anything malformed, with what to fix.
    """
    fields = await _fields(request)
    sdp, kind = fields.get("sdp"), fields.get("type")
    if not isinstance(sdp, str) or not isinstance(kind, str):
        raise BadInputError('"sdp" and "type" must be strings')
    prompt = fields.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadInputError('"prompt" must be a string')
    portrait = fields.get("portrait")
    if portrait is not None and not isinstance(portrait, str | bytes | bytearray):
        raise BadInputError('"portrait" must be an image (a data URL, or a file in a form)')
    engine_options = fields.get("options") or {}
    if isinstance(engine_options, str):
        engine_options = parse_json(engine_options, '"options"')
    if not isinstance(engine_options, dict):
        raise BadInputError('"options" must be an object')
    raw = portrait.encode() if isinstance(portrait, str) else portrait
    form = request.content_type.startswith("multipart/")
    join = _join(fields, form)
    scene = _scene(fields, form)
    request_ = SessionRequest(bytes(raw) if raw else None, prompt, engine_options, scene)
    return sdp, kind, request_, join
