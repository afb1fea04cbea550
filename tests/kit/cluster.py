"""Real processes for integration tests and the chaos runner: etcd (one member or several),
servers and agents, each a child process on free loopback ports, started and stopped through
the launcher (``theseus/cluster/argv.py`` builds their command lines,
``theseus/cluster/supervise.py`` runs them) and stopped by PID, also when a test fails.

``start_cluster`` gives etcd, a server and agents, all ready; ``start_ha_cluster`` several
servers and, optionally, an etcd of several members, for the tests of failover.
``Cluster.kill`` and ``Cluster.restart`` act on one process by name. ``Cluster.use_etcd_tls``
before starting etcd makes its members require TLS client certificates from a CA (clients and
peers), and hands the servers their etcd client certificate. ``start_secure_cluster`` gives the
secure model (``theseus up --secure``'s): a CA, TLS everywhere (etcd included), an admin
token, agents joined with a join token.

Tests talk to the cluster only as users do: HTTP (``ServerClient``), the ``theseus`` command,
and the Docker API for inspecting and killing containers.
"""

from __future__ import annotations

import contextlib
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from theseus.api.client import ServerClient
from theseus.cluster.argv import AgentProcess, EtcdMember, EtcdTlsFiles, ServerProcess, etcd_url
from theseus.cluster.certs import issue_client_cert, issue_etcd_certs
from theseus.cluster.etcd_probe import member_healthy
from theseus.cluster.ports import free_port
from theseus.cluster.secure import bootstrap_admin, new_join_token, prepare_pki, secure_client
from theseus.cluster.supervise import Process, Processes
from theseus.cluster.waiting import wait_until
from theseus.security.files import PkiDir
from theseus.security.tls import client_context

__all__ = [
    "Cluster",
    "free_port",
    "new_cluster",
    "start_cluster",
    "start_ha_cluster",
    "start_secure_cluster",
]


