"""``ServerContext``: the per-process objects the routes share (store, cache, writer, leader,
the memo of JSON answers)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from theseus.api.schemas import NodeUsage
from theseus.server.access_writes import AccessWriter
from theseus.server.admission import Admission
from theseus.server.agent_turns import AgentTurns
from theseus.server.audit import AuditLog
from theseus.server.client_index import wait_for_client_index
from theseus.server.config import ServerConfig
from theseus.server.events.feed import EventFeed
from theseus.server.group_tally import GroupTallies
from theseus.server.leader import Leader
from theseus.server.metrics import ServerMetrics
from theseus.server.wire import WireMemo
from theseus.server.writes import Writer
from theseus.store.base import Store
from theseus.store.cache import StateCache


@dataclass
class ServerContext:
    config: ServerConfig
    store: Store
    cache: StateCache
    writer: Writer
    leader: Leader
    access: AccessWriter
    audit: AuditLog
    events: EventFeed  # this server's window of the event stream
    tallies: GroupTallies  # each group's counts of tasks, kept by the cache's changes
    ca_cert: bytes | None = None  # the cluster CA's certificate (PEM), with TLS
    # With TLS: how this server calls agents (they serve TLS too, and want its certificate).
    agent_tls: ssl.SSLContext | None = None
    cluster_id: str = ""
    wire: WireMemo = field(default_factory=WireMemo)  # pieces of the hot routes' answers
    # What each node's tasks used, as its last heartbeat to this server said: in memory
    # only (never etcd); another server knows it from the heartbeats it receives itself.
    node_usage: dict[str, NodeUsage] = field(default_factory=dict)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)  # this server's instruments
    # How many registrations this server takes on at once (never refuses: no loop lag known).
    admission: Admission = field(default_factory=lambda: Admission(loop_lag=lambda: 0.0))
    # Agents' CPU-heavy sections take turns behind everything else (``theseus.server.agent_turns``).
    agent_turns: AgentTurns = field(default_factory=AgentTurns)


async def context(request: Request) -> ServerContext:
    # ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on
    # every request (most of them agents' heartbeats, polls and reports).
    ctx: ServerContext = request.app.state.ctx
    await wait_for_client_index(ctx.cache)  # the index the client asked for, if any
    lag = ctx.cache.out_of_touch()
    if lag is not None and not await ctx.cache.confirm():
        # Our cache may be behind etcd (the member we use is gone, or the watch is stuck):
        # answering from it would be stale reads and lost-looking writes. Clients move on
        # to another server on a 503. (A proof asked now settles it when the periodic one
        # was only late: this server's loop was busy or stalled, etcd and the watch fine.)
        raise HTTPException(
            503,
            f"this server has not been able to confirm it follows etcd for {lag:.0f}s; "
            "its view may be stale: use another server",
        )
    return ctx


async def etcd_judged_context(request: Request) -> ServerContext:
    """The context without the stale-view guard, for the routes whose answer etcd decides
    rather than this server's view: a registration and a heartbeat each write to etcd (the
    node's alive key, the node named in this server's heard record), and fail with 503 when
    etcd is out of reach. Guarding them too would
    turn a server's busy loop (a cache behind while 3,000 agents join) into heartbeats refused
    and nodes declared lost: the collapse the guard must not cause."""
    ctx: ServerContext = request.app.state.ctx
    return ctx
