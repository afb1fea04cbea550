"""An error answer sent straight through ASGI, in the API's usual ``{"message", "details"}``
shape: for the middlewares that refuse a request before any route runs (``auth``: 401/403,
``body_limit``: 413, ``client_index``: 400), where FastAPI's error handlers cannot answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


async def send_error(
    send: Any,
    status: int,
    message: str,
    details: Sequence[dict[str, str]] = (),
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps({"message": message, "details": list(details)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