@dataclass
class Cluster:
    root: Path  # the processes' logs, etcd's data and the agents' state
    etcd_port: int
    server_port: int
    processes: Processes = field(init=False)
    nodes: dict[str, str] = field(default_factory=dict)  # name -> address
    servers: dict[str, int] = field(default_factory=dict)  # server name -> API port
    etcd_members: dict[str, int] = field(default_factory=dict)  # name -> client port (if >1)
    # A secure cluster: the servers' CA and certificates, the admin token, a join token.
    pki: PkiDir | None = None
    admin_token: str | None = None
    join_token: str | None = None
    etcd_pki: PkiDir | None = None  # etcd over TLS, with this CA (``use_etcd_tls``)
    etcd_tls: EtcdTlsFiles | None = None  # the servers' etcd client certificate
    _etcd_specs: dict[str, EtcdMember] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.processes = Processes(self.root)

    @property
    def scheme(self) -> str:
        return "https" if self.pki is not None else "http"

    @property
    def server_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_port}"

    @property
    def server_urls(self) -> list[str]:
        """Every server started, in start order (just ``server_url`` for one server)."""
        urls = [f"{self.scheme}://127.0.0.1:{port}" for port in self.servers.values()]
        return urls or [self.server_url]

    @property
    def etcd_endpoints(self) -> list[str]:
        ports = list(self.etcd_members.values()) or [self.etcd_port]
        if self.etcd_pki is not None:
            return [f"https://127.0.0.1:{port}" for port in ports]
        return [f"127.0.0.1:{port}" for port in ports]

    def url_of(self, server: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.servers[server]}"

    def client(
        self, addresses: str | list[str] | None = None, token: str | None = None
    ) -> ServerClient:
        """A client of the cluster; of a secure one, trusting its CA, with ``token`` (the
        admin token by default)."""
        if self.pki is not None:
            return secure_client(addresses or self.server_url, self.pki, token or self.admin_token)
        return ServerClient(addresses or self.server_url)

    # --- one process ------------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process: SIGKILL (it gets no chance to clean up) or SIGTERM stop it and
        reap it; SIGSTOP and SIGCONT freeze and wake it."""
        process = self.processes[name]
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.stop(sig)
        else:
            process.signal(sig)

    def restart(self, name: str) -> Process:
        """Start a stopped process again with the same command line (and log)."""
        return self.processes.restart(name)

    # --- etcd -------------------------------------------------------------------------------

    def use_etcd_tls(self, pki: PkiDir) -> EtcdTlsFiles:
        """Start etcd over TLS from now on (``pki`` holds the CA key pair): members get their
        certificates and require their clients' and peers'; servers are given the client
        certificate ``etcd-client``, whose files this returns."""
        self.etcd_pki = pki
        self.etcd_tls = issue_client_cert(pki)
        return self.etcd_tls

    def etcd_data_dirs(self) -> list[Path]:
        """Every etcd member's data directory (its WAL and db snapshots), started or not."""
        return [member.data_dir for member in self._etcd_specs.values()]

    def start_etcd(self) -> None:
        """One etcd member on ``etcd_port``."""
        member = self._member("etcd", "t", self.root / "etcd", self.etcd_port, free_port())
        self._start_etcd_member("etcd", member)
        self.wait_etcd_member("etcd", 20)

    def start_etcd_members(self, count: int = 3) -> None:
        """An etcd cluster of ``count`` members (etcd-1, ...) on free ports; ``etcd_port``
        becomes the first member's client port."""
        names = [f"etcd-{i}" for i in range(1, count + 1)]
        ports = {name: (free_port(), free_port()) for name in names}  # client, peer
        pki_dir = None if self.etcd_pki is None else self.etcd_pki.root
        initial = tuple(
            (name, etcd_url("127.0.0.1", peer, pki_dir)) for name, (_, peer) in ports.items()
        )
        self.etcd_members = {name: client for name, (client, _) in ports.items()}
        self.etcd_port = self.etcd_members[names[0]]
        for name, (client, peer) in ports.items():
            token = f"t-{self.root.name}"
            member = self._member(
                name, name, self.root / name, client, peer, initial_cluster=initial, token=token
            )
            self._start_etcd_member(name, member)
        for name in names:
            self.wait_etcd_member(name)

    def _member(
        self, process: str, name: str, data: Path, client: int, peer: int, **options: Any
    ) -> EtcdMember:
        """A member's description, with TLS and its certificate when ``use_etcd_tls``."""
        pki_dir = None if self.etcd_pki is None else self.etcd_pki.root
        member = EtcdMember(name, data, client, peer, pki_dir=pki_dir, **options)
        if self.etcd_pki is not None:
            issue_etcd_certs(self.etcd_pki, [member])
        self._etcd_specs[process] = member
        return member

    def _start_etcd_member(self, name: str, member: EtcdMember) -> None:
        self.processes.start(name, member.argv(), role="etcd")

    def wait_etcd_member(self, name: str, timeout: float = 30) -> None:
        member = self._etcd_specs[name]
        self.processes[name].wait_healthy(
            lambda: member_healthy(member), timeout, f"{name} to answer"
        )

    # --- servers and agents -----------------------------------------------------------------

    def start_server(
        self,
        liveness_timeout: int = 4,
        registry_repair_interval: float = 3.0,
        name: str = "server",
        port: int | None = None,
        agent_cert_days: float | None = None,
        etcd: list[str] | None = None,
        peers: tuple[str, ...] = (),
        etcd_compaction_interval: float | None = None,
    ) -> None:
        """A server against every etcd member (or the ``etcd`` endpoints given, e.g. a
        proxy's); ``name`` and ``port`` for a further one; ``peers``: the other servers'
        URLs (``theseus server --peer``)."""
        server = ServerProcess(
            port=port or self.server_port,
            etcd=tuple(etcd or self.etcd_endpoints),
            etcd_tls=self.etcd_tls,
            liveness_timeout=liveness_timeout,
            registry_repair_interval=registry_repair_interval,
            pki_dir=self.pki.root if self.pki is not None else None,
            agent_cert_days=agent_cert_days,
            peers=peers,
            etcd_compaction_interval=etcd_compaction_interval,
        )
        self.processes.start(name, server.argv(), role="server")
        self.servers[name] = server.port
        self._wait_healthy(name, server.health_url, 30)

    def start_agent(
        self,
        name: str,
        address: str,
        driver: str = "docker",
        cpus: float = 1.0,
        mem: int = 2048,
        servers: list[str] | None = None,
        attributes: dict[str, str] | None = None,
        join_token: str | None = None,
        may_exit: bool = False,
        process_name: str | None = None,
        host_volumes: dict[str, str] | None = None,
        allow_privileged: bool = False,
        images: dict[str, Any] | None = None,
        logs: tuple[str, int] | None = None,
        stats_interval: float | None = None,
    ) -> Process:
        """An agent (again, under the name of one that has exited) on a free port of its own
        address; it is not waited for (``wait_nodes_ready``). In a secure cluster it joins
        with ``join_token`` (default: the cluster's; "" for none). ``process_name``: another
        process (and state directory) under a node's name, e.g. an impostor's; not a node of
        the cluster for ``wait_nodes_ready``. ``host_volumes``: name -> ``/path[:ro]`` its
        tasks may mount (outside ``root``: the cluster's state is never mountable).
        ``images``: ``AgentProcess``'s pull settings (``pull_timeout``, ``pod_infra_image``,
        ``registry_login_cache``, ``pull_unqualified``). ``logs``: its tasks' default log
        bound (``--log-max-size``, ``--log-max-files``). ``stats_interval``: its
        ``--stats-interval`` (the agent's default, 10 s, when None)."""
        agent = AgentProcess(
            servers=tuple(servers or [self.server_url]),
            name=name,
            address=address,
            port=free_port(address),
            state_dir=self.root / "agents" / (process_name or name),
            driver=driver,
            cpus=cpus,
            mem=mem,
            attributes=tuple((attributes or {}).items()),
            host_volumes=tuple(f"{n}={path}" for n, path in (host_volumes or {}).items()),
            allow_privileged=allow_privileged,
            join=self.server_url if self.pki is not None else None,
            log_max_size=logs[0] if logs else None,
            log_max_files=logs[1] if logs else None,
            stats_interval=stats_interval,
            **(images or {}),
        )
        token = self.join_token if join_token is None else join_token
        env = {"THESEUS_JOIN_TOKEN": token} if token else None
        process = self.processes.start(
            process_name or name, agent.argv(), role="agent", may_exit=may_exit, extra_env=env
        )
        if process_name is None and not may_exit:  # may_exit: not expected to become a node
            self.nodes[name] = address
        return process

    def wait_nodes_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            with self.client() as client:
                nodes = client.nodes().nodes
            return {n.name for n in nodes if n.status == "ready"} >= set(self.nodes)

        wait_until(ready, timeout, f"nodes {sorted(self.nodes)} ready")

    def _wait_healthy(self, name: str, url: str, timeout: float) -> None:
        verify = client_context(self.pki) if url.startswith("https") and self.pki else True
        self.processes[name].wait_healthy(
            lambda: _answers(url, verify), timeout, f"{name} to answer"
        )

    # --- the end ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Agents first (they leave containers running by design), then servers, then etcd."""
        self.processes.stop_all()

    def logs(self) -> str:
        return self.processes.logs()


