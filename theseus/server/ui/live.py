"""What keeps a dashboard tab live: ``GET /ui/stream``, one server-sent-events stream per
tab that says "something changed" (the cache's revision) whenever the cache applies a
change, at most every ``COALESCE`` seconds, with a ping every ``PING`` seconds of quiet; the
page then fetches its live part again. And ``GET /ui/tasks/{id}/logs``, the task's logs
through the same relay as ``GET /v1/tasks/{id}/logs`` for a signed-in browser, and
``GET /ui/tasks/{id}/charts``, its CPU and memory from ``GET /v1/tasks/{id}/stats``.

The stream ends when the server stops (the event window is released): the browser's
EventSource reconnects, or the page polls. Included by ``theseus.server.ui.router``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from theseus.api.schemas import TaskStats, TaskStatsSample
from theseus.server.context import ServerContext, context
from theseus.server.routes import stats as stats_route
from theseus.server.routes import tasks as tasks_route
from theseus.server.ui import views
from theseus.server.ui.common import render, viewer

router = APIRouter(include_in_schema=False)

PING = 15.0
COALESCE = 0.25  # changes closer than this make one message: a deploy is many revisions
CHECK = 1.0  # how often a quiet stream looks whether the server is stopping
CHART_SAMPLES = 120  # the task page's charts: the latest samples
MIB = 1024 * 1024


async def changes(ctx: ServerContext, request: Request) -> AsyncIterator[bytes]:
    cache = ctx.cache
    yield b"retry: 1000\n\n"
    sent = -1
    quiet_since = time.monotonic()
    while not ctx.events.closed:
        revision = cache.revision
        if revision != sent:
            sent = revision
            quiet_since = time.monotonic()
            yield f"id: {revision}\nevent: changed\ndata: {revision}\n\n".encode()
            await asyncio.sleep(COALESCE)
            continue
        if time.monotonic() - quiet_since >= PING:
            quiet_since = time.monotonic()
            yield b": ping\n\n"
        if await request.is_disconnected():
            return
        await cache.wait_changed(CHECK)


@router.get("/ui/stream")
async def stream(request: Request, ctx: ServerContext = Depends(context)) -> Response:
    viewer(request, ctx, page=False)
    return StreamingResponse(
        changes(ctx, request),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


@router.get("/ui/tasks/{task_id}/logs")
async def logs(
    request: Request,
    task_id: str,
    follow: bool = False,
    tail: int = 500,
    ctx: ServerContext = Depends(context),
) -> Response:
    viewer(request, ctx, page=False)
    return await tasks_route.task_logs(task_id, follow, max(1, min(tail, 5000)), None, ctx)


@router.get("/ui/tasks/{task_id}/charts")
async def charts(request: Request, task_id: str, ctx: ServerContext = Depends(context)) -> Response:
    """The task's CPU and memory over its last samples (the observability issue's, relayed
    from its agent as ``GET /v1/tasks/{id}/stats``), as SVG sparklines: a fragment the task
    page loads every few seconds."""
    viewer(request, ctx, page=False)
    problem: str | None = None
    samples: list[TaskStatsSample] = []
    try:
        answer = await stats_route.get_task_stats(task_id, None, CHART_SAMPLES, ctx)
        samples = TaskStats.model_validate_json(bytes(answer.body)).samples
    except HTTPException as exc:
        problem = str(exc.detail)
    cpu = views.chart([s.cpu_cores for s in samples])
    memory = views.chart(
        [
            s.memory_working_set_bytes / MIB if s.memory_working_set_bytes is not None else None
            for s in samples
        ]
    )
    return render(
        request,
        "charts.html",
        None,
        live=False,
        cpu=cpu,
        memory=memory,
        problem=problem,
        width=views.CHART_WIDTH,
        height=views.CHART_HEIGHT,
    )
