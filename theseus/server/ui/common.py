"""What every dashboard route shares: who is looking (``viewer``: a session, a token sent by
a script, or a development cluster's anonymous admin), the templates, and rendering a page
whole or only its live part (``X-Fragment``, asked by the page's script when something
changed). Used by ``pages``, ``actions`` and ``live``."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from theseus.security.tokens import Scope, allows
from theseus.server.auth import ANONYMOUS, Caller
from theseus.server.context import ServerContext
from theseus.server.ui import session
from theseus.server.ui.views import age

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("theseus.server.ui", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["age"] = lambda t: age(time.time() - t) if t else "-"
_ENV.filters["q"] = lambda s: quote(str(s), safe="")
_ENV.filters["clock"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"

# Content-Security-Policy of every page: its own scripts, styles and fetches only.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def content_policy(peers: list[str]) -> str:
    """``CSP``, letting the page's script ask the other servers whether they answer (the
    only requests it makes beyond this server: ``static/ui.js``, moving a tab)."""
    if not peers:
        return CSP
    return CSP.replace("connect-src 'self'", "connect-src 'self' " + " ".join(peers))


def peers_of(request: Request) -> list[str]:
    """The other servers' URLs (``theseus server --peer``), where a tab goes when this server
    stops answering."""
    ctx = getattr(request.app.state, "ctx", None)
    return list(ctx.config.peers) if ctx is not None else []


class NotSignedIn(Exception):
    """No session: a page redirects to the sign-in form, a script call gets 401."""

    def __init__(self, page: bool) -> None:
        super().__init__("sign in first")
        self.page = page


@dataclass(frozen=True)
class Viewer:
    name: str
    can_write: bool
    csrf: str
    signed_in: bool  # by a session (it may sign out)

    @classmethod
    def of_caller(cls, caller: Caller, csrf: str) -> Viewer:
        write = caller is ANONYMOUS or allows(list(caller.scopes), Scope.WRITE)
        return cls(caller.name, write, csrf, signed_in=False)


def viewer(request: Request, ctx: ServerContext, page: bool = True) -> Viewer:
    """Who is looking, or ``NotSignedIn``. The auth middleware has let the request through
    (the dashboard's routes are public to it) and named the caller it recognised."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None and (caller is ANONYMOUS or caller.kind == "token"):
        return Viewer.of_caller(caller, session.csrf_token(None, None))
    cookie = request.cookies.get(session.COOKIE)
    record = session.session_of(ctx.cache.access, cookie, time.time())
    if record is None:
        raise NotSignedIn(page and request.method == "GET")
    # The audit log names the token behind the session (the middleware reads this back).
    request.state.caller = Caller("token", record.name, record.id, tuple(record.scopes))
    write = allows(list(record.scopes), Scope.WRITE)
    return Viewer(record.name, write, session.csrf_token(record, cookie), signed_in=True)


def check_write(request: Request, who: Viewer, form: dict[str, str]) -> None:
    """A write needs the write scope, this server as its origin and the session's CSRF
    token (a form field or the ``X-CSRF-Token`` header): 403 otherwise, nothing done."""
    if not who.can_write:
        raise HTTPException(403, f"token {who.name!r} may only read: this needs the write scope")
    if not session.same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise HTTPException(403, "cross-site request refused (Origin is another site)")
    sent = form.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(sent, who.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")


def render(
    request: Request, template: str, who: Viewer | None, live: bool = True, **data: Any
) -> HTMLResponse:
    """The page, or only its live part when its script asks (``X-Fragment: 1``). ``live``
    False: a page the stream must not refresh (a form being filled in, a plan shown)."""
    fragment = request.headers.get("x-fragment") == "1"
    # Told only to a signed-in viewer (the sign-in form and error pages need no other server).
    peers = peers_of(request) if who is not None else []
    html = _ENV.get_template(template).render(
        layout="fragment.html" if fragment else "base.html",
        who=who,
        peers=peers,
        live=live and who is not None,
        path=request.url.path,
        flash=request.query_params.get("done"),
        error=request.query_params.get("error"),
        **data,
    )
    return HTMLResponse(
        html,
        headers={
            "content-security-policy": content_policy(peers),
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
        },
    )


def back(to: str, done: str | None = None, error: str | None = None) -> RedirectResponse:
    """After an action: back to the page (Post/Redirect/Get) saying what happened."""
    query = f"done={quote(done)}" if done else f"error={quote(error or '')}"
    sep = "&" if "?" in to else "?"
    return RedirectResponse(f"{to}{sep}{query}", status_code=303)