def _answers(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(url, timeout=1.0, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def new_cluster(root: Path) -> Cluster:
    root.mkdir(parents=True, exist_ok=True)
    return Cluster(root=root, etcd_port=free_port(), server_port=free_port())


def start_cluster(
    root: Path,
    agents: dict[str, dict[str, Any]],
    liveness_timeout: int = 4,
    registry_repair_interval: float = 3.0,
) -> Cluster:
    """etcd, a server and the agents (name -> start_agent keyword arguments, ``address``
    included), all ready; on failure, print every process's log tail and stop them all."""
    cluster = new_cluster(root)
    with _stopped_on_failure(cluster):
        cluster.start_etcd()
        cluster.start_server(liveness_timeout, registry_repair_interval)
        for name, options in agents.items():
            cluster.start_agent(name, **options)
        cluster.wait_nodes_ready()
    return cluster


def start_ha_cluster(
    root: Path,
    agents: dict[str, dict[str, Any]],
    servers: int = 2,
    etcd_members: int = 1,
    liveness_timeout: int = 4,
) -> Cluster:
    """etcd (one member, or ``etcd_members``), ``servers`` servers (server-1, ...: each
    against every member) and the agents, each given every server's address (agent *i*
    starting with server *i*, so that the servers share the agents), all ready."""
    cluster = new_cluster(root)
    with _stopped_on_failure(cluster):
        if etcd_members > 1:
            cluster.start_etcd_members(etcd_members)
        else:
            cluster.start_etcd()
        for i in range(1, servers + 1):
            port = cluster.server_port if i == 1 else free_port()
            cluster.start_server(liveness_timeout, name=f"server-{i}", port=port)
        urls = cluster.server_urls
        for i, (name, options) in enumerate(agents.items()):
            rotated = urls[i % len(urls) :] + urls[: i % len(urls)]
            cluster.start_agent(name, **{"servers": rotated, **options})
        cluster.wait_nodes_ready()
    return cluster


def start_secure_cluster(
    root: Path,
    agents: dict[str, dict[str, Any]],
    liveness_timeout: int = 4,
    agent_cert_days: float | None = None,
    servers: int = 1,
) -> Cluster:
    """``start_cluster``, secured as ``theseus up --secure`` does it: the server serves TLS
    with a certificate from a new CA, requires tokens, and the agents join with a join token
    (in their environment) and then talk mutual TLS. ``servers`` > 1: the first is
    ``server``, the others ``server-2``...; each knows the others as its peers, and every
    agent is given them all."""
    cluster = new_cluster(root)
    cluster.pki = prepare_pki(root / "pki", root.name, ["127.0.0.1"])
    cluster.use_etcd_tls(cluster.pki)
    ports = [cluster.server_port] + [free_port() for _ in range(servers - 1)]
    urls = [f"https://127.0.0.1:{port}" for port in ports]
    with _stopped_on_failure(cluster):
        cluster.start_etcd()
        for i, port in enumerate(ports):
            cluster.start_server(
                liveness_timeout,
                name="server" if i == 0 else f"server-{i + 1}",
                port=port,
                agent_cert_days=agent_cert_days,
                peers=tuple(url for url in urls if url != urls[i]),
            )
        cluster.admin_token = bootstrap_admin(cluster.server_url, cluster.pki)
        cluster.join_token = new_join_token(
            cluster.server_url, cluster.pki, cluster.admin_token, ttl=3600
        )
        for name, options in agents.items():
            cluster.start_agent(name, **{"servers": cluster.server_urls, **options})
        cluster.wait_nodes_ready()
    return cluster


@contextlib.contextmanager
def _stopped_on_failure(cluster: Cluster) -> Iterator[None]:
    """On any failure while the cluster starts: print every process's log tail, stop them."""
    try:
        yield
    except BaseException:
        print(cluster.logs())
        cluster.stop()
        raise
