"""``RequestMetrics``: an ASGI middleware counting every HTTP request by route and status.

Installed outermost by ``theseus.server.app``, so it sees every answer, refusals of the
authentication middleware and of the body limit included. The route label is the route's
template (``/v1/agent/{node}/heartbeat``), never the raw path: one series per route, however
many nodes, tasks or services there are. The router leaves the matched route in the ASGI
scope; a request refused before routing (401, 403, 413) is labelled by the template of the
policy table that matched it (``theseus.server.policy.template_of``), and a path matching
no route at all by ``other``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

from theseus.server.policy import template_of

ASGIApp = Any
UNMATCHED = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestCounts:
    """The request counter and duration histogram, their children kept by label: ``labels()``
    costs more than the increment, and this runs on every heartbeat and report of every
    agent. Shared by ``RequestMetrics`` and ``theseus.server.hot_door``."""

    def __init__(self, requests: Counter, duration: Histogram) -> None:
        self._requests = requests
        self._duration = duration
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def note(self, method: str, template: str, status: int, seconds: float) -> None:
        key = (method, template, str(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._requests.labels(*key)
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers[key[:2]] = self._duration.labels(method, template)
        timer.observe(seconds)


class RequestMetrics:
    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self.app = app
        self._counts = counts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app answers 500

        async def noting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            self._note(scope, status, time.perf_counter() - started)

    def _note(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else UNMATCHED
        route = scope.get("route")
        template = getattr(route, "path", None)
        if template is None:
            template = template_of(method, scope["path"]) or UNMATCHED
        self._counts.note(method, template, status, seconds)
