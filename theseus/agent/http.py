"""The agent's own small HTTP endpoint, served inside the agent's event loop, on its TCP
address. The node's discovery socket (``<state dir>/discovery/agent.sock``), which every
container can reach, serves only the registry reads (``theseus.agent.discovery.discovery_app``),
through another ``AgentHttpServer``.

Routes (the server proxies ``theseus logs`` to the second one):

* ``GET /v1/health`` → ``{"status": "ok", "node": <name>}``
* ``GET /v1/tasks/{task_id}/logs?follow=true|false&tail=N&container=NAME`` → the task's stdout
  and stderr as ``text/plain``, streamed (``container``: only that member of a pod);
  ``404 {"message": ...}`` for a task without a container here, or without that member.
* ``GET /v1/tasks/{task_id}/stats?since=T&limit=N`` → the task's recent samples
  (``theseus.api.schemas.TaskStats``: samples newer than ``since``, wall clock, at most the
  ``limit`` newest; none yet for a task assigned here but not measured yet); ``404`` for a
  task this agent neither runs nor has samples of.
* ``GET /v1/stats`` → the latest sample of every task here (``StatsList``).
* ``GET /metrics`` → Prometheus' text format: the agent's registry (the tasks' metrics,
  ``theseus.agent.stats.prometheus``).
* ``GET /v1/registry/{service}``, ``GET /v1/registry/watch?services=&index=&wait=``: the
  service registry, proxied to the server for the containers (``theseus.agent.discovery``).
* ``GET /metrics``: the agent's registry (``theseus.agent.metrics``) in Prometheus's text
  format; with TLS, like every route but health, for servers' certificates only.

Built by ``theseus.agent.agent``; ``AgentHttpServer`` runs uvicorn without letting it touch
the process's signal handlers (the agent owns SIGTERM/SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from theseus.agent.discovery import bind_unix_socket, registry_routes, remove_unix_socket
from theseus.agent.metrics import CONTENT_TYPE, exposition
from theseus.agent.runner import TaskRunner
from theseus.agent.slots import UnknownContainer, UnknownTask
from theseus.agent.stats.samples import SampleStore, TaskMeta, task_json
from theseus.api.agent_client import AsyncServerClient
from theseus.security.pki import Role
from theseus.security.serving import http_protocol, peer_identity


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Metrics:
    """What the agent measures: its tasks' samples (taken every ``interval`` seconds) and
    the registry ``/metrics`` serves."""

    store: SampleStore
    interval: float
    registry: CollectorRegistry


def create_app(
    runner: TaskRunner,
    node: str,
    server: AsyncServerClient,
    secure: bool = False,
    metrics: Metrics | None = None,
) -> Starlette:
    """The agent's app; registry reads go to the server through ``server``. ``secure``: it
    is served over TLS, and answers only servers (by their certificate), health excepted:
    nobody else has business with a node's logs, metrics or with relaying its registry
    reads. ``metrics``: without it, the stats routes answer 404 and ``/metrics`` is empty."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "node": node})

    async def logs(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        follow = _flag(request.query_params.get("follow"))
        tail_text = request.query_params.get("tail")
        tail: int | None = None
        if tail_text not in (None, "", "all"):
            try:
                tail = max(0, int(tail_text))
            except ValueError:
                return JSONResponse({"message": f"tail must be a number, not {tail_text!r}"}, 400)
        container = request.query_params.get("container") or None
        try:
            stream = runner.logs(task_id, follow, tail, container)
        except UnknownTask:
            message = f"task {task_id} has no container on node {node}"
            return JSONResponse({"message": message}, 404)
        except UnknownContainer as exc:
            return JSONResponse({"message": str(exc)}, 404)
        return StreamingResponse(_guarded(stream), media_type="text/plain; charset=utf-8")

    async def task_stats(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        found = metrics.store.get(task_id) if metrics is not None else None
        assignment = (runner.assigned or {}).get(task_id)
        if metrics is None or (found is None and assignment is None):
            message = f"node {node} has no stats of task {task_id}"
            return JSONResponse({"message": message}, 404)
        try:
            since = _number(request.query_params.get("since"), "since")
            limit = _number(request.query_params.get("limit"), "limit")
        except ValueError as exc:
            return JSONResponse({"message": str(exc)}, 400)
        if found is None:  # assigned here, not measured yet (or not running)
            assert assignment is not None
            meta = TaskMeta(task_id, assignment.service, assignment.group, tuple(assignment.labels))
            return JSONResponse(task_json(meta, node, metrics.interval, []))
        meta, ring = found
        samples = ring.since(since, None if limit is None else int(limit))
        return JSONResponse(task_json(meta, node, metrics.interval, samples))

    async def all_stats(request: Request) -> Response:
        tasks = []
        if metrics is not None:
            tasks = [
                task_json(meta, node, metrics.interval, [sample])
                for meta, sample in metrics.store.latest()
            ]
        return JSONResponse({"tasks": tasks, "unreachable": []})

    async def prometheus(request: Request) -> Response:
        registry = metrics.registry if metrics is not None else CollectorRegistry()
        return Response(exposition(registry), media_type=CONTENT_TYPE)

    routes = [
        Route("/v1/health", health),
        Route("/v1/tasks/{task_id}/logs", logs),
        Route("/v1/tasks/{task_id}/stats", task_stats),
        Route("/v1/stats", all_stats),
        Route("/metrics", prometheus),
        *registry_routes(server),
    ]
    return Starlette(routes=routes, middleware=[Middleware(ServersOnly)] if secure else [])


def _number(text: str | None, name: str) -> float | None:
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, not {text!r}")
    return value


class ServersOnly:
    """Every route but ``/v1/health`` answers only a caller holding a server's certificate:
    401 without a certificate, 403 with another's (an agent's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/v1/health":
            peer = peer_identity(scope)
            if peer is None or peer.role != Role.SERVER:
                message = "this node's agent answers Theseus servers only (by their certificate)"
                status = 401 if peer is None else 403
                await JSONResponse({"message": message}, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _guarded(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """End the stream quietly when the container goes away mid-read (removed by a stop)."""
    try:
        async for chunk in stream:
            yield chunk
    except Exception as exc:  # the backend's error is a normal end for a log reader
        yield f"\n[theseus: log stream ended: {exc}]\n".encode()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the agent handles signals itself and keeps its tasks running


class AgentHttpServer:
    """Serves ``app`` on ``host:port`` (``host`` ``None``: not on TCP) and, given ``uds``, on
    a unix socket at that path."""

    def __init__(
        self,
        app: Starlette,
        host: str | None,
        port: int = 0,
        uds: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.uds = host, port, uds
        self._uds_inode: int | None = None
        config = uvicorn.Config(
            app,
            host=host or "127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,  # through the agent's logging (its file and format)
            access_log=False,
            lifespan="off",
            http=http_protocol(),
            # The agent's own context: renewing its certificate reloads it in place.
            ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Serve in the background; return once listening. A taken port raises ``OSError``
        here (uvicorn would call ``sys.exit`` from inside the loop), so we bind ourselves."""
        sockets: list[socket.socket] = []
        if self.host is not None:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                sock.close()
                raise OSError(f"the agent cannot listen on {self.host}:{self.port}: {exc}") from exc
            self.port = sock.getsockname()[1]
            sockets.append(sock)
        if self.uds is not None:
            try:
                sockets.append(bind_unix_socket(self.uds))
            except OSError:
                for sock in sockets:
                    sock.close()
                raise
            self._uds_inode = self.uds.lstat().st_ino
        self._task = asyncio.create_task(self._server.serve(sockets), name="agent-http")
        async with asyncio.timeout(timeout):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise OSError("the agent's HTTP endpoint stopped while starting")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for followed log streams to end
        with contextlib.suppress(Exception):
            await self._task
        if self.uds is not None and self._uds_inode is not None:
            remove_unix_socket(self.uds, self._uds_inode)
