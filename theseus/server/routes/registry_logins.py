"""Image registries' logins over HTTP (``theseus registry-login``, ``registry-logout``,
``registry-logins``), and the one route that hands a password out: to an agent, for its pulls.

* ``GET /v1/acl/registry-logins``: hosts and usernames (read scope), never a password.
* ``PUT /v1/acl/registry-logins/{host}``: store or replace a login (admin scope); the audit
  log records who did it and for which host (the path), never the body.
* ``DELETE /v1/acl/registry-logins/{host}``: forget it (admin scope).
* ``GET /v1/agent/{node}/registry-logins/{host}``: the login, password included, for the
  agent of ``node`` only, by its certificate (``theseus.server.policy``'s ``node`` rule); no
  API token reads it. On a development cluster (no TLS) the anonymous caller may, as it may
  do everything there. The password is opened here, and only here, from its sealed record
  (``theseus.security.sealing``); one this server cannot open (the CA was replaced since) is
  a 409 whose message the agent shows as the task's reason.

The writes are ``theseus.server.access_writes``'.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from theseus.api.access import (
    RegistryLoginCreate,
    RegistryLoginInfo,
    RegistryLoginList,
    RegistryLoginSecret,
    registry_host_problem,
)
from theseus.security.records import RegistryLogin
from theseus.security.sealing import SealError
from theseus.server.context import ServerContext, context
from theseus.server.routes.access import caller_of

router = APIRouter(tags=["access"])


def _info(record: RegistryLogin) -> RegistryLoginInfo:
    return RegistryLoginInfo(
        host=record.host,
        username=record.username,
        created_at=record.created_at,
        created_by=record.created_by,
    )


def _checked(host: str) -> str:
    problem = registry_host_problem(host)
    if problem is not None:
        raise HTTPException(422, f"host: {problem}")
    return host


def _unreadable(host: str, has_key: bool) -> str:
    if has_key:  # the record was sealed under another CA's key (the CA was replaced)
        return (
            f"the login for registry {host} cannot be read by this server (sealed with "
            f"another cluster CA): run theseus registry-login {host} again"
        )
    return (
        f"the login for registry {host} cannot be read by this server: it has no CA key "
        "(ca-key.pem in its --pki-dir) to open it"
    )


@router.get("/v1/acl/registry-logins", response_model=RegistryLoginList)
async def list_logins(ctx: ServerContext = Depends(context)) -> RegistryLoginList:
    records = sorted(ctx.cache.access.registry_logins.values(), key=lambda r: r.host)
    return RegistryLoginList(logins=[_info(r) for r in records])


@router.put("/v1/acl/registry-logins/{host}", response_model=RegistryLoginInfo)
async def set_login(
    host: str, body: RegistryLoginCreate, request: Request, ctx: ServerContext = Depends(context)
) -> RegistryLoginInfo:
    record = await ctx.access.set_registry_login(
        _checked(host), body.username, body.password, caller_of(request).name
    )
    return _info(record)


@router.delete("/v1/acl/registry-logins/{host}", response_model=RegistryLoginInfo)
async def remove_login(host: str, ctx: ServerContext = Depends(context)) -> RegistryLoginInfo:
    return _info(await ctx.access.remove_registry_login(_checked(host)))


@router.get("/v1/agent/{node}/registry-logins/{host}", response_model=RegistryLoginSecret)
async def agent_login(
    node: str, host: str, ctx: ServerContext = Depends(context)
) -> RegistryLoginSecret:
    record = ctx.cache.access.registry_logins.get(_checked(host))
    if record is None:
        raise HTTPException(404, f"no login is stored for registry {host!r}")
    try:
        password = record.open_password(ctx.access.login_key)
    except SealError:
        # 409, never a 500: the agent makes this the task's reason, word for word.
        raise HTTPException(409, _unreadable(host, ctx.access.login_key is not None)) from None
    return RegistryLoginSecret(host=record.host, username=record.username, password=password)
