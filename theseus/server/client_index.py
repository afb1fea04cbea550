"""Read-your-writes by index, for clients that keep one (Consul's and Nomad's ``X-*-Index``).

A write is committed to etcd at some revision; this server's cache applies it a moment later,
and under load (a 50,000-task deploy at 5,000 nodes) seconds later. Until then a read from
the cache would not show it. There are two ways to keep a client from reading an older state
than one it has written or seen:

* **The server waits** after the write, until its cache has applied it, and only then answers
  the write. That is what a client gets that says nothing (a browser, ``curl``, a Marathon
  client): simple, and a small deploy during a big one waits as long as the cache lags.
* **The client keeps an index.** Every answer carries ``X-Theseus-Index``: the revision the
  write was committed at, or for anything else the revision this server's view had. A client
  that sends ``X-Theseus-Index`` (its highest so far; ``0`` at first) gets its writes answered
  as soon as etcd has them, and any request it sends with index N is handled once this
  server's view has applied revision N, on whichever server it lands. If the view does not
  get there within ``INDEX_WAIT`` seconds, the answer is 503 (another server may be further
  along). ``theseus.api.client.ServerClient``, which the CLI uses, keeps one.

``ClientIndex`` (a pure ASGI middleware, installed by ``theseus.server.app``) reads the header
and adds the answer's (``theseus.server.hot_door`` does the same for the agents' hot routes);
``wait_for_client_index`` is called by the routes' ``context`` dependency;
``theseus.server.writes.Writer`` asks ``client_keeps_index`` and tells ``note_written``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from theseus.api.schemas import INDEX_HEADER
from theseus.server.asgi_errors import send_error
from theseus.store.cache import StateCache

HEADER = INDEX_HEADER
HEADER_KEY = HEADER.lower().encode()
INDEX_WAIT = 5.0  # seconds a request waits for this server's view to reach its index


@dataclass
class Exchange:
    """One request's index: the one it asked for (None: the client keeps none) and the
    revision a write it made was committed at."""

    asked: int | None
    written: int | None = None

    def answered(self, revision: Callable[[], int | None]) -> int | None:
        """The index a successful answer carries: the revision the request wrote at, else
        this server's view's (``revision``; None before it has one)."""
        return self.written if self.written is not None else revision()


_current: ContextVar[Exchange | None] = ContextVar("theseus_client_index", default=None)


def client_keeps_index() -> bool:
    """Whether the request being handled came with an index (its client reads by index, so
    a write need not wait for this server's view)."""
    exchange = _current.get()
    return exchange is not None and exchange.asked is not None


def note_written(revision: int) -> None:
    """The request being handled wrote at ``revision``: its answer carries it."""
    exchange = _current.get()
    if exchange is not None:
        exchange.written = max(revision, exchange.written or 0)


async def wait_for_client_index(cache: StateCache) -> None:
    """Until this server's view has applied the index the request asked for; 503 after
    ``INDEX_WAIT`` seconds."""
    exchange = _current.get()
    if exchange is None or not exchange.asked:
        return
    if not await cache.wait_for_revision(exchange.asked, timeout=INDEX_WAIT):
        raise HTTPException(
            503,
            f"this server's view has not reached index {exchange.asked} ({HEADER}) within "
            f"{INDEX_WAIT:.0f}s (it is at {cache.revision}); try again, or another server",
            headers={"Retry-After": "1"},
        )


class ClientIndex:
    """Read ``X-Theseus-Index`` from each request and put one on each answer (see the module
    docstring). ``revision``: this server's view's revision (None before it has one)."""

    def __init__(self, app: ASGIApp, revision: Callable[[], int | None]) -> None:
        self.app = app
        self.revision = revision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            exchange = Exchange(asked=asked_index(scope))
        except ValueError:
            await refuse(send)
            return

        async def indexed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                index = exchange.answered(self.revision)
                if index is not None:
                    headers = [*message.get("headers", []), (HEADER_KEY, str(index).encode())]
                    message = {**message, "headers": headers}
            await send(message)

        with handling(exchange):
            await self.app(scope, receive, indexed_send)


@contextmanager
def handling(exchange: Exchange) -> Iterator[None]:
    """``exchange`` is the index of the request handled within (``client_keeps_index``,
    ``note_written``, ``wait_for_client_index``)."""
    token = _current.set(exchange)
    try:
        yield
    finally:
        _current.reset(token)


def asked_index(scope: Scope) -> int | None:
    """The request's ``X-Theseus-Index`` (None: it sent none); ``ValueError`` if it is not a
    revision."""
    for name, value in scope["headers"]:
        if name == HEADER_KEY:
            asked = int(value)
            if asked < 0:
                raise ValueError(asked)
            return asked
    return None


BAD_INDEX = f"{HEADER} must be a revision: a whole number, 0 or more"


async def refuse(send: Send) -> None:
    """The 400 answering an index that is not a revision."""
    await send_error(send, 400, BAD_INDEX, details=[{"path": HEADER, "message": BAD_INDEX}])
