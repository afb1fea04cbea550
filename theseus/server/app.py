"""The server's FastAPI app: routes, error format, authentication (``theseus.server.auth``,
in front of every route), and a lifespan that connects to etcd, starts the cache's watch, the
leader's campaign and the audit log's writer, and stops them on shutdown.

Errors always answer ``{"message": ..., "details": [{"path", "message"}]}``; validation
errors of the deploy document are 422 and name the path of every bad field.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from theseus import __version__
from theseus.api.schemas import Health
from theseus.model.spec import SpecError
from theseus.model.state import ClusterState
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tls import client_context
from theseus.server import gc_policy, ui
from theseus.server.access_writes import AccessDenied, AccessWriter
from theseus.server.admission import Admission
from theseus.server.audit import AuditLog
from theseus.server.auth import AuditHook, AuthMiddleware
from theseus.server.body_limit import BodyLimit
from theseus.server.client_index import ClientIndex
from theseus.server.compaction import HistoryCompactor
from theseus.server.config import ServerConfig
from theseus.server.context import ServerContext
from theseus.server.events import metrics as event_metrics
from theseus.server.events.callbacks import Deliveries
from theseus.server.events.feed import EventFeed
from theseus.server.events.keeper import EventKeeper
from theseus.server.events.subscriptions import Subscriptions
from theseus.server.group_tally import GroupTallies
from theseus.server.hot_door import HotDoor, HotRoute
from theseus.server.leader import Leader
from theseus.server.liveness import HeardReporter
from theseus.server.loop_sampler import LoopSampler
from theseus.server.metered_store import MeteredStore
from theseus.server.metrics import CONTENT_TYPE, ServerMetrics, exposition
from theseus.server.metrics_state import ClusterStateCollector
from theseus.server.plain_routes import DescribedApp
from theseus.server.request_metrics import RequestCounts, RequestMetrics
from theseus.server.routes import (
    access,
    agent,
    deploy,
    deployments,
    event_subscriptions,
    events,
    groups,
    node_control,
    registry,
    registry_logins,
    scrape,
    stats,
    tasks,
)
from theseus.server.stall import StallWatch
from theseus.server.ui import errors as ui_errors
from theseus.server.writes import ConflictError, TooLargeError, Writer
from theseus.store.base import Store, StoreUnavailable
from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore
from theseus.store.etcd_tls import EtcdTls
from theseus.store.leadership import Leadership
from theseus.store.lease_thread import LeaseThread

log = logging.getLogger(__name__)


T = TypeVar("T")
STARTUP_BACKOFF_MAX = 2.0


async def retry_while_etcd_unavailable(step: Callable[[], Awaitable[T]]) -> T:
    """Run a startup step until etcd answers it. A server (re)started while etcd elects a
    leader, or while the member it reached dies, waits for etcd instead of exiting (nothing
    would start it again): the store moves to another member at each attempt."""
    delay = 0.2
    while True:
        try:
            return await step()
        except StoreUnavailable as exc:
            log.warning("etcd unavailable at startup (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STARTUP_BACKOFF_MAX)


def etcd_stores(config: ServerConfig) -> Store:
    """A connection to the configured etcd members (each call: a connection of its own)."""
    return EtcdStore(
        config.etcd, tls=EtcdTls.from_files(*config.etcd_tls) if config.etcd_tls else None
    )


def load_ca(config: ServerConfig) -> pki.Issued | None:
    """The CA with its key, when this server has it (it then admits and renews agents)."""
    if config.pki_dir is None or not PkiDir(config.pki_dir).has_ca_key():
        return None
    return PkiDir(config.pki_dir).read_ca_pair()


def _ca_cert_only(config: ServerConfig) -> bytes | None:
    return PkiDir(config.pki_dir).read_ca() if config.pki_dir is not None else None


def create_app(
    config: ServerConfig, open_store: Callable[[ServerConfig], Store] = etcd_stores
) -> DescribedApp:
    """The server's app; ``open_store`` makes its two store connections (unit tests give it
    ``theseus.store.memory.MemoryStore``s' factory). Its metrics have a registry of their
    own (``theseus.server.metrics``), so several apps in one process do not share them."""
    metrics = ServerMetrics()
    # The event stream's counters live on prometheus_client's default registry (shared by the
    # servers of one process); this server's /metrics shows them beside its own.
    # So do the garbage collector's pauses (theseus.server.gc_policy), which are the process's.
    for collector in (*event_metrics.COLLECTORS, *gc_policy.COLLECTORS):
        metrics.registry.register(collector)

    def metered(store: Store) -> Store:
        return MeteredStore(store, metrics.etcd_duration, metrics.etcd_failures)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = metered(open_store(config))
        await retry_while_etcd_unavailable(store.connect)
        stalls = StallWatch(observe=metrics.loop_lag.observe)
        lease_thread: LeaseThread | None = None
        keepalive_store: Store | None = None
        if open_store is etcd_stores:
            # Where the loop was whenever it ran late, in the log (one thread per process:
            # the in-memory servers of unit tests share theirs with the test).
            stalls.sampler = LoopSampler(threading.get_ident(), stalls.last_seen)
            stalls.sampler.start()
            # The leader lease's keep-alive on a thread, with a connection of its own.
            lease_thread = LeaseThread(lambda: metered(open_store(config)), stalls.last_seen)
            lease_thread.start()
        else:
            # The in-memory store of unit tests lives on this loop: a connection of its own
            # on this loop, then.
            keepalive_store = metered(open_store(config))
            await retry_while_etcd_unavailable(keepalive_store.connect)
        cache = StateCache(store)
        feed = EventFeed(lambda: cache.state)
        tallies = GroupTallies(cache)
        # Before the cache's first load: the feed's window starts there, and the tallies
        # are counted from it.
        cache.observers += [feed, tallies]
        server_id = f"{socket.gethostname()}:{config.port}:{os.getpid()}"
        # Its heard records name it by address, not process: a restart writes the same key.
        heard = HeardReporter(store, f"{socket.gethostname()}:{config.port}")
        writer = Writer(
            store,
            cache,
            config.liveness_timeout,
            config.max_heartbeats_per_second,
            config.heartbeat_interval,
            heard,
            metrics,
        )
        leadership = Leadership(
            store,
            cache,
            server_id,
            lease_ttl=config.leader_lease_ttl,
            keepalive_store=keepalive_store,
            lease_thread=lease_thread,
        )
        leader = Leader(
            store,
            cache,
            leadership,
            registry_repair_interval=config.registry_repair_interval,
            stalls=stalls,
            loss_grace=writer.loss_grace,
            node_ttl=writer.lease_ttl,
            metrics=metrics,
            fork_passes=True,  # big placing passes in a child (theseus.server.pass_process)
        )
        metrics.lead_by(lambda: leader.is_leader)
        ca = load_ca(config)
        ctx = ServerContext(
            config=config,
            store=store,
            cache=cache,
            writer=writer,
            leader=leader,
            access=AccessWriter(
                store,
                cache,
                ca,
                config.agent_cert_days,
                plain_logins=config.anonymous,  # a development cluster: no CA to seal with
            ),
            audit=AuditLog(store, f"{socket.gethostname()}:{config.port}"),
            events=feed,
            tallies=tallies,
            ca_cert=ca.cert if ca is not None else (_ca_cert_only(config)),
            agent_tls=(
                client_context(PkiDir(config.pki_dir), "server") if config.pki_dir else None
            ),
            metrics=metrics,
            admission=Admission(loop_lag=stalls.lag, limit=config.max_registering),
        )
        metrics.agent_turns_waiting.set_function(lambda: ctx.agent_turns.waiting)
        ctx.cluster_id = await retry_while_etcd_unavailable(writer.ensure_cluster_id)
        app.state.ctx = ctx
        background = [
            asyncio.create_task(cache.run(), name="cache"),
            asyncio.create_task(leader.run(), name="leader"),
            asyncio.create_task(cache.probe(), name="cache-probe"),
            asyncio.create_task(stalls.run(), name="stall-watch"),
            asyncio.create_task(ctx.audit.run(), name="audit"),
            asyncio.create_task(
                HistoryCompactor(
                    store, lambda: leader.is_leader, config.etcd_compaction_interval, metrics
                ).run(),
                name="etcd-compaction",
            ),
            asyncio.create_task(
                EventKeeper(store, feed, lambda: leader.is_leader).run(), name="event-keeper"
            ),
            asyncio.create_task(
                Deliveries(Subscriptions(store), feed, lambda: leader.is_leader).run(),
                name="event-deliveries",
            ),
        ]
        await asyncio.wait_for(cache.wait_ready(), timeout=30)
        log.info("theseus server %s ready (cluster %s)", server_id, ctx.cluster_id)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await heard.close()
            await store.close()
            if keepalive_store is not None:
                await keepalive_store.close()
            if lease_thread is not None:
                await lease_thread.aclose()
            if stalls.sampler is not None:
                stalls.sampler.stop()

    app = DescribedApp(
        described=agent.described.routes,
        title="Theseus",
        version=__version__,
        description="Deploy services from a short spec and keep them running.",
        lifespan=lifespan,
        # Theseus has metrics and events of its own (docs/observability.md). FastAPI's
        # OpenTelemetry, on, asks the environment whether a provider is set on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    # First: a request is matched against the routes in order (FastAPI's include_router
    # keeps a list, and each match runs every earlier route's regex), and agents'
    # heartbeats, polls and reports are most of all requests. Last, they took half of a
    # heartbeat's server CPU being matched (bench/scale.py's request-cost figures).
    for route in agent.HOT_ROUTES:
        app.router.add_route(
            route.path, route.endpoint, methods=route.methods, include_in_schema=False
        )
    app.include_router(agent.router)
    app.include_router(deploy.router)
    app.include_router(groups.router)
    app.include_router(deployments.router)
    app.include_router(tasks.router)
    app.include_router(stats.router)
    app.include_router(scrape.router)
    app.include_router(node_control.router)
    app.include_router(registry.router)
    app.include_router(access.router)
    app.include_router(registry_logins.router)
    app.include_router(events.router)
    app.include_router(event_subscriptions.router)
    ui.install(app)  # the dashboard (docs/dashboard.md)

    def ready_context() -> ServerContext | None:
        return getattr(app.state, "ctx", None)

    def audit_hook() -> AuditHook | None:
        ctx = ready_context()
        return ctx.audit.note if ctx is not None else None

    app.add_middleware(
        AuthMiddleware,
        access=lambda: ctx.cache.access if (ctx := ready_context()) is not None else None,
        anonymous=config.anonymous,
        audit=audit_hook,
    )

    @app.get("/v1/health", response_model=Health, tags=["health"])
    async def health(request: Request) -> Health:
        ctx: ServerContext = request.app.state.ctx
        return Health(
            leader=ctx.leader.is_leader, revision=ctx.cache.revision, cluster_id=ctx.cluster_id
        )

    # The state a scrape counts: a snapshot the route takes on the event loop and hands to
    # its worker thread through this context variable (``asyncio.to_thread`` copies it).
    scraped_state: contextvars.ContextVar[ClusterState | None] = contextvars.ContextVar(
        "scraped_state", default=None
    )
    metrics.registry.register(ClusterStateCollector(scraped_state.get))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"])
    async def prometheus_metrics() -> Response:
        """This server's metrics in Prometheus's text format (docs/observability.md).
        Rendered in a worker thread, the state's gauges over a snapshot of the cache: at
        50,000 tasks their sweep held the event loop up to a second."""
        ctx = ready_context()
        scraped_state.set(ctx.cache.snapshot() if ctx is not None else None)
        body = await asyncio.to_thread(exposition, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE)

    app.add_middleware(
        ClientIndex, revision=lambda: ctx.cache.revision if (ctx := ready_context()) else None
    )
    app.add_middleware(BodyLimit, limit=config.max_request_bytes)
    # Outermost: it sees every answer, refusals included.
    counts = RequestCounts(metrics.requests, metrics.request_duration)
    app.add_middleware(RequestMetrics, counts=counts)
    app.state.metrics = metrics
    _install_error_handlers(app)
    # The agents' hot routes, past the layers above (they do what those do, with their code).
    app.door = HotDoor(
        agent.PREFIX + "/",
        [
            HotRoute(method, route.path, route.endpoint)
            for route in agent.HOT_ROUTES
            for method in sorted(route.methods or ())
            if method != "HEAD"
        ],
        counts=counts,
        max_body=config.max_request_bytes,
        access=lambda: ctx.cache.access if (ctx := ready_context()) is not None else None,
        anonymous=config.anonymous,
        revision=lambda: ctx.cache.revision if (ctx := ready_context()) else None,
        handlers=app.exception_handlers,
    )
    return app


def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "details": details or []}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpecError)
    async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
        return _error(422, "invalid deploy document; nothing was applied", exc.errors)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"path": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        return _error(422, "invalid request; nothing was applied", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if ui_errors.wants_page(request):  # a browser on the dashboard: a page, not JSON
            return ui_errors.error_page(request, exc.status_code, str(exc.detail), exc.headers)
        answer = _error(exc.status_code, str(exc.detail))
        answer.headers.update(exc.headers or {})  # Retry-After on a 429, say
        return answer

    @app.exception_handler(AccessDenied)
    async def access_denied(request: Request, exc: AccessDenied) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(TooLargeError)
    async def too_large(request: Request, exc: TooLargeError) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return _error(503, f"etcd unavailable: {exc}")
