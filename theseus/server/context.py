"""``ServerContext``: the per-process objects the routes share (store, cache, writer, leader)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from theseus.server.leader import Leader
from theseus.server.writes import Writer
from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    etcd: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    liveness_timeout: int = 4  # seconds without a heartbeat before a node is lost
    heartbeat_interval: float = 1.0
    registry_repair_interval: float = 3.0  # seconds between anti-entropy passes
    leader_lease_ttl: int = 2  # seconds: a dead leader is replaced about this much later


@dataclass
class ServerContext:
    config: ServerConfig
    store: EtcdStore
    cache: StateCache
    writer: Writer
    leader: Leader
    cluster_id: str = ""


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx
