"""The dashboard's error pages: a browser that asks for a page that is not there, or that
this server cannot answer now, gets a page in the dashboard's frame saying so, with a way
back, instead of the API's JSON error. Scripts (fragments, the stream), static files and API
clients keep the JSON answer. Called by ``theseus.server.app``'s HTTP error handler.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import HTMLResponse

from theseus.server.ui.common import render

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Bad request",
    429: "Busy",
    503: "Not available right now",
}
_HINTS = {
    403: "Your token does not allow this. Sign in with another one to do it.",
    404: "It may have been removed, or the link is wrong.",
    429: "This server is busy. Try again in a few seconds.",
    503: (
        "This server cannot vouch for its view of the cluster at the moment (it may have lost "
        "etcd). Reload in a few seconds, or open the dashboard on another server."
    ),
}


def wants_page(request: Request) -> bool:
    """A browser navigating to a dashboard page (not its script's fragment requests, its
    stream or its static files; not an API client, which does not accept HTML)."""
    path = request.url.path
    if path != "/" and not path.startswith("/ui/"):
        return False
    if path.startswith(("/ui/static/", "/ui/stream")) or path.endswith("/logs"):
        return False
    if request.headers.get("x-fragment") == "1":
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    """The error as a page, with the status it stands for (and the error's headers, such
    as ``Retry-After``)."""
    page = render(
        request,
        "error.html",
        None,  # no session lookup: the error may be the session's own
        live=False,
        title=_TITLES.get(status, f"Error {status}"),
        message=message,
        hint=_HINTS.get(status, ""),
    )
    page.status_code = status
    page.headers.update(headers or {})
    return page
