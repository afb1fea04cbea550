"""The command lines of a cluster's three kinds of process (pure, no side effects): an etcd
member, a server and an agent, each built from one small frozen description of that process.

Whoever starts one of them builds its command line here: ``theseus.cluster.commands`` maps
``theseus up``'s options onto these descriptions, the test kit (``tests/kit/cluster.py``) and
the benchmarks (``bench/procs.py``) describe their own processes, with their own ports and
options. Every address is on loopback unless a description says otherwise.

etcd over TLS: a member given a ``pki_dir`` serves its clients and peers over TLS with its
certificate ``etcd-<name>.pem`` from there (``theseus.cluster.certs`` issues it) and requires
theirs, signed by the same CA; a server then gets the three files of its etcd client
certificate (``EtcdTlsFiles``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# etcd's default of 128 operations per transaction is too few for one deploy of many groups;
# every member starts with the limit the store's writers respect.
from theseus.security.files import PkiDir
from theseus.store.limits import MAX_TXN_OPS

LOOPBACK = "127.0.0.1"


class EtcdTlsFiles(NamedTuple):
    """What a client of an etcd with ``--client-cert-auth`` presents (etcdctl's ``--cacert``,
    ``--cert`` and ``--key``)."""

    cacert: Path
    cert: Path
    key: Path


def etcd_url(host: str, port: int, pki_dir: Path | None = None) -> str:
    """A member's client or peer URL: https when it has a ``pki_dir``. Also what a member of
    several needs for each peer in ``initial_cluster``."""
    return f"{'https' if pki_dir is not None else 'http'}://{host}:{port}"


def member_cert_name(name: str) -> str:
    """The name of member ``name``'s certificate in a ``PkiDir``: ``etcd-<name>``."""
    return f"etcd-{name}"


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
    # TLS for clients and peers, both required to present a certificate of the CA in this
    # directory (``theseus.security.files.PkiDir``); None: plain HTTP.
    pki_dir: Path | None = None
    # etcd's ``--metrics extensive``: its gRPC handling-time histograms too (what a benchmark
    # compares with the server's own timing of the same calls).
    extensive_metrics: bool = False

    @property
    def client_url(self) -> str:
        return etcd_url(self.host, self.client_port, self.pki_dir)

    @property
    def peer_url(self) -> str:
        return etcd_url(self.host, self.peer_port, self.pki_dir)

    @property
    def endpoint(self) -> str:
        """What ``theseus server --etcd`` takes: ``host:port``, or ``https://host:port``."""
        return self.client_url if self.pki_dir is not None else f"{self.host}:{self.client_port}"

    @property
    def cert_name(self) -> str:
        return member_cert_name(self.name)

    @property
    def tls_files(self) -> EtcdTlsFiles | None:
        """The member's own certificate, CA and key (None without TLS). It serves as a client
        certificate too: the launcher's health probe presents it."""
        if self.pki_dir is None:
            return None
        pki = PkiDir(self.pki_dir)
        return EtcdTlsFiles(pki.ca_cert, pki.cert(self.cert_name), pki.key(self.cert_name))

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
        tls = self.tls_files
        if tls is not None:
            command += ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]
            command += ["--trusted-ca-file", str(tls.cacert), "--client-cert-auth"]
            command += ["--peer-cert-file", str(tls.cert), "--peer-key-file", str(tls.key)]
            command += ["--peer-trusted-ca-file", str(tls.cacert), "--peer-client-cert-auth"]
        if self.extensive_metrics:
            command += ["--metrics", "extensive"]
        return command + [
            # A member cut off from its peers, once healed, asks whether it could win before it
            # calls an election: without this its higher term deposes a working leader, and no
            # server can renew its lease until etcd elects again (etcd 3.4's default is off).
            "--pre-vote",
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
    etcd: tuple[str, ...]  # endpoints ``host:port`` (or ``https://...``), the first tried first
    host: str = LOOPBACK
    etcd_tls: EtcdTlsFiles | None = None  # its etcd client certificate, for a TLS etcd
    liveness_timeout: int | None = None
    registry_repair_interval: float | None = None
    etcd_compaction_interval: float | None = None
    max_request_bytes: int | None = None
    log_level: str | None = None
    log: LogOptions | None = None  # its log to a rotated file (None: to stderr)
    pki_dir: Path | None = None  # TLS and credentials (``theseus server --pki-dir``)
    agent_cert_days: float | None = None  # lifetime of agents' certificates (None: default)
    peers: tuple[str, ...] = ()  # the other servers' URLs (``theseus server --peer``)
    python: str = sys.executable

    @property
    def url(self) -> str:
        scheme = "https" if self.pki_dir is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/v1/health"

    def argv(self) -> list[str]:
        command = [self.python, "-m", "theseus", "server", "--host", self.host]
        command += ["--port", str(self.port)]
        for endpoint in self.etcd:
            command += ["--etcd", endpoint]
        if self.etcd_tls is not None:
            command += ["--etcd-cacert", str(self.etcd_tls.cacert)]
            command += [
                "--etcd-cert",
                str(self.etcd_tls.cert),
                "--etcd-key",
                str(self.etcd_tls.key),
            ]
        if self.liveness_timeout is not None:
            command += ["--liveness-timeout", str(self.liveness_timeout)]
        if self.registry_repair_interval is not None:
            command += ["--registry-repair-interval", number(self.registry_repair_interval)]
        if self.etcd_compaction_interval is not None:
            command += ["--etcd-compaction-interval", number(self.etcd_compaction_interval)]
        if self.max_request_bytes is not None:
            command += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        if self.log is not None:
            command += self.log.argv()
        if self.pki_dir is not None:
            command += ["--pki-dir", str(self.pki_dir)]
        if self.agent_cert_days is not None:
            command += ["--agent-cert-days", number(self.agent_cert_days)]
        for peer in self.peers:
            command += ["--peer", peer]
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
    # ``NAME=/path[:ro]`` host volumes its tasks may mount, and what else it allows them.
    host_volumes: tuple[str, ...] = ()
    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    allow_caps: tuple[str, ...] = ()
    # A secure cluster: join through this server (the join token goes in the environment,
    # THESEUS_JOIN_TOKEN, never on the command line).
    join: str | None = None
    # Images: ``--pull-timeout``, ``--pod-infra-image``, ``--registry-login-cache`` (None:
    # the agent's defaults) and ``--pull-unqualified``.
    pull_timeout: float | None = None
    pod_infra_image: str | None = None
    registry_login_cache: float | None = None
    pull_unqualified: bool = False
    # Each task's logs where its spec sets no bound: ``--log-max-size`` (e.g. "10m") and
    # ``--log-max-files`` (None: the agent's defaults).
    log_max_size: str | None = None
    log_max_files: int | None = None
    stats_interval: float | None = None  # ``--stats-interval`` (None: the agent's default)
    log: LogOptions | None = None  # its log to a rotated file (None: to stderr)
    python: str = sys.executable

    def argv(self) -> list[str]:
        command = [self.python, "-m", "theseus", "agent", "--server", ",".join(self.servers)]
        if self.join is not None:
            command += ["--join", self.join]
        command += ["--name", self.name, "--address", self.address, "--port", str(self.port)]
        if self.driver is not None:
            command += ["--driver", self.driver]
        if self.cpus is not None:
            command += ["--cpus", number(self.cpus)]
        if self.mem is not None:
            command += ["--mem", number(self.mem)]
        for key, value in self.attributes:
            command += ["--attr", f"{key}={value}"]
        for volume in self.host_volumes:
            command += ["--host-volume", volume]
        if self.allow_privileged:
            command.append("--allow-privileged")
        if self.allow_host_namespaces:
            command.append("--allow-host-namespaces")
        for cap in self.allow_caps:
            command += ["--allow-cap", cap]
        if self.pull_timeout is not None:
            command += ["--pull-timeout", number(self.pull_timeout)]
        if self.pod_infra_image is not None:
            command += ["--pod-infra-image", self.pod_infra_image]
        if self.registry_login_cache is not None:
            command += ["--registry-login-cache", number(self.registry_login_cache)]
        if self.pull_unqualified:
            command.append("--pull-unqualified")
        if self.log_max_size is not None:
            command += ["--log-max-size", self.log_max_size]
        if self.log_max_files is not None:
            command += ["--log-max-files", str(self.log_max_files)]
        if self.stats_interval is not None:
            command += ["--stats-interval", number(self.stats_interval)]
        if self.log is not None:
            command += self.log.argv()
        return command + ["--state-dir", str(self.state_dir)]


@dataclass(frozen=True)
class LogOptions:
    """``--log-file`` and its companions (``theseus.cli.logsetup``) of a server or an agent;
    None: that option's default."""

    file: Path
    max_bytes: int | None = None
    backups: int | None = None
    format: str | None = None  # text or json

    def argv(self) -> list[str]:
        command = ["--log-file", str(self.file)]
        if self.max_bytes is not None:
            command += ["--log-max-bytes", str(self.max_bytes)]
        if self.backups is not None:
            command += ["--log-backups", str(self.backups)]
        if self.format is not None:
            command += ["--log-format", self.format]
        return command


def number(value: float) -> str:
    """2.0 → "2", 0.5 → "0.5": the options read nicer without a spurious ".0"."""
    return str(int(value)) if float(value).is_integer() else str(value)
