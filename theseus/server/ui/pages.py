"""The dashboard's pages (GET): the overview (also what a browser gets at ``/``), a group,
nodes, a task, deployments, events, the registry and the deploy form; the sign-in form and
the page's own script and style. Each reads the cache's state once and renders the view
model of ``theseus.server.ui.views``. Included by ``theseus.server.ui.router``."""

from __future__ import annotations

import time
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from theseus.server.context import ServerContext, context
from theseus.server.ui import session, views
from theseus.server.ui.common import NotSignedIn, Viewer, render, viewer

router = APIRouter(include_in_schema=False)

_STATIC = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
_STATIC_BODIES: dict[str, bytes] = {}


async def who(request: Request, ctx: ServerContext = Depends(context)) -> Viewer:
    return viewer(request, ctx)


@router.get("/")
async def root(request: Request) -> Response:
    """The original's dashboard URL: a browser (``Accept: text/html``) goes to the
    dashboard; an API client gets the 404 it always got."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/ui/", status_code=303)
    raise HTTPException(404, "Not Found")


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise HTTPException(404, "Not Found")
    body = _STATIC_BODIES.get(name)
    if body is None:
        body = resources.files("theseus.server.ui").joinpath("static", name).read_bytes()
        _STATIC_BODIES[name] = body
    return Response(body, media_type=_STATIC[name], headers={"cache-control": "max-age=300"})


@router.get("/ui/login")
async def login_form(request: Request) -> Response:
    return render(request, "login.html", None, problem=None)


@router.post("/ui/login")
async def login(request: Request, ctx: ServerContext = Depends(context)) -> Response:
    if not session.same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise HTTPException(403, "cross-site request refused (Origin is another site)")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    text = (form.get("token") or [""])[0]
    try:
        _, cookie = session.sign_in(ctx.cache.access, text, time.time())
    except ValueError as exc:
        refused = render(request, "login.html", None, problem=str(exc))
        refused.status_code = 401
        return refused
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(
        session.COOKIE,
        cookie,
        max_age=session.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response


class _Memo:
    """What the pages keep between requests, per server: each group's counts, and the
    registry's grouping until the registry changes."""

    def __init__(self, ctx: ServerContext) -> None:
        cache = ctx.cache
        self.counts = views.CountsMemo(cache.group_index, lambda: cache.alive_index)
        self._registry: tuple[tuple[int, int], views.Registered] | None = None

    def registered(self, ctx: ServerContext) -> views.Registered:
        state = ctx.cache.state
        key = (max(ctx.cache.registry_index.values(), default=0), len(state.registry))
        if self._registry is None or self._registry[0] != key:
            self._registry = (key, views.registry_groups(state))
        return self._registry[1]


def _memo(request: Request, ctx: ServerContext) -> _Memo:
    """This server's (the app's state: one per app, torn down with it)."""
    memo: _Memo | None = getattr(request.app.state, "ui_memo", None)
    if memo is None:
        memo = request.app.state.ui_memo = _Memo(ctx)
    return memo


def _page(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() else 1


@router.get("/ui/")
async def overview(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    state = ctx.cache.state
    events = views.event_rows(ctx.events.items()[-50:])
    found = views.overview(state, events, _page(request), _memo(request, ctx).counts)
    return render(request, "overview.html", who, **found)


@router.get("/ui/group")
async def group(
    request: Request, id: str, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    found = views.group_page(ctx.cache.state, id, time.time(), _page(request))
    if found is None:
        raise HTTPException(404, f"no group {id!r}")
    return render(request, "group.html", who, **found)


@router.get("/ui/nodes")
async def nodes(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    found = views.nodes_page(ctx.cache.state, ctx.node_usage, time.time(), _page(request))
    return render(request, "nodes.html", who, **found)


@router.get("/ui/tasks/{task_id}")
async def task(
    request: Request,
    task_id: str,
    ctx: ServerContext = Depends(context),
    who: Viewer = Depends(who),
) -> Response:
    found = views.task_page(ctx.cache.state, task_id, time.time())
    if found is None:
        raise HTTPException(404, f"no task {task_id!r}")
    events = views.event_rows(ctx.events.items(), about=task_id)
    return render(request, "task.html", who, task=found, events=events[-20:][::-1])


@router.get("/ui/deployments")
async def deployments(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    rows = views.deployments(ctx.cache.state, running_only=False)
    return render(request, "deployments.html", who, deployments=rows[:200])


@router.get("/ui/events")
async def events(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    wanted = request.query_params.get("q", "").strip()
    rows = views.event_rows(ctx.events.items(), text=wanted)
    return render(request, "events.html", who, events=rows[-200:][::-1], q=wanted)


@router.get("/ui/registry")
async def registry(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    found = views.registry_page(_memo(request, ctx).registered(ctx), _page(request))
    return render(request, "registry.html", who, **found)


@router.get("/ui/deploy")
async def deploy_form(
    request: Request, ctx: ServerContext = Depends(context), who: Viewer = Depends(who)
) -> Response:
    return render(request, "deploy.html", who, live=False, document="", plan=None, problems=[])


def install_sign_in_redirect(app: object) -> None:
    """A page without a session goes to the sign-in form; a script call gets 401."""
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if exc.page and request.headers.get("x-fragment") != "1":
            return RedirectResponse("/ui/login", status_code=303)
        return Response("sign in first", status_code=401, media_type="text/plain")
