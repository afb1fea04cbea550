"""``ServerConfig``: what ``theseus server`` was asked for. Kept apart from the server's
machinery so that the CLI can build one without importing it (a CLI command starts in a
fraction of a second, ``theseus agent`` included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from theseus.server.body_limit import DEFAULT_MAX_REQUEST_BYTES


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
    max_registering: int = 32  # registrations in progress at once; more: 429 + Retry-After
    leader_lease_ttl: int = 2  # seconds: a dead leader is replaced about this much later
    # Seconds between the leader's compactions of etcd's history (0: none), each up to the
    # revision of one interval before (``theseus.server.compaction``).
    etcd_compaction_interval: float = 300.0
    # TLS: the directory of the CA and this server's certificate (``theseus.security.files``);
    # None: plain HTTP, a development cluster on loopback, where callers need no token.
    pki_dir: Path | None = None
    agent_cert_days: float = 90.0  # lifetime of the certificates agents get at join
    insecure: bool = False  # serve plain HTTP beyond loopback anyway (said loudly at start)
    # The other servers' URLs (``https://10.0.0.12:5000``): where a dashboard tab goes when
    # this server stops answering (``theseus.server.ui``).
    peers: list[str] = field(default_factory=list)

    @property
    def anonymous(self) -> bool:
        """Whether requests without credentials are served (as the admin): only without TLS."""
        return self.pki_dir is None

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # larger bodies: 413, never parsed
