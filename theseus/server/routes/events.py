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
from theseus.server.events.feed import AFTER_ALL, EventFeed, Gap
from theseus.server.events.keeper import history

router = APIRouter(tags=["events"])

HEARTBEAT = 15.0
SSE = "text/event-stream"


class Selection:
    """Which events a reader wants."""

    def __init__(self, topics: list[str], services: list[str]) -> None:
        self.topics = frozenset(topics)
        self.services = frozenset(services)

    def wants(self, event: Event) -> bool:
        if event.topic == STREAM:
            return True
        if self.topics and event.topic not in self.topics:
            return False
        return not self.services or event.service in self.services


def _frame(event: Event, line: bytes, sse: bool) -> bytes:
    if sse:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.type.encode(), line)
    return line + b"\n"


def reset_event(index: int, asked: int, now: float) -> Event:
    return Event(
        id=f"reset-{index}",
        index=index,
        time=now,
        topic=STREAM,
        type="reset",
        message=(
            f"events after index {asked} are no longer in this server's window, which starts "
            f"after index {index}: read the state again; the stream goes on from there"
        ),
        payload={"asked": asked, "start": index},
    )


def _heartbeat(index: int, now: float, sse: bool) -> bytes:
    if sse:
        return b": heartbeat %d\n\n" % index
    event = Event(id=f"heartbeat-{index}", index=index, time=now, topic=STREAM, type="heartbeat")
    return event.model_dump_json().encode() + b"\n"


async def _stream(
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
        first = next((i for i in feed.items() if i.event.time >= since), None)
        position = (first.position[0], first.position[1] - 1) if first else (feed.last, AFTER_ALL)
    while True:
        got = feed.read(position)
        if isinstance(got, Gap):
            reset = reset_event(got.index, position[0], time.time())
            yield _frame(reset, reset.model_dump_json().encode(), sse)
            position = (got.index, AFTER_ALL)
            continue
        if got:
            position = got[-1].position
            chunk = [_frame(i.event, i.line, sse) for i in got if selection.wants(i.event)]
            if chunk:
                yield b"".join(chunk)
                quiet_since = time.monotonic()
            continue
        if not follow:
            return
        if time.monotonic() - quiet_since >= HEARTBEAT:
            yield _heartbeat(position[0], time.time(), sse)
            quiet_since = time.monotonic()
        await feed.wait(HEARTBEAT - (time.monotonic() - quiet_since))


def _start(
    ctx: ServerContext, after: str | None, index: int | None, last_event_id: str | None
) -> tuple[int, int]:
    for given in (after, last_event_id):
        if given:
            position = event_position(given)
            if position is None and given.startswith(("reset-", "heartbeat-")):
                position = (int(given.partition("-")[2] or 0), AFTER_ALL)
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
