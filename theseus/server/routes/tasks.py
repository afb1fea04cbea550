"""``/v1/tasks`` and ``/v1/nodes``: read-only views, and task logs proxied from the agent."""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from theseus.api.schemas import NodeInfo, NodeList, TaskInfo, TaskList
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord
from theseus.server.agent_logs import LogsUnavailable, open_task_logs
from theseus.server.context import ServerContext, context
from theseus.server.views import node_info, task_info

router = APIRouter(tags=["tasks and nodes"])

MAX_PAGE = 10_000  # tasks per page at most, when a page is asked for
PageKey = tuple[str, float, str]  # a task's place in the list: service, creation, id


@router.get("/v1/tasks", response_model=TaskList)
async def list_tasks(
    service: str | None = None,
    node: str | None = None,
    all: bool = False,
    limit: int | None = Query(None, ge=1, le=MAX_PAGE),
    after: str | None = None,
    ctx: ServerContext = Depends(context),
) -> Response:
    """Tasks meant to run (and those still stopping); ``all=true`` adds recent history.
    Ordered by service, creation time and id. ``limit``: at most that many, with ``next``, the
    ``after`` that asks for the ones that follow (null after the last page); pages stay
    whole and in order while tasks come and go between them, as a Kubernetes list's
    ``continue`` does. Put together in a worker thread, over a snapshot: at 50,000 tasks the
    whole list takes a second or more, which the event loop (every heartbeat) would
    otherwise wait for."""
    start = None if after is None else _page_key(after)
    state = ctx.cache.snapshot()

    def answer() -> str:
        listed, last = page_of_tasks(state, service, node, all, start, limit)
        following = None if last is None else _page_token(last)
        # Sent as is (``TaskList`` describes it in the OpenAPI document): validating 10,000
        # models would cost a second more.
        return ctx.wire.tasks_json(state, listed, following)

    return Response(await asyncio.to_thread(answer), media_type="application/json")


def page_of_tasks(
    state: ClusterState,
    service: str | None,
    node: str | None,
    include_stopped: bool,
    start: PageKey | None,
    limit: int | None,
) -> tuple[list[TaskRecord], PageKey | None]:
    """The tasks ``GET /v1/tasks`` lists, after ``start`` and at most ``limit`` of them (pure),
    and the place of the last one when more follow."""
    candidates = state.tasks_on(node) if node is not None else state.tasks.values()
    keyed = _keyed(state, candidates, service, include_stopped, start)
    if limit is None:
        return [task for _, task in sorted(keyed)], None
    # The page's tasks and one more, to tell whether another page follows: a heap of
    # ``limit`` instead of sorting every task for each page. (Places are unique: the tasks
    # themselves are never compared.)
    listed = heapq.nsmallest(limit + 1, keyed)
    if len(listed) <= limit:
        return [task for _, task in listed], None
    return [task for _, task in listed[:limit]], listed[limit - 1][0]


def _keyed(
    state: ClusterState,
    candidates: Iterable[TaskRecord],
    service: str | None,
    include_stopped: bool,
    start: PageKey | None,
) -> Iterator[tuple[PageKey, TaskRecord]]:
    """The tasks to list after ``start``, each with its place."""
    for task in candidates:
        if service is not None and task.service != service:
            continue
        place = (task.service, task.created_at, task.id)
        if start is not None and place <= start:
            continue
        if not include_stopped and task.desired is Desired.STOP and state.task_state(task).terminal:
            continue
        yield place, task


def _page_token(key: PageKey) -> str:
    """The ``after`` of the page that follows the task with this key: the key itself, as
    opaque text (it stays valid when that task is gone by then)."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _page_key(token: str) -> PageKey:
    try:
        service, created_at, task_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(service, str) and isinstance(task_id, str):
            return service, float(created_at), task_id
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    message = "not a page token: pass the 'next' of the page before, unchanged"
    raise RequestValidationError(
        [{"loc": ("query", "after"), "msg": message, "type": "value_error"}]
    )


@router.get("/v1/tasks/{task_id}", response_model=TaskInfo)
async def get_task(task_id: str, ctx: ServerContext = Depends(context)) -> TaskInfo:
    state = ctx.cache.state
    task = state.tasks.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    return task_info(state, task)


@router.get("/v1/tasks/{task_id}/logs")
async def task_logs(
    task_id: str,
    follow: bool = False,
    tail: int | None = None,
    container: str | None = None,
    ctx: ServerContext = Depends(context),
) -> StreamingResponse:
    """The task's stdout and stderr, streamed from the agent of its node (``container``: only
    that member of a pod)."""
    state = ctx.cache.state
    task = state.tasks.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    node = state.nodes.get(task.node) if task.node else None
    if node is None:
        raise HTTPException(409, f"task {task_id} has not been placed on a node yet")
    try:
        stream = await open_task_logs(node, task_id, follow, tail, container, ctx.agent_tls)
    except LogsUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return StreamingResponse(stream, media_type="text/plain; charset=utf-8")


@router.get("/v1/nodes", response_model=NodeList)
async def list_nodes(ctx: ServerContext = Depends(context)) -> Response:
    """Every node, with what runs on it: put together in a worker thread, over a snapshot
    (5,000 nodes took half a second)."""
    state, usage = ctx.cache.snapshot(), dict(ctx.node_usage)

    def answer() -> str:
        nodes = [node_info(state, n, usage.get(n)) for n in sorted(state.nodes)]
        return NodeList(nodes=nodes).model_dump_json()

    return Response(await asyncio.to_thread(answer), media_type="application/json")


@router.get("/v1/nodes/{name}", response_model=NodeInfo)
async def get_node(name: str, ctx: ServerContext = Depends(context)) -> NodeInfo:
    state = ctx.cache.state
    if name not in state.nodes:
        raise HTTPException(404, f"no node {name!r}")
    return node_info(state, name, ctx.node_usage.get(name))
