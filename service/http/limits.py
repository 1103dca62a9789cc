"""ASGI middleware that bounds what one HTTP request may cost the worker.

:class:`BodyLimit` refuses a body over ``max_bytes`` with 413 before it is
buffered: a declared ``Content-Length`` is checked before anything is read,
and a chunked body is counted as it arrives and refused at the first byte
over the limit, so memory stays bounded whatever the client sends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "BodyLimit"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    """Raised from ``receive`` when the body passes the limit; caught by the middleware."""


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11) refuses a malformed Content-Length itself
    return None


class BodyLimit:
    """413 for any request whose body is over ``max_bytes``, before the body is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"Content-Length {declared}")
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started:  # the app answered before reading the whole body: nothing to add
                return
            await self._refuse(scope, receive, send, f"chunked, {received} bytes so far")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        logger.warning(
            "%s %s refused: body (%s) is over the limit", scope["method"], scope["path"], size
        )
        response = JSONResponse(
            {"error": f"request body is over the limit of {self.max_bytes} bytes ({size})"},
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
