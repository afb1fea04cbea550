"""``GET /v1/events``: the cluster's event stream (``theseus events``).

Newline-delimited JSON by default, server-sent events with ``Accept: text/event-stream``.
Where it starts:

* ``after=<event id>`` (or SSE's ``Last-Event-ID`` header): just after that event;
* ``index=N``: after every event of etcd revision N;
* ``since=<unix time>``: the kept events from then on (``theseus.server.events.keeper``:
  notable ones and audits from before this server's window, everything within it);
* none: from now.

Filters: ``topic`` and ``service``, each repeatable (none: all). ``follow=false`` ends the
answer once it has caught up; otherwise a heartbeat goes out every ``HEARTBEAT`` seconds
without events (NDJSON: a ``stream``/``heartbeat`` line; SSE: a comment). A position older than
this server's window is answered with a ``stream``/``reset`` event first, never a silent gap:
the client then knows to read the state again.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from theseus.api.events import STREAM, TOPICS, Event, event_position
from theseus.server.context import ServerContext, context
from theseus.server.events import metrics
from theseus.server.events.feed import (
    AFTER_ALL,
    EventFeed,
    Gap,
    Item,
    Selection,
    reset_event,
)
from theseus.server.events.keeper import history

router = APIRouter(tags=["events"])

HEARTBEAT = 15.0
SSE = "text/event-stream"


def _frame(event: Event | Item, line: bytes, sse: bool) -> bytes:
    if sse:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.type.encode(), line)
    return line + b"\n"


def _heartbeat(position: tuple[int, int], now: float, sse: bool) -> bytes:
    """A heartbeat says where the reader is: its id resumes the stream from there."""
    index, n = position
    if sse:
        return b": heartbeat %d\n\n" % index
    where = f"{index}" if n == AFTER_ALL else f"{index}-{n}"
    event = Event(id=f"heartbeat-{where}", index=index, time=now, topic=STREAM, type="heartbeat")
    return event.model_dump_json().encode() + b"\n"


def position_of(given: str) -> tuple[int, int] | None:
    """Where an id resumes: after that event; after every event of an index (a plain
    number, or the index of a reset or a heartbeat)."""
    if given.isdigit():
        return (int(given), AFTER_ALL)
    kind, _, rest = given.partition("-")
    if kind in ("reset", "heartbeat"):
        return (int(rest), AFTER_ALL) if rest.isdigit() else event_position(rest)
    return event_position(given)


async def _stream(
    ctx: ServerContext,
    start: tuple[int, int],
    since: float | None,
    selection: Selection,
    follow: bool,
    sse: bool,
) -> AsyncIterator[bytes]:
    metrics.STREAM_CLIENTS.inc()
    try:
        async for chunk in _chunks(ctx, start, since, selection, follow, sse):
            yield chunk
    finally:
        metrics.STREAM_CLIENTS.dec()


async def _chunks(
    ctx: ServerContext,
    start: tuple[int, int],
    since: float | None,
    selection: Selection,
    follow: bool,
    sse: bool,
) -> AsyncIterator[bytes]:
    feed: EventFeed = ctx.events
    position = start
    quiet_since = time.monotonic()
    if since is not None:
        kept = await history(ctx.store, since, feed.start)
        chunk = [_frame(e, e.model_dump_json().encode(), sse) for e in kept if selection.wants(e)]
        if chunk:
            yield b"".join(chunk)
        first = next((i for i in feed.items() if i.time >= since), None)
        position = (first.position[0], first.position[1] - 1) if first else (feed.last, AFTER_ALL)
    while not feed.closed:
        got = feed.read(position)
        if isinstance(got, Gap):
            reset = reset_event(got.index, position[0], time.time())
            yield _frame(reset, reset.model_dump_json().encode(), sse)
            position = (got.index, AFTER_ALL)
            continue
        if got:
            position = got[-1].position
            chunk = [_frame(i, i.line, sse) for i in got if selection.wants(i)]
            if chunk:
                yield b"".join(chunk)
                quiet_since = time.monotonic()
            continue
        if not follow:
            return
        if time.monotonic() - quiet_since >= HEARTBEAT:
            yield _heartbeat(position, time.time(), sse)
            quiet_since = time.monotonic()
        await feed.wait(HEARTBEAT - (time.monotonic() - quiet_since))


def _start(
    ctx: ServerContext, after: str | None, index: int | None, last_event_id: str | None
) -> tuple[int, int]:
    for given in (after, last_event_id):
        if given:
            position = position_of(given)
            if position is None:
                raise HTTPException(422, f"after: {given!r} is not an event id (INDEX-N)")
            return position
    if index is not None:
        return (index, AFTER_ALL)
    return (max(ctx.events.last, ctx.cache.revision), AFTER_ALL)


@router.get("/v1/events", response_model=None)
async def events(
    request: Request,
    topic: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    service: Annotated[list[str], Query()] = [],  # noqa: B006
    index: Annotated[int | None, Query(ge=0)] = None,
    after: str | None = None,
    since: float | None = None,
    follow: bool = True,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    ctx: ServerContext = Depends(context),
) -> StreamingResponse:
    unknown = [t for t in topic if t not in TOPICS]
    if unknown:
        raise HTTPException(
            422,
            f"topic: unknown {', '.join(map(json.dumps, unknown))} (known: {', '.join(TOPICS)})",
        )
    sse = accept is not None and SSE in accept
    start = _start(ctx, after, index, last_event_id)
    resumed = after is not None or index is not None or last_event_id is not None
    since = None if resumed else since
    stream = _stream(ctx, start, since, Selection(topic, service), follow, sse)
    media = SSE if sse else "application/x-ndjson"
    return StreamingResponse(stream, media_type=media, headers={"Cache-Control": "no-cache"})
