"""The service registry over HTTP: ``GET /cleanup`` (the original's repair endpoint), and the
reads that agents proxy for the containers' guestutils and watchers.

Reads come from the server's cache of ``/services/``, i.e. exactly what etcd holds.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from theseus.api.schemas import CleanupResult, RegistryService, RegistryWatch
from theseus.server.context import ServerContext, context
from theseus.server.views import registry_instances, registry_service

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


@router.get("/v1/registry/watch", response_model=RegistryWatch)
async def watch(
    services: str,
    index: int = 0,
    wait: float = Query(30.0, allow_inf_nan=False),  # NaN would spin the wait's loop
    ctx: ServerContext = Depends(context),
) -> RegistryWatch:
    """Instance names per service; blocks until one of ``services`` changes after ``index``.

    The answer's ``index`` is the revision the answer was read at: every change after it
    wakes the next call, so a watcher that resumes with it misses nothing. ``services`` names
    at least one service (comma-separated): an empty list is a 400, as on the agents'
    discovery socket, rather than a watch of nothing or of everything.
    """
    names = [name for name in (s.strip() for s in services.split(",")) if name]
    if not names:
        raise HTTPException(400, "services: give one or more service names, comma-separated")
    cache = ctx.cache
    if index > 0:
        await cache.wait_services(names, index, min(max(wait, 0.0), MAX_WAIT))
    state = cache.state
    return RegistryWatch(
        index=max(index, state.revision),
        services={name: registry_instances(state, name) for name in names},
    )


@router.get("/v1/registry/{service}", response_model=RegistryService)
async def service_entries(service: str, ctx: ServerContext = Depends(context)) -> RegistryService:
    """Every group of ``service`` with its config and its registered containers."""
    return registry_service(ctx.cache.state, service)
