"""``/v1/agent``: what agents call: register, heartbeat, long-poll assignments, report.

With TLS, each agent acts for its own node only (``theseus.server.policy``'s ``node`` rule,
checked by its certificate before the route runs): it registers under its certificate's
name, and its reports about tasks assigned to other nodes are dropped."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from theseus.api.schemas import (
    AssignmentList,
    HeartbeatAnswer,
    HeartbeatBody,
    NodeRegistration,
    RegistrationAnswer,
    ReportBatch,
)
from theseus.server.admission import Overloaded
from theseus.server.auth import Caller
from theseus.server.context import ServerContext, context, etcd_judged_context
from theseus.server.views import node_info

router = APIRouter(prefix="/v1/agent", tags=["agents"])

MAX_WAIT = 60.0


@router.post("/register", response_model=RegistrationAnswer)
async def register(
    registration: NodeRegistration,
    request: Request,
    ctx: ServerContext = Depends(etcd_judged_context),
) -> RegistrationAnswer:
    caller = _agent(request)
    if caller is not None and caller.name != registration.name:
        raise HTTPException(
            403, f"this certificate belongs to node {caller.name!r}, not {registration.name!r}"
        )
    writer = ctx.writer
    try:
        async with ctx.admission.registration():
            await writer.register_node(registration)
    except Overloaded as exc:
        # Heartbeats go first: the nodes already registered are kept alive, this one waits.
        raise HTTPException(
            429, exc.reason, headers={"Retry-After": str(exc.retry_after)}
        ) from None
    if registration.name not in ctx.cache.state.nodes:
        # Written, but this server's view did not catch up within the writer's wait (5 s: an
        # overloaded server, as with 1,000 agents registering at once): a 503 the agent
        # retries, not a KeyError's 500.
        raise HTTPException(503, "the registration is not visible on this server yet: retry")
    return RegistrationAnswer(
        cluster_id=ctx.cluster_id,
        node=node_info(ctx.cache.state, registration.name),
        heartbeat_interval=writer.advised_interval(registration.name),
        liveness_timeout=float(writer.lease_ttl(registration.name)),
    )


@router.post("/{node}/heartbeat", response_model=HeartbeatAnswer)
async def heartbeat(
    node: str,
    body: HeartbeatBody | None = None,
    ctx: ServerContext = Depends(etcd_judged_context),
) -> HeartbeatAnswer:
    """Refresh the node's liveness; ``body.usage`` (what its tasks use) is kept in this
    server's memory for ``theseus nodes``, never written to etcd."""
    timing = await ctx.writer.heartbeat(node)
    if timing is None:
        ctx.node_usage.pop(node, None)
        ctx.metrics.heartbeat_unknown.inc()
        raise HTTPException(404, f"node {node!r} is not registered (or was declared lost)")
    if body is not None and body.usage is not None:
        ctx.node_usage[node] = body.usage
    ctx.metrics.heartbeat_ok.inc()
    return HeartbeatAnswer(heartbeat_interval=timing.interval, liveness_timeout=timing.ttl)


@router.get("/{node}/assignments", response_model=AssignmentList)
async def assignments(
    node: str,
    index: int = 0,
    wait: float = Query(30.0, allow_inf_nan=False),  # NaN would spin the wait's loop
    ctx: ServerContext = Depends(context),
) -> Response:
    """Every task assigned to ``node``. Blocks until that list changes after ``index``.

    Answered from memoised JSON (``theseus.server.wire``): a deploy wakes a node once per
    change to its tasks, and 1,000 nodes each rebuilding their lists of pydantic models
    cost seconds."""
    cache = ctx.cache
    await cache.wait_node(node, index, min(max(wait, 0.0), MAX_WAIT))
    current = cache.node_index.get(node, 0)
    interval = ctx.writer.advised_interval(node)
    body = ctx.wire.assignments_json(cache.state, node, max(current, index), interval)
    return Response(body, media_type="application/json")


@router.post("/{node}/reports")
async def reports(
    node: str, batch: ReportBatch, request: Request, ctx: ServerContext = Depends(context)
) -> dict[str, int]:
    accepted = batch.reports
    if _agent(request) is not None:
        tasks = ctx.cache.state.tasks
        accepted = [
            r for r in accepted if (task := tasks.get(r.task_id)) is None or task.node == node
        ]
    written = await ctx.writer.record_reports(accepted)
    return {"accepted": len(batch.reports), "written": written}


def _agent(request: Request) -> Caller | None:
    """The calling agent, when it authenticated with its certificate (None on a development
    cluster, where agents are anonymous)."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) and caller.kind == "agent" else None
