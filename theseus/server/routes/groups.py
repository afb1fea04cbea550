"""``/v1/groups``: list, scale, restart and remove groups (service + label set)."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from theseus.api.rollouts import RestartRequest
from theseus.api.schemas import DeployResult, GroupList, ScaleRequest
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.state import ClusterState
from theseus.reconciler.deploy import GroupChangePlan, plan_removal, plan_restart, plan_scale
from theseus.server.context import ServerContext, context
from theseus.server.routes.deploy import changes_result
from theseus.server.wire import groups_body

router = APIRouter(prefix="/v1/groups", tags=["groups"])


# The longest GET /v1/groups holds the event loop between two turns. During a 50,000-task
# deploy every group has changed since the last poll and the whole answer takes 0.25-0.4 s at
# 500 groups: in one piece, that was most of the loop's late ticks (BENCHMARKS.md).
GROUPS_SLICE = 0.01  # seconds


@router.get("", response_model=GroupList)
async def list_groups(
    service: str | None = None, ctx: ServerContext = Depends(context)
) -> Response:
    """Every group (or one service's) with its progress. ``theseus deploy`` polls this while
    it follows a rollout: each group's entry is only recomputed after one of its tasks
    changed (``theseus.server.wire``). On the event loop, unlike the other reads that grow
    with the cluster: it is polled every half second during a deploy, and a snapshot and a
    worker thread at each poll cost more than the memoised answer (10,000 tasks on 1,000
    nodes ran about a second slower, BENCHMARKS.md). Instead it gives the loop a turn every
    ``GROUPS_SLICE``: each group's entry is whole and of the state as it was when it was
    made, and every entry is at least as new as the index the request waited for."""
    cache = ctx.cache
    wanted = [
        group_id
        for group_id, group in sorted(cache.state.groups.items())
        if service is None or group.service == service
    ]
    parts: list[str] = []
    turn_began = time.monotonic()
    for group_id in wanted:
        if time.monotonic() - turn_began > GROUPS_SLICE:
            await asyncio.sleep(0)
            turn_began = time.monotonic()
        # Read again after each turn: the cache may have changed, or replaced, its state.
        state = cache.state
        group = state.groups.get(group_id)
        if group is not None:  # removed meanwhile: left out, as a later poll would
            changed = cache.group_index.get(group_id, 0)
            tally = ctx.tallies.of(group_id)
            parts.append(
                ctx.wire.group_json(state, group_id, group, changed, cache.alive_index, tally)
            )
    ctx.wire.prune_groups(cache.state)
    return Response(groups_body(parts), media_type="application/json")


def parse_labels(raw: str | None) -> list[str] | None:
    """The ``labels`` query parameter: a JSON list of strings, or absent."""
    if raw is None:
        return None
    try:
        labels = json.loads(raw)
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise HTTPException(422, 'labels: must be a JSON list of strings, e.g. ["dev"]')
    return labels


def _groups_of(state: ClusterState, service: str) -> list[GroupRecord]:
    return [g for g in state.groups.values() if g.service == service]


def one_group(state: ClusterState, service: str, labels: list[str] | None) -> GroupRecord:
    """The group a request names: its labels, or the service's only group (404 / 409)."""
    groups = _groups_of(state, service)
    if labels is not None:
        key = GroupKey.of(service, labels)
        groups = [g for g in groups if g.group_key == key]
    if not groups:
        raise HTTPException(404, f"no group {service!r} with those labels")
    if len(groups) > 1:
        raise HTTPException(
            409, f"service {service!r} has {len(groups)} groups; say which with labels"
        )
    return groups[0]


@router.post("/{service}/scale", response_model=DeployResult)
async def scale(
    service: str, body: ScaleRequest, ctx: ServerContext = Depends(context)
) -> DeployResult:
    """Change only ``instances``: no task is restarted."""

    def planner(state: ClusterState) -> list[GroupChangePlan]:
        return [plan_scale(one_group(state, service, body.labels), body.instances, time.time())]

    return changes_result(await ctx.writer.apply_group_changes(planner))


@router.post("/{service}/restart", response_model=DeployResult)
async def restart(
    service: str, body: RestartRequest, ctx: ServerContext = Depends(context)
) -> DeployResult:
    """Replace every task of the group with a fresh one of the same spec, under its upgrade
    strategy (``minimum_health_capacity``, ``maximum_over_capacity``, health checks), by a
    deployment of kind ``restart``: Marathon's ``POST /v2/apps/{id}/restart``. The group's
    version gets a restart mark (``<digest>.r1``), kept in its history."""

    def planner(state: ClusterState) -> list[GroupChangePlan]:
        return [plan_restart(one_group(state, service, body.labels), time.time())]

    return changes_result(await ctx.writer.apply_group_changes(planner))


@router.delete("/{service}", response_model=DeployResult)
async def remove(
    service: str,
    labels: str | None = Query(None, description='JSON list, e.g. ["dev"]; omit for all groups'),
    ctx: ServerContext = Depends(context),
) -> DeployResult:
    """Remove one group (``labels``) or every group of the service; their tasks stop."""
    wanted = parse_labels(labels)

    def planner(state: ClusterState) -> list[GroupChangePlan]:
        if wanted is not None:
            return [plan_removal(GroupKey.of(service, wanted), state.groups)]
        groups = _groups_of(state, service)
        if not groups:
            raise HTTPException(404, f"no service {service!r}")
        return [plan_removal(g.group_key, state.groups) for g in groups]

    return changes_result(await ctx.writer.apply_group_changes(planner))
