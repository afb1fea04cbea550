"""Controlled rollouts: ``/v1/deployments`` (list, show, cancel) and a group's spec history
(``/v1/groups/{service}/versions``) and rollback (``/v1/groups/{service}/rollback``).

Thin: the decisions are ``theseus.reconciler.deployments``'s; the writer commits them.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Query

from theseus.api.rollouts import DeploymentList, RollbackRequest, VersionInfo, VersionList
from theseus.api.schemas import DeployResult
from theseus.model.deployments import DeploymentRecord, new_deployment_id
from theseus.model.state import ClusterState
from theseus.reconciler.deploy import GroupChangePlan
from theseus.reconciler.deployments import (
    DeploymentError,
    GroupWrite,
    cancel_writes,
    previous_version,
    rollback_change,
)
from theseus.server.context import ServerContext, context
from theseus.server.routes.deploy import changes_result
from theseus.server.routes.groups import one_group, parse_labels

router = APIRouter(tags=["deployments"])


@router.get("/v1/deployments", response_model=DeploymentList)
async def list_deployments(
    all: bool = False, service: str | None = None, ctx: ServerContext = Depends(context)
) -> DeploymentList:
    """Running deployments; ``all=true`` adds the finished ones kept (newest first)."""
    found = [
        d
        for d in ctx.cache.state.deployments.values()
        if (all or d.running) and (service is None or d.service == service)
    ]
    found.sort(key=lambda d: (d.started_at, d.id), reverse=True)
    return DeploymentList(deployments=found)


@router.get("/v1/deployments/{deployment_id}", response_model=DeploymentRecord)
async def get_deployment(
    deployment_id: str, ctx: ServerContext = Depends(context)
) -> DeploymentRecord:
    found = ctx.cache.state.deployments.get(deployment_id)
    if found is None:
        raise HTTPException(404, f"no deployment {deployment_id!r}")
    return found


@router.delete("/v1/deployments/{deployment_id}", response_model=DeploymentRecord)
async def cancel_deployment(
    deployment_id: str,
    force: bool = Query(False, description="Only mark it cancelled: no rollback"),
    ctx: ServerContext = Depends(context),
) -> DeploymentRecord:
    """Cancel a running deployment: its group goes back to the version before it (a new
    deployment of kind ``rollback``), or with ``force`` stays where it is."""

    def planner(state: ClusterState) -> tuple[DeploymentRecord, list[GroupWrite]]:
        try:
            write = cancel_writes(state, deployment_id, force, time.time(), new_deployment_id)
        except DeploymentError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return write.deployments[0], [write]  # the cancelled one comes first

    return await ctx.writer.apply_writes(planner)


@router.get("/v1/groups/{service}/versions", response_model=VersionList)
async def versions(
    service: str,
    labels: str | None = Query(None, description='JSON list, e.g. ["dev"]'),
    ctx: ServerContext = Depends(context),
) -> VersionList:
    """The group's kept spec versions, newest first."""
    state = ctx.cache.state
    group = one_group(state, service, parse_labels(labels))
    kept = state.versions.get(group.group_key.key, {})
    return VersionList(
        service=service,
        labels=list(group.labels),
        current=group.version_number,
        versions=[
            VersionInfo(
                number=v.number,
                digest=v.digest,
                created_at=v.created_at,
                deployment=v.deployment,
                current=v.number == group.version_number,
                images=v.spec.images,
                instances=v.spec.instances,
                spec=v.spec,
            )
            for _, v in sorted(kept.items(), reverse=True)
        ],
    )


@router.post("/v1/groups/{service}/rollback", response_model=DeployResult)
async def rollback(
    service: str, body: RollbackRequest, ctx: ServerContext = Depends(context)
) -> DeployResult:
    """Give the group the spec of an earlier version again (recorded as a new version, by a
    deployment of kind ``rollback``); by default the newest one with another spec."""

    def planner(state: ClusterState) -> list[GroupChangePlan]:
        group = one_group(state, service, body.labels)
        try:
            number = body.version or previous_version(state, group)
            return [rollback_change(state, group, number, time.time(), "rollback")]
        except DeploymentError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    # Like a deploy: its dependencies are checked, and it records a version and deployment.
    return changes_result(await ctx.writer.apply_group_changes(planner))
