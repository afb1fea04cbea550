"""``HotDoor``: the agents' heartbeats, assignment polls and reports served past the
framework's layers.

Those three routes are nearly all of a server's requests in a deploy
(``theseus.server.routes.agent``: ``HOT_ROUTES``), and every other request of a running
cluster's thousands of agents. Through the whole app, a request passed Starlette's error and
exception middlewares, FastAPI's exit stack, the router and the route's wrapper, and each of
the server's four middlewares wrapped its ``send`` once more: about 160 µs of a plain route's
450 µs of server CPU (``bench/agent_requests.py``; BENCHMARKS.md, issue 17, twentieth
session). The door does what those layers do for these routes, with their own code:

* counts and times the request (``theseus.server.request_metrics.RequestCounts``);
* refuses a declared body over the limit with 413, and counts an undeclared one as it is read
  (``theseus.server.body_limit``);
* reads the client's index and puts one on the answer (``theseus.server.client_index``);
* authenticates and authorizes the caller (``theseus.server.auth.admit``: only the node's own
  agent, by its certificate, on a secured cluster); these routes are never audited;
* answers an exception with the app's own handler for it (the same ``{"message",
  "details"}``), and anything unhandled with a 500 that it raises again for uvicorn to log, as
  Starlette's ``ServerErrorMiddleware`` does.

The routes themselves are unchanged: they take a Starlette ``Request`` and return a
``Response``. ``theseus.server.plain_routes.DescribedApp`` hands the door the requests it
matches; everything else (other methods and paths included) goes through the whole app.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from theseus.server import auth, body_limit, client_index
from theseus.server.request_metrics import RequestCounts
from theseus.store.access import AccessState

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


class HotRoute(NamedTuple):
    method: str
    template: str  # "/v1/agent/{node}/heartbeat": the metrics' label
    endpoint: Endpoint


class HotDoor:
    """Serves the routes ``prefix + "{node}/" + action`` it is given (see the module's
    docstring). ``handlers`` are the app's exception handlers (Starlette's
    ``exception_handlers``: by exception class)."""

    def __init__(
        self,
        prefix: str,
        routes: list[HotRoute],
        *,
        counts: RequestCounts,
        max_body: int,
        access: Callable[[], AccessState | None],
        anonymous: bool,
        revision: Callable[[], int | None],
        handlers: dict[Any, Handler],
    ) -> None:
        self._prefix = prefix
        self._routes = {(r.method, r.template.rsplit("/", 1)[1]): r for r in routes}
        self._counts = counts
        self._max_body = max_body
        self._access = access
        self._anonymous = anonymous
        self._revision = revision
        self._handlers = handlers

    def match(self, scope: Scope) -> tuple[HotRoute, str] | None:
        """The route and node an HTTP request is for, or None: not one of the door's."""
        path: str = scope["path"]
        if not path.startswith(self._prefix):
            return None
        node, slash, action = path[len(self._prefix) :].partition("/")
        if not node or not slash:
            return None
        route = self._routes.get((scope["method"], action))
        return (route, node) if route is not None else None

    async def serve(
        self, route: HotRoute, node: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        status = 500  # an exception escaping answers 500
        try:
            status = await self._serve(route, node, scope, receive, send)
        finally:
            self._counts.note(route.method, route.template, status, time.perf_counter() - started)

    async def _serve(
        self, route: HotRoute, node: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        """Answer the request; its status."""
        declared = body_limit.declared_length(scope)
        if declared is not None and declared > self._max_body:
            await body_limit.refuse(send, body_limit.too_large_message(self._max_body, declared))
            return 413
        try:
            exchange = client_index.Exchange(asked=client_index.asked_index(scope))
        except ValueError:
            await client_index.refuse(send)
            return 400
        try:
            auth.admit(scope, self._access(), self._anonymous)
        except auth.Refusal as refusal:
            await auth.refuse(send, refusal)
            return refusal.status
        scope["path_params"] = {"node": node}
        body = body_limit.CountedBody(receive, self._max_body)
        request = Request(scope, body.receive)
        with client_index.handling(exchange):
            try:
                response = await route.endpoint(request)
            except Exception as exc:
                handler = self._handler(exc)
                if handler is None:
                    await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                    raise
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                assert isinstance(response, Response)
        if response.status_code < 400:
            index = exchange.answered(self._revision)
            if index is not None:
                response.raw_headers.append((client_index.HEADER_KEY, b"%d" % index))
        if body.cut_off:  # the rest of the body is not wanted: no keep-alive
            response.raw_headers.append(body_limit.CLOSE)
        await response(scope, receive, send)
        return response.status_code

    def _handler(self, exc: Exception) -> Handler | None:
        for kind in type(exc).__mro__:
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None
