"""``/v1/tasks/{id}/stats`` and ``/v1/stats``: tasks' metrics, relayed from their agents
(``theseus.server.agent_stats``); nothing of them is kept on the server or in etcd."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from theseus.api.schemas import StatsList, TaskStats
from theseus.server.agent_stats import StatsUnavailable, latest_stats, task_stats
from theseus.server.context import ServerContext, context

router = APIRouter(tags=["tasks and nodes"])


@router.get("/v1/tasks/{task_id}/stats", response_model=TaskStats)
async def get_task_stats(
    task_id: str,
    since: float | None = Query(None, allow_inf_nan=False),
    limit: int | None = Query(None, ge=1),
    ctx: ServerContext = Depends(context),
) -> Response:
    """The task's recent samples (about an hour is kept, one per the agent's stats interval),
    oldest first: CPU (cores used, throttling), memory (usage, working set, RSS, cache,
    limit), OOM kills, processes, network; ``since``: only newer than that (epoch seconds);
    ``limit``: at most that many, the newest."""
    state = ctx.cache.state
    task = state.tasks.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    node = state.nodes.get(task.node) if task.node else None
    if node is None:
        raise HTTPException(409, f"task {task_id} has not been placed on a node yet")
    params: dict[str, str] = {}
    if since is not None:
        params["since"] = repr(since)
    if limit is not None:
        params["limit"] = str(limit)
    try:
        body = await task_stats(node, task_id, params, ctx.agent_tls)
    except StatsUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return Response(body, media_type="application/json")


@router.get("/v1/stats", response_model=StatsList)
async def list_stats(
    service: str | None = None, ctx: ServerContext = Depends(context)
) -> StatsList:
    """The latest sample of every task (of ``service``) on every ready node holding one,
    asked of their agents at once (``theseus top``)."""
    state = ctx.cache.state
    wanted = {
        task.id: task
        for task in state.tasks.values()
        if (service is None or task.service == service) and task.node is not None
    }
    names = {task.node for task in wanted.values() if task.node in state.alive}
    nodes = [
        state.nodes[name] for name in sorted(names) if name is not None and name in state.nodes
    ]
    tasks, unreachable = await latest_stats(nodes, ctx.agent_tls)
    chosen = [TaskStats.model_validate(t) for t in tasks if t.get("task_id") in wanted]
    chosen.sort(key=lambda t: (t.service, t.task_id))
    return StatsList(tasks=chosen, unreachable=unreachable)
