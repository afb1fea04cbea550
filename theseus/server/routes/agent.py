"""``/v1/agent``: what agents call: register, heartbeat, long-poll assignments, report.

With TLS, each agent acts for its own node only (``theseus.server.policy``'s ``node`` rule,
checked by its certificate before the route runs): it registers under its certificate's
name, and its reports about tasks assigned to other nodes are dropped.

``router`` (FastAPI) has the registration. The routes each agent calls over and over, its
heartbeat, its assignments' long-poll and its reports, are most of the server's requests in
a deploy; they are plain Starlette routes (``HOT_ROUTES``, first in the app: see
``theseus.server.plain_routes`` for why), and ``described`` declares them for
``/openapi.json``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import Field, TypeAdapter
from starlette.routing import Route

from theseus.api.schemas import (
    AssignmentList,
    HeartbeatAnswer,
    HeartbeatBody,
    NodeRegistration,
    RegistrationAnswer,
    ReportAnswer,
    ReportBatch,
)
from theseus.server.admission import Overloaded
from theseus.server.auth import Caller
from theseus.server.context import ServerContext, context, etcd_judged_context
from theseus.server.heartbeats import POLL_WAIT_MAX
from theseus.server.plain_routes import body_of, json_answer, query_value
from theseus.server.views import node_info

PREFIX = "/v1/agent"
router = APIRouter(prefix=PREFIX, tags=["agents"])

MAX_WAIT = POLL_WAIT_MAX  # seconds: the longest an assignments long-poll is held
# An agent's request that waited this long for its turn is first asked whether its agent is
# still there (the question costs the loop a little, so not every request is asked).
ABANDON_CHECK_AFTER = 1.0
# The status of an answer no one reads: the agent closed the connection (nginx's "client
# closed request"). It shows in ``theseus_api_requests`` by status.
ABANDONED = 499


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


# -- the hot routes: plain Starlette routes (``theseus.server.plain_routes``) -----------------

_INDEX = TypeAdapter(int)
_WAIT = TypeAdapter(Annotated[float, Field(allow_inf_nan=False)])  # NaN would spin the wait


async def heartbeat(request: Request) -> Response:
    """The node was heard: answered once etcd has it (``theseus.server.liveness``); the
    body's ``usage`` (what its tasks use) is kept in this server's memory for ``theseus
    nodes``, never written to etcd."""
    node = request.path_params["node"]
    ctx = await etcd_judged_context(request)
    raw = await request.body()
    body = body_of(HeartbeatBody, raw) if raw.strip() not in (b"", b"null") else None
    timing = await ctx.writer.heartbeat(node)
    if timing is None:
        ctx.node_usage.pop(node, None)
        ctx.metrics.heartbeat_unknown.inc()
        raise HTTPException(404, f"node {node!r} is not registered (or was declared lost)")
    if body is not None and body.usage is not None:
        ctx.node_usage[node] = body.usage
    ctx.metrics.heartbeat_ok.inc()
    interval, ttl = timing.interval, float(timing.ttl)
    return json_answer({"ok": True, "heartbeat_interval": interval, "liveness_timeout": ttl})


async def assignments(request: Request) -> Response:
    """Every task assigned to the node. Blocks until that list changes after ``index``.

    Answered from memoised JSON (``theseus.server.wire``): a deploy wakes a node once per
    change to its tasks, and 1,000 nodes each rebuilding their lists of pydantic models
    cost seconds."""
    node = request.path_params["node"]
    ctx = await context(request)
    index = query_value(request, "index", _INDEX, 0)
    wait = query_value(request, "wait", _WAIT, 30.0)
    cache = ctx.cache
    await cache.wait_node(node, index, min(max(wait, 0.0), MAX_WAIT))
    queued = time.monotonic()
    async with ctx.agent_turns.turn():
        if await _abandoned(request, queued):
            return Response(status_code=ABANDONED)
        current = cache.node_index.get(node, 0)
        interval = ctx.writer.advised_interval(node)
        poll_wait = ctx.writer.advised_poll_wait()
        body = ctx.wire.assignments_json(
            cache.state, node, max(current, index), interval, poll_wait
        )
    return Response(body, media_type="application/json")


async def reports(request: Request) -> Response:
    node = request.path_params["node"]
    ctx = await context(request)
    raw = await request.body()
    queued = time.monotonic()
    async with ctx.agent_turns.turn():
        if await _abandoned(request, queued):
            return Response(status_code=ABANDONED)
        batch = body_of(ReportBatch, raw)
        accepted = batch.reports
        if _agent(request) is not None:
            tasks = ctx.cache.state.tasks
            accepted = [
                r for r in accepted if (task := tasks.get(r.task_id)) is None or task.node == node
            ]
        unknown: list[str] = []
        statuses = ctx.writer.decide_reports(accepted, unknown)
    metrics = ctx.metrics
    if len(accepted) < len(batch.reports):
        metrics.reports_of_other_nodes.inc(len(batch.reports) - len(accepted))
    if unknown:
        metrics.reports_of_unknown_tasks.inc(len(unknown))
    metrics.reports_unchanged.inc(len(accepted) - len(unknown) - len(statuses))
    written = await ctx.writer.write_reports(statuses)
    metrics.reports_written.inc(written)
    return json_answer({"accepted": len(batch.reports), "written": written})


HOT_ROUTES = [
    Route(f"{PREFIX}/{{node}}/heartbeat", heartbeat, methods=["POST"], include_in_schema=False),
    Route(f"{PREFIX}/{{node}}/assignments", assignments, methods=["GET"], include_in_schema=False),
    Route(f"{PREFIX}/{{node}}/reports", reports, methods=["POST"], include_in_schema=False),
]


# -- what /openapi.json says of them (``plain_routes.DescribedApp``); never called ----------

described = APIRouter(prefix=PREFIX, tags=["agents"])


@described.post("/{node}/heartbeat", response_model=HeartbeatAnswer)
def _describe_heartbeat(node: str, body: HeartbeatBody | None = None) -> None:
    """Refresh the node's liveness (404: not registered, or declared lost)."""


@described.get("/{node}/assignments", response_model=AssignmentList)
def _describe_assignments(
    node: str, index: int = 0, wait: float = Query(30.0, allow_inf_nan=False)
) -> None:
    """Every task assigned to the node; blocks (at most ``wait`` seconds, 300 at most) until
    that list changes after ``index``. The answer's ``poll_wait`` is the wait to ask for next
    (a big cluster's agents poll less often), null: the agent's own."""


@described.post("/{node}/reports", response_model=ReportAnswer)
def _describe_reports(node: str, batch: ReportBatch) -> None:
    """Record the node's reports of its tasks' states."""


async def _abandoned(request: Request, queued: float) -> bool:
    """Whether the agent gave up on this request while it waited for its turn (its client
    timed out, 10 s, and closed the connection). Its work is then left undone: the agent sends
    the same again, and at 5,000 nodes doing both doubled the work of an overloaded server
    (14,216 report batches in a deploy that needs 10,000)."""
    if time.monotonic() - queued < ABANDON_CHECK_AFTER:
        return False
    return await request.is_disconnected()


def _agent(request: Request) -> Caller | None:
    """The calling agent, when it authenticated with its certificate (None on a development
    cluster, where agents are anonymous)."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) and caller.kind == "agent" else None
