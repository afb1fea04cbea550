"""``/v1/nodes/{name}/drain`` and ``/v1/nodes/{name}/eligibility``: the operator's say over
where new work goes (Nomad's node drain and eligibility).

The control is its own etcd key (``/theseus/control/<node>``), written through the
``Writer`` and read by the leader's reconciler, so an agent registering again never resets
it. The last write wins: both calls are idempotent and say the resulting state (the node's
``eligibility``).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException

from theseus.api.schemas import DrainRequest, EligibilityRequest, NodeInfo
from theseus.model.nodes import NodeControl
from theseus.server.context import ServerContext, context
from theseus.server.views import node_info

router = APIRouter(prefix="/v1/nodes", tags=["tasks and nodes"])


@router.post("/{name}/drain", response_model=NodeInfo)
async def drain(
    name: str, request: DrainRequest, ctx: ServerContext = Depends(context)
) -> NodeInfo:
    """``enable``: take no new tasks and move the node's tasks elsewhere, each replacement
    started before the task it replaces stops. ``enable: false``: eligible again."""
    control = NodeControl(schedulable=False, drain=True, updated_at=time.time())
    return await _set(ctx, name, control if request.enable else None)


@router.post("/{name}/eligibility", response_model=NodeInfo)
async def eligibility(
    name: str, request: EligibilityRequest, ctx: ServerContext = Depends(context)
) -> NodeInfo:
    """``eligible: false``: no new tasks, but those it runs stay (ends a drain too)."""
    control = NodeControl(schedulable=False, drain=False, updated_at=time.time())
    return await _set(ctx, name, None if request.eligible else control)


async def _set(ctx: ServerContext, name: str, control: NodeControl | None) -> NodeInfo:
    if name not in ctx.cache.state.nodes:
        raise HTTPException(404, f"no node {name!r}")
    await ctx.writer.set_node_control(name, control)
    return node_info(ctx.cache.state, name)
