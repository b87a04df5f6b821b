"""Every HTTP error as JSON ``{"error": {"code", "message", "retryable"}}``, and a quiet log.

Our own errors map to statuses by type; aiohttp's (unknown route, wrong method, too large) keep
their status and headers but get the same JSON body. A client's mistake never logs a traceback:
aiohttp's protocol-level errors (malformed HTTP) go to debug logging in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from liveface.errors import (
    AvatarError,
    BadInputError,
    CapacityError,
    JoinRefusedError,
    NoFaceError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AvatarError], int]] = [
    (CapacityError, 503),
    (UnauthorizedError, 401),
    (JoinRefusedError, 403),
    (NoFaceError, 422),
    (BadInputError, 400),
]


def status_for(error: AvatarError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(code: str, message: str, retryable: bool = False) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "retryable": retryable}}


def error_response(error: AvatarError, status: int | None = None) -> web.Response:
    status = status_for(error) if status is None else status
    body = error_body(error.code, str(error), error.retryable)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except AvatarError as e:
        if status_for(e) >= 500:
            log.exception("%s %s failed", request.method, request.path)
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = "too_large" if e.status == 413 else f"http_{e.status}"
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        body = error_body(code, e.reason if e.status != 413 else f"request too large: {e.text}")
        return web.json_response(body, status=e.status, headers=headers)


class ClientErrorFilter(logging.Filter):
    """Turns aiohttp's tracebacks for malformed requests into one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            log.debug("malformed request (%s): %s", type(exc).__name__, exc.message)
            return False
        return True


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorFilter` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())
