"""The service registry over HTTP: ``GET /cleanup`` (the original's repair endpoint), and the
reads that agents proxy for the containers' guestutils and watchers.

Reads come from the server's cache of ``/services/``, i.e. exactly what etcd holds.
"""

from __future__ import annotations

import json
from collections import defaultdict

from fastapi import APIRouter, Depends

from theseus.api.schemas import (
    CleanupResult,
    ContainerEntry,
    RegistryGroup,
    RegistryService,
    RegistryWatch,
)
from theseus.model import registry
from theseus.model.state import ClusterState
from theseus.server.context import ServerContext, context

router = APIRouter(tags=["registry"])

MAX_WAIT = 60.0


@router.get("/cleanup", response_model=CleanupResult)
async def cleanup(ctx: ServerContext = Depends(context)) -> CleanupResult:
    """Rebuild the registry from task state: re-add missing entries, remove stale ones, and
    report what changed. Safe to call at any time (the leader does the same continuously)."""
    diff = await ctx.writer.rebuild_registry()
    return CleanupResult(
        added=sorted(diff.added), removed=sorted(diff.deletes), updated=sorted(diff.updated)
    )


def _instances(state: ClusterState, service: str) -> list[str]:
    names = []
    for key in state.registry:
        if registry.service_of(key) != service:
            continue
        parsed = registry.parse_key(key)
        if parsed is not None and parsed[1] is not None:
            names.append(parsed[1])
    return sorted(names)


@router.get("/v1/registry/watch", response_model=RegistryWatch)
async def watch(
    services: str,
    index: int = 0,
    wait: float = 30.0,
    ctx: ServerContext = Depends(context),
) -> RegistryWatch:
    """Instance names per service; blocks until one of ``services`` changes after ``index``.

    The answer's ``index`` is the revision the answer was read at: every change after it
    wakes the next call, so a watcher that resumes with it misses nothing.
    """
    names = [name for name in (s.strip() for s in services.split(",")) if name]
    cache = ctx.cache
    if index > 0:
        await cache.wait_services(names, index, min(max(wait, 0.0), MAX_WAIT))
    state = cache.state
    return RegistryWatch(
        index=max(index, state.revision),
        services={name: _instances(state, name) for name in names},
    )


@router.get("/v1/registry/{service}", response_model=RegistryService)
async def service_entries(service: str, ctx: ServerContext = Depends(context)) -> RegistryService:
    """Every group of ``service`` with its config and its registered containers."""
    state = ctx.cache.state
    configs: dict[tuple[str, ...], dict[str, object]] = {}
    containers: dict[tuple[str, ...], list[ContainerEntry]] = defaultdict(list)
    for key, value in state.registry.items():
        if registry.service_of(key) != service:
            continue
        parsed = registry.parse_key(key)
        if parsed is None:
            continue
        group, task_id = parsed
        try:
            decoded = json.loads(value)
            if task_id is None:
                configs[group.labels] = dict(decoded)
            else:
                containers[group.labels].append(ContainerEntry.model_validate(decoded))
        except ValueError:
            continue  # a hand-written bogus value: the leader removes it shortly
    groups = [
        RegistryGroup(
            labels=list(labels),
            config=configs.get(labels, {}),
            containers=sorted(containers.get(labels, []), key=lambda c: c.instance_name),
        )
        for labels in sorted(set(configs) | set(containers))
    ]
    return RegistryService(service=service, index=state.revision, groups=groups)
