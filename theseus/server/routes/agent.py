"""``/v1/agent``: what agents call: register, heartbeat, long-poll assignments, report."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from theseus.api.schemas import (
    Assignment,
    AssignmentList,
    HeartbeatAnswer,
    NodeRegistration,
    RegistrationAnswer,
    ReportBatch,
)
from theseus.model.state import ClusterState
from theseus.server.context import ServerContext, context
from theseus.server.views import node_info

router = APIRouter(prefix="/v1/agent", tags=["agents"])

MAX_WAIT = 60.0


@router.post("/register", response_model=RegistrationAnswer)
async def register(
    registration: NodeRegistration, ctx: ServerContext = Depends(context)
) -> RegistrationAnswer:
    writer = ctx.writer
    await writer.register_node(registration)
    return RegistrationAnswer(
        cluster_id=ctx.cluster_id,
        node=node_info(ctx.cache.state, registration.name),
        heartbeat_interval=writer.advised_interval(registration.name),
        liveness_timeout=float(writer.lease_ttl(registration.name)),
    )


@router.post("/{node}/heartbeat", response_model=HeartbeatAnswer)
async def heartbeat(node: str, ctx: ServerContext = Depends(context)) -> HeartbeatAnswer:
    timing = await ctx.writer.heartbeat(node)
    if timing is None:
        raise HTTPException(404, f"node {node!r} is not registered (or was declared lost)")
    return HeartbeatAnswer(heartbeat_interval=timing.interval, liveness_timeout=timing.ttl)


def _assignments(
    state: ClusterState, node: str, index: int, heartbeat_interval: float
) -> AssignmentList:
    return AssignmentList(
        index=index,
        heartbeat_interval=heartbeat_interval,
        tasks=[
            Assignment(
                task_id=task.id,
                service=task.service,
                labels=task.labels,
                group=task.group_key.key,
                version=task.version,
                desired=task.desired.value,
                spec=task.spec,
                host_ports=task.host_ports,
                attempt=task.attempt,
            )
            for task in state.tasks_on(node)
        ],
    )


@router.get("/{node}/assignments", response_model=AssignmentList)
async def assignments(
    node: str, index: int = 0, wait: float = 30.0, ctx: ServerContext = Depends(context)
) -> AssignmentList:
    """Every task assigned to ``node``. Blocks until that list changes after ``index``."""
    cache = ctx.cache
    await cache.wait_node(node, index, min(max(wait, 0.0), MAX_WAIT))
    current = cache.node_index.get(node, 0)
    interval = ctx.writer.advised_interval(node)
    return _assignments(cache.state, node, max(current, index), interval)


@router.post("/{node}/reports")
async def reports(
    node: str, batch: ReportBatch, ctx: ServerContext = Depends(context)
) -> dict[str, int]:
    written = await ctx.writer.record_reports(batch.reports)
    return {"accepted": len(batch.reports), "written": written}
