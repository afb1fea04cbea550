"""The request body size limit: a pure ASGI middleware that refuses a body over
``ServerConfig.max_request_bytes`` (``theseus server --max-request-bytes``) with 413 before
anything parses it.

Installed by ``theseus.server.app.create_app`` around every route. Two checks, so that neither a
declared nor an undeclared size gets through:

* a ``Content-Length`` over the limit is answered at once, before the body is read (a client
  that sent ``Expect: 100-continue`` does not even send it);
* a body without one (chunked, or a ``Content-Length`` that lies) is counted as it arrives; the
  read that crosses the limit raises ``BodyTooLarge``, an ``HTTPException`` so that the app's
  error handler answers it in the usual ``{"message", "details"}`` shape (FastAPI passes an
  ``HTTPException`` raised while it reads a body through unchanged). Whatever is left of the
  body is never read: the route had not parsed anything yet.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from theseus.server.asgi_errors import send_error

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
FLAG = "theseus server --max-request-bytes"
CLOSE = (b"connection", b"close")  # the rest of a refused body is not read


class BodyTooLarge(HTTPException):
    """The body grew over the limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int, size: int | None = None) -> str:
    got = f" ({size} bytes)" if size is not None else ""
    return f"request body too large{got}: at most {limit} bytes are accepted ({FLAG})"


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.limit:
            await refuse(send, too_large_message(self.limit, declared))
            return
        body = CountedBody(receive, self.limit)
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if body.cut_off:  # the rest of the body is not wanted: no keep-alive
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        try:
            await self.app(scope, body.receive, watched_send)
        except BodyTooLarge as exc:
            # Raised where no handler turned it into an answer (a route reading its body
            # outside FastAPI's own handling): answer it here, unless an answer has begun.
            if started:
                raise
            await refuse(send, str(exc.detail))


class CountedBody:
    """A request's body counted as it is read (``receive``): the read that crosses ``limit``
    raises ``BodyTooLarge``. Used by ``BodyLimit`` and by ``theseus.server.hot_door``."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0

    @property
    def cut_off(self) -> bool:
        """Whether the body grew over the limit (the rest of it was never read)."""
        return self.received > self.limit

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge(self.limit)
        return message


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, when it declares a valid one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses it; counting covers the rest
    return None


async def refuse(send: Send, message: str) -> None:
    """A 413 with ``message``, closing the connection."""
    await send_error(send, 413, message, headers=[CLOSE])
