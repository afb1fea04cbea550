"""The command lines of a cluster's three kinds of process (pure, no side effects): an etcd
member, a server and an agent, each built from one small frozen description of that process.

Whoever starts one of them builds its command line here: ``theseus.cluster.commands`` maps
``theseus up``'s options onto these descriptions, the test kit (``tests/kit/cluster.py``) and
the benchmarks (``bench/procs.py``) describe their own processes, with their own ports and
options. Every address is on loopback unless a description says otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

# etcd's default of 128 operations per transaction is too few for one deploy of many groups;
# every member starts with the limit the store's writers respect.
from theseus.store.limits import MAX_TXN_OPS

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member: its name, data, client and peer ports, and the cluster it forms."""

    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    host: str = LOOPBACK
    # Every member of the cluster as (name, peer URL), this one included; empty: it alone.
    initial_cluster: tuple[tuple[str, str], ...] = ()
    # A cluster of several members is created new under this token (``None``: one member,
    # which needs none).
    token: str | None = None
    max_txn_ops: int = MAX_TXN_OPS
    binary: str = "etcd"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """``host:port``, what ``theseus server --etcd`` takes."""
        return f"{self.host}:{self.client_port}"

    @property
    def health_url(self) -> str:
        return f"{self.client_url}/health"

    def argv(self) -> list[str]:
        members = self.initial_cluster or ((self.name, self.peer_url),)
        command = [
            self.binary,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            ",".join(f"{name}={url}" for name, url in members),
        ]
        if self.token is not None:
            command += ["--initial-cluster-state", "new", "--initial-cluster-token", self.token]
        return command + [
            "--max-txn-ops",
            str(self.max_txn_ops),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]


@dataclass(frozen=True)
class ServerProcess:
    """One ``theseus server``; options left at ``None`` are the server's own defaults."""

    port: int
    etcd: tuple[str, ...]  # endpoints ``host:port``, the first one tried first
    host: str = LOOPBACK
    liveness_timeout: int | None = None
    registry_repair_interval: float | None = None
    max_request_bytes: int | None = None
    log_level: str | None = None
    python: str = sys.executable

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/v1/health"

    def argv(self) -> list[str]:
        command = [self.python, "-m", "theseus", "server", "--host", self.host]
        command += ["--port", str(self.port)]
        for endpoint in self.etcd:
            command += ["--etcd", endpoint]
        if self.liveness_timeout is not None:
            command += ["--liveness-timeout", str(self.liveness_timeout)]
        if self.registry_repair_interval is not None:
            command += ["--registry-repair-interval", number(self.registry_repair_interval)]
        if self.max_request_bytes is not None:
            command += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        return command


@dataclass(frozen=True)
class AgentProcess:
    """One ``theseus agent``; resources left at ``None`` are measured by the agent."""

    servers: tuple[str, ...]  # API URLs, the first one tried first
    name: str
    address: str  # the loopback address it advertises and publishes its tasks' ports on
    port: int
    state_dir: Path
    driver: str | None = None  # None: the agent's default
    cpus: float | None = None
    mem: float | None = None  # MB
    attributes: tuple[tuple[str, str], ...] = ()
    python: str = sys.executable

    def argv(self) -> list[str]:
        command = [self.python, "-m", "theseus", "agent", "--server", ",".join(self.servers)]
        command += ["--name", self.name, "--address", self.address, "--port", str(self.port)]
        if self.driver is not None:
            command += ["--driver", self.driver]
        if self.cpus is not None:
            command += ["--cpus", number(self.cpus)]
        if self.mem is not None:
            command += ["--mem", number(self.mem)]
        for key, value in self.attributes:
            command += ["--attr", f"{key}={value}"]
        return command + ["--state-dir", str(self.state_dir)]


def number(value: float) -> str:
    """2.0 → "2", 0.5 → "0.5": the options read nicer without a spurious ".0"."""
    return str(int(value)) if float(value).is_integer() else str(value)
