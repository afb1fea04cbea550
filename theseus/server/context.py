"""``ServerContext``: the per-process objects the routes share (store, cache, writer, leader,
the memo of JSON answers)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request

from theseus.server.access_writes import AccessWriter
from theseus.server.audit import AuditLog
from theseus.server.body_limit import DEFAULT_MAX_REQUEST_BYTES
from theseus.server.leader import Leader
from theseus.server.wire import WireMemo
from theseus.server.writes import Writer
from theseus.store.base import Store
from theseus.store.cache import StateCache


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    etcd: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    # etcd over TLS: the (CA, client certificate, key) files, etcdctl's --cacert/--cert/--key.
    etcd_tls: tuple[Path, Path, Path] | None = None
    # Seconds without a heartbeat before a node is lost, and agents' heartbeat interval, in
    # clusters small enough; both grow with the cluster (``theseus.server.heartbeats``).
    liveness_timeout: int = 3
    heartbeat_interval: float = 1.0
    max_heartbeats_per_second: float = 100.0  # from all agents together
    registry_repair_interval: float = 3.0  # seconds between anti-entropy passes
    leader_lease_ttl: int = 2  # seconds: a dead leader is replaced about this much later
    # TLS: the directory of the CA and this server's certificate (``theseus.security.files``);
    # None: plain HTTP, a development cluster on loopback, where callers need no token.
    pki_dir: Path | None = None
    agent_cert_days: float = 90.0  # lifetime of the certificates agents get at join
    insecure: bool = False  # serve plain HTTP beyond loopback anyway (said loudly at start)

    @property
    def anonymous(self) -> bool:
        """Whether requests without credentials are served (as the admin): only without TLS."""
        return self.pki_dir is None

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # larger bodies: 413, never parsed


@dataclass
class ServerContext:
    config: ServerConfig
    store: Store
    cache: StateCache
    writer: Writer
    leader: Leader
    access: AccessWriter
    audit: AuditLog
    ca_cert: bytes | None = None  # the cluster CA's certificate (PEM), with TLS
    # With TLS: how this server calls agents (they serve TLS too, and want its certificate).
    agent_tls: ssl.SSLContext | None = None
    cluster_id: str = ""
    wire: WireMemo = field(default_factory=WireMemo)  # pieces of the hot routes' answers


async def context(request: Request) -> ServerContext:
    # ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on
    # every request (most of them agents' heartbeats, polls and reports).
    ctx: ServerContext = request.app.state.ctx
    lag = ctx.cache.out_of_touch()
    if lag is not None:
        # Our cache may be behind etcd (the member we use is gone, or the watch is stuck):
        # answering from it would be stale reads and lost-looking writes. Clients move on
        # to another server on a 503.
        raise HTTPException(
            503,
            f"this server has not been able to confirm it follows etcd for {lag:.0f}s; "
            "its view may be stale: use another server",
        )
    return ctx
