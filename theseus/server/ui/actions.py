"""The dashboard's actions (POST, each confirmed in the page first): scale, restart, remove
and roll back a group, cancel a deployment, drain a node or switch its eligibility, plan and apply a
deploy document. Each checks the write scope, the origin and the CSRF token
(``common.check_write``), then does what the API's route does by calling that route's own
function (same writer, same refusals), and goes back to its page saying what happened.
Included by ``theseus.server.ui.router``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from theseus.api.rollouts import RestartRequest, RollbackRequest
from theseus.api.schemas import DeployResult, DrainRequest, EligibilityRequest, ScaleRequest
from theseus.model.groups import GroupKey
from theseus.model.spec import SpecError
from theseus.server.access_writes import AccessDenied
from theseus.server.context import ServerContext, context
from theseus.server.routes import deploy as deploy_route
from theseus.server.routes import deployments as deployments_route
from theseus.server.routes import groups as groups_route
from theseus.server.routes import node_control
from theseus.server.ui.common import Viewer, back, check_write, render, viewer
from theseus.server.writes import ConflictError, TooLargeError

router = APIRouter(include_in_schema=False)


async def _form(request: Request) -> dict[str, str]:
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


async def _acting(
    request: Request, ctx: ServerContext = Depends(context)
) -> tuple[Viewer, dict[str, str]]:
    who = viewer(request, ctx)
    form = await _form(request)
    check_write(request, who, form)
    return who, form


def _message(exc: Exception) -> str:
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc)


async def _do(to: str, done: str, action: Callable[[], Awaitable[object]]) -> Response:
    try:
        await action()
    except (HTTPException, SpecError, ConflictError, TooLargeError, AccessDenied) as exc:
        return back(to, error=_message(exc))
    return back(to, done=done)


def _group(form: dict[str, str]) -> GroupKey:
    try:
        return GroupKey.parse(form.get("id", ""))
    except (ValueError, TypeError):
        raise HTTPException(422, "id: not a group") from None


def _group_page(key: GroupKey) -> str:
    return f"/ui/group?id={quote(key.key, safe='')}"


@router.post("/ui/group/scale")
async def scale(
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting), ctx: ServerContext = Depends(context)
) -> Response:
    _, form = acting
    key = _group(form)
    raw = form.get("instances", "")
    if not raw.isdigit() or int(raw) > 100_000:
        return back(_group_page(key), error="instances: a whole number from 0 to 100000")
    body = ScaleRequest(instances=int(raw), labels=list(key.labels))
    return await _do(
        _group_page(key),
        f"scaled {key.service} to {raw}",
        lambda: groups_route.scale(key.service, body, ctx),
    )


@router.post("/ui/group/restart")
async def restart(
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting), ctx: ServerContext = Depends(context)
) -> Response:
    _, form = acting
    key = _group(form)
    body = RestartRequest(labels=list(key.labels))
    return await _do(
        _group_page(key),
        f"restarting {key.service}: every task is replaced, under its upgrade strategy",
        lambda: groups_route.restart(key.service, body, ctx),
    )


@router.post("/ui/group/remove")
async def remove(
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting), ctx: ServerContext = Depends(context)
) -> Response:
    _, form = acting
    key = _group(form)
    labels = json.dumps(list(key.labels))
    return await _do(
        "/ui/", f"removed {key.key}", lambda: groups_route.remove(key.service, labels, ctx)
    )


@router.post("/ui/group/rollback")
async def rollback(
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting), ctx: ServerContext = Depends(context)
) -> Response:
    _, form = acting
    key = _group(form)
    raw = form.get("version", "")
    body = RollbackRequest(labels=list(key.labels), version=int(raw) if raw.isdigit() else None)
    return await _do(
        _group_page(key),
        f"rolling {key.service} back to version {raw or 'the previous one'}",
        lambda: deployments_route.rollback(key.service, body, ctx),
    )


@router.post("/ui/deployments/{deployment_id}/cancel")
async def cancel(
    deployment_id: str,
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting),
    ctx: ServerContext = Depends(context),
) -> Response:
    _, form = acting
    to = form.get("back", "/ui/deployments")
    to = to if to.startswith("/ui/") else "/ui/deployments"
    return await _do(
        to,
        f"cancelled deployment {deployment_id}",
        lambda: deployments_route.cancel_deployment(deployment_id, False, ctx),
    )


@router.post("/ui/nodes/{name}/drain")
async def drain(
    name: str,
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting),
    ctx: ServerContext = Depends(context),
) -> Response:
    _, form = acting
    enable = form.get("enable") == "1"
    return await _do(
        "/ui/nodes",
        f"{'draining' if enable else 'stopped draining'} {name}",
        lambda: node_control.drain(name, DrainRequest(enable=enable), ctx),
    )


@router.post("/ui/nodes/{name}/eligibility")
async def eligibility(
    name: str,
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting),
    ctx: ServerContext = Depends(context),
) -> Response:
    _, form = acting
    eligible = form.get("eligible") == "1"
    return await _do(
        "/ui/nodes",
        f"{name} is {'eligible' if eligible else 'ineligible'}",
        lambda: node_control.eligibility(name, EligibilityRequest(eligible=eligible), ctx),
    )


@router.post("/ui/deploy")
async def deploy(
    request: Request,
    acting: tuple[Viewer, dict[str, str]] = Depends(_acting),
    ctx: ServerContext = Depends(context),
) -> Response:
    """``action=plan``: the dry run's answer shown under the document; ``apply``: deployed,
    and the answer shown the same way (each group's change and deployment)."""
    who, form = acting
    document = form.get("document", "")
    dry_run = form.get("action") != "apply"
    problems: list[dict[str, str]] = []
    result: DeployResult | None = None
    try:
        result = await deploy_route.apply_document(document.encode(), dry_run, ctx)
    except SpecError as exc:
        problems = exc.errors
    except (HTTPException, ConflictError, TooLargeError) as exc:
        problems = [{"path": "", "message": _message(exc)}]
    response = render(
        request,
        "deploy.html",
        who,
        live=False,
        document=document,
        plan=result.model_dump() if result is not None else None,
        applied=not dry_run and result is not None,
        problems=problems,
    )
    if problems:
        response.status_code = 422
    return response
