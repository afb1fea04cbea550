"""How the agent waits for a server that is away, failing or too busy: backoff doubling from
``BACKOFF_FIRST`` to ``BACKOFF_MAX`` seconds, and ``retrying``, which the agent's registration
goes through (``theseus.agent.agent``; its other calls retry in ``Agent._call``, and its
reports in ``theseus.agent.reports``, with the same bounds)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from theseus.api.client import ApiError, ServerUnreachable

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


async def retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Retry while the server is away, failing (5xx) or too busy (429: after the time it
    said, with jitter, so that agents it turned away together do not come back together);
    another 4xx is a configuration error."""
    delay = BACKOFF_FIRST
    while True:
        wait = delay
        try:
            return await call()
        except ServerUnreachable as exc:
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        except ApiError as exc:
            if exc.status < 500 and exc.status != 429:
                raise
            if exc.retry_after is not None:
                wait = exc.retry_after * random.uniform(0.5, 1.5)
            log.warning(
                "%s: the server answered %s: %s; retrying in %.1fs",
                what,
                exc.status,
                exc.message,
                wait,
            )
        await asyncio.sleep(wait)
        delay = min(delay * 2, BACKOFF_MAX)
