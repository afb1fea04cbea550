"""``theseus up`` / ``theseus down``: supervise a one-machine cluster (etcd, server, N agents;
with ``--ha``, three etcd members and two servers).

Called by ``theseus.cli.cluster_cmds``; prints nothing itself (progress goes through the
``report`` callback, failures are raised as ``ClusterError`` carrying the failing process's log
tail). Processes are detached children recorded in ``STATE/cluster.json``; ``down`` stops them
from that record in the reverse order of start, so that no agent outlives its server and no
server outlives etcd.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.api.schemas import NodeInfo
from theseus.cluster import procs, statefile
from theseus.cluster.certs import ETCD_CLIENT, issue_client_cert, issue_etcd_certs
from theseus.cluster.commands import (
    AGENT_PORT,
    ClusterConfig,
    agent_command,
    etcd_member,
    node_address,
    node_attributes,
    node_name,
    server_command,
)
from theseus.cluster.etcd_probe import etcd_answers, member_healthy
from theseus.cluster.secure import (
    ClientAccess,
    ensure_admin_token,
    local_access,
    new_join_token,
    prepare_pki,
)
from theseus.cluster.statefile import ClusterRecord, ProcessRecord, ProcessRole
from theseus.cluster.supervise import (
    STOP_GRACE,
    Processes,
    ProcessExited,
    SpawnOptions,
    tail,
)
from theseus.cluster.waiting import WaitTimeout
from theseus.security.files import PkiDir
from theseus.security.tls import client_context

Report = Callable[[str], None]
UP_DEADLINE = 60.0
PLAIN = ClientAccess()


class ClusterError(RuntimeError):
    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log
        self.log_tail = tail(log) if log is not None else None


@dataclass
class UpResult:
    record: ClusterRecord
    already_running: bool
    nodes: list[NodeInfo] = field(default_factory=list)
    # ``--secure``: what the CLI's context needs (the CA's certificate, the admin token).
    ca_cert: bytes | None = None
    admin_token: str | None = None


# --- probes -------------------------------------------------------------------------------


def etcd_healthy(port: int) -> bool:
    """A plain member on loopback answers (``etcd_probe.member_healthy`` also does TLS)."""
    return etcd_answers(f"http://127.0.0.1:{port}/health")


def _client(api_url: str, access: ClientAccess) -> ServerClient:
    return access.client(api_url, timeout=2.0)


def server_cluster_id(api_url: str, access: ClientAccess = PLAIN) -> str | None:
    """The server's cluster id, or None when it does not answer."""
    try:
        with _client(api_url, access) as client:
            return client.health().cluster_id or ""
    except (ServerUnreachable, ApiError):
        return None


def server_role(api_url: str, access: ClientAccess = PLAIN) -> str:
    """``leader``, ``follower`` or ``not answering``: what ``up`` shows for each server."""
    try:
        with _client(api_url, access) as client:
            return "leader" if client.health().leader else "follower"
    except (ServerUnreachable, ApiError):
        return "not answering"


def ready_nodes(
    api_url: str,
    names: set[str],
    attributes: dict[str, dict[str, str]] | None = None,
    access: ClientAccess = PLAIN,
) -> list[NodeInfo]:
    """The nodes of ``names`` that are ready; with ``attributes`` (by name), only once their
    record carries those: a node of a cluster stopped moments ago still reads as ready, with
    the attributes it had, until its liveness lease runs out."""
    try:
        with _client(api_url, access) as client:
            nodes = client.nodes().nodes
    except (ServerUnreachable, ApiError):
        return []
    return [
        n
        for n in nodes
        if n.name in names
        and n.status == "ready"
        and (attributes is None or n.attributes == attributes[n.name])
    ]


def is_running(record: ClusterRecord) -> bool:
    """Every recorded process is alive and ours, and every etcd member and a server answer."""
    if not record.processes or not all(procs.is_ours(p) for p in record.processes):
        return False
    if record.api_url.startswith("https"):  # --secure: etcd wants a client certificate too
        context = client_context(PkiDir(Path(record.state_dir) / "pki"), ETCD_CLIENT)
        urls = [f"https://127.0.0.1:{port}/health" for port in record.etcd_ports]
        if not all(etcd_answers(url, context) for url in urls):
            return False
    elif not all(etcd_healthy(port) for port in record.etcd_ports):
        return False
    return server_cluster_id(record.server_address, record_access(record)) is not None


def record_access(record: ClusterRecord) -> ClientAccess:
    """How to call the cluster of ``record``: its CA and admin token if it is secure."""
    return local_access(Path(record.state_dir) / "pki")


# --- up -----------------------------------------------------------------------------------


@dataclass
class _Starter:
    """The processes started so far by one ``up`` (detached, but our children while ``up``
    runs, so that an early exit shows) and the record that is saved after each start."""

    config: ClusterConfig
    record: ClusterRecord
    deadline: float
    processes: Processes = field(init=False)

    def __post_init__(self) -> None:
        options = SpawnOptions(cwd=self.config.state_dir, detached=True)
        self.processes = Processes(self.config.log_dir, options)

    def start(
        self,
        name: str,
        role: ProcessRole,
        command: list[str],
        address: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        process = self.processes.start(name, command, role, extra_env=extra_env)
        entry = ProcessRecord(
            name=name,
            role=role,
            pid=process.pid,
            command=command,
            log=str(process.log),
            address=address,
        )
        self.record.processes.append(entry)
        statefile.save(self.config.state_dir, self.record)

    def wait_until(self, what: str, check: Callable[[], bool], blame: str) -> None:
        """Poll ``check`` until true, within what is left of ``up``'s deadline; fail early if
        any started process has exited."""
        remaining = max(0.0, self.deadline - time.monotonic())
        try:
            self.processes.wait_until(check, remaining, what, interval=0.2)
        except ProcessExited as exc:
            message = f"{exc.name} exited with code {exc.code} while waiting for {what}"
            raise ClusterError(message, exc.log) from None
        except WaitTimeout:
            message = f"timed out after {UP_DEADLINE:.0f} s waiting for {what}"
            raise ClusterError(message, self.config.log_file(blame)) from None

    def rollback(self) -> None:
        self.processes.stop_all(STOP_GRACE)
        statefile.clear(self.config.state_dir)


def _check_ports(config: ClusterConfig) -> None:
    wanted = [("127.0.0.1", config.port + i, "--port") for i in range(config.servers)]
    for port in config.etcd_ports:
        wanted += [
            ("127.0.0.1", port, "--etcd-port"),
            ("127.0.0.1", port + 1, "--etcd-port (peer port = etcd port + 1)"),
        ]
    wanted += [(node_address(i), AGENT_PORT, "agent port") for i in range(1, config.nodes + 1)]
    for host, port, option in wanted:
        if procs.port_in_use(host, port):
            raise ClusterError(
                f"{host}:{port} is already in use ({option}); is another cluster running? "
                "stop it with `theseus down` or choose other ports"
            )


def up(config: ClusterConfig, report: Report) -> UpResult:
    """Start etcd, a server and ``config.nodes`` agents; idempotent for a running cluster."""
    state_dir = config.state_dir
    previous = statefile.load(state_dir)
    if previous is not None:
        if is_running(previous):
            if previous.api_url.startswith("https") != config.secure:
                kind = "secure" if previous.api_url.startswith("https") else "development"
                raise ClusterError(
                    f"a {kind} cluster is running from {state_dir}: stop it first "
                    "(`theseus down`), or give another --state-dir and ports"
                )
            names = {p.name for p in previous.by_role("agent")}
            access = record_access(previous)
            found = ready_nodes(previous.server_address, names, access=access)
            return UpResult(previous, True, found, *_secure_result(config, access))
        leftovers = [p for p in reversed(previous.processes) if procs.is_ours(p)]
        if leftovers:
            report(f"stopping what is left of the previous cluster in {state_dir}")
            procs.stop(leftovers, grace=STOP_GRACE)
        statefile.clear(state_dir)

    etcd = shutil.which(config.etcd_binary)
    if etcd is None:
        raise ClusterError(
            f"`{config.etcd_binary}` not found on PATH: install Debian's etcd-server "
            "(scripts/setup does it)"
        )
    _check_ports(config)
    for sub in ("logs", "etcd", "agents"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    (state_dir / "etcd").chmod(0o700)  # etcd refuses a data dir readable by others

    record = ClusterRecord(
        state_dir=str(state_dir),
        api_url=config.api_url,
        etcd_endpoint=config.etcd_endpoint,
        port=config.port,
        etcd_port=config.etcd_port,
        driver=config.driver,
    )
    if config.servers > 1 or config.etcd_members > 1:
        record.api_urls = config.api_urls
        record.etcd_endpoints = config.etcd_endpoints
    starter = _Starter(config, record, time.monotonic() + UP_DEADLINE)
    access = PLAIN
    agent_env: dict[str, str] | None = None
    try:
        if config.secure:
            report(f"making the cluster's CA and the servers' certificates in {config.pki_dir}")
            files = prepare_pki(config.pki_dir, "local", ["127.0.0.1", "localhost"])
            members = [etcd_member(config, m) for m in range(1, config.etcd_members + 1)]
            issue_etcd_certs(files, members)
            issue_client_cert(files)
            access = ClientAccess(client_context(ca_pem=files.read_ca()))
        _start_etcd(starter, etcd, report)
        record.cluster_id = _start_servers(starter, report, access)
        statefile.save(state_dir, record)
        if config.secure:
            access = access._replace(token=ensure_admin_token(config.api_url, files))
            assert access.token is not None
            # The agents' join token lives ten minutes: enough to join, not worth stealing.
            join = new_join_token(config.api_url, files, access.token, ttl=600)
            agent_env = {"THESEUS_JOIN_TOKEN": join}

        names = {node_name(i) for i in range(1, config.nodes + 1)}
        declared = {node_name(i): node_attributes(config, i) for i in range(1, config.nodes + 1)}
        report(f"starting {config.nodes} agents ({', '.join(sorted(names))})")
        for i in range(1, config.nodes + 1):
            command = agent_command(config, i)
            starter.start(node_name(i), "agent", command, node_address(i), agent_env)
        nodes: list[NodeInfo] = []

        def agents_ready() -> bool:
            nodes[:] = ready_nodes(record.server_address, names, declared, access)
            return len(nodes) == len(names)

        starter.wait_until("the nodes to be ready", agents_ready, "node-1")
    except BaseException:
        starter.rollback()
        raise
    result = UpResult(record, False, sorted(nodes, key=lambda n: n.name))
    result.ca_cert, result.admin_token = _secure_result(config, access)
    return result


def _secure_result(config: ClusterConfig, access: ClientAccess) -> tuple[bytes | None, str | None]:
    if not config.secure:
        return None, None
    return PkiDir(config.pki_dir).read_ca(), access.token


def _start_etcd(starter: _Starter, binary: str, report: Report) -> None:
    """Every member first (each waits for the others to form a cluster), then their health."""
    config = starter.config
    names = [config.etcd_name(m) for m in range(1, config.etcd_members + 1)]
    if len(names) == 1:
        report(f"starting etcd on {config.etcd_endpoint}")
    else:
        report(f"starting {len(names)} etcd members on {', '.join(config.etcd_endpoints)}")
    members = [replace(etcd_member(config, m), binary=binary) for m in range(1, len(names) + 1)]
    for name, member in zip(names, members, strict=True):
        starter.start(name, "etcd", member.argv())
    for name, member in zip(names, members, strict=True):
        starter.wait_until(name, partial(member_healthy, member), name)


def _start_servers(starter: _Starter, report: Report, access: ClientAccess) -> str | None:
    """Start the servers, wait until each answers; the cluster id they agree on."""
    config = starter.config
    names = [config.server_name(i) for i in range(1, config.servers + 1)]
    if len(names) == 1:
        report(f"starting the server on {config.api_url}")
    else:
        report(f"starting {len(names)} servers on {', '.join(config.api_urls)}")
    for index, name in enumerate(names, 1):
        starter.start(name, "server", server_command(config, index))
    answers: dict[str, str] = {}

    def server_up(url: str) -> bool:
        cluster_id = server_cluster_id(url, access)
        if cluster_id is not None:
            answers[url] = cluster_id
        return cluster_id is not None

    for name, url in zip(names, config.api_urls, strict=True):
        starter.wait_until(name, partial(server_up, url), name)
    return answers[config.api_url] or None


# --- down ---------------------------------------------------------------------------------


def _remove_containers(cluster_id: str) -> int:
    # Imported here: the Docker client is only needed when there are containers to remove.
    from theseus.images.containers import remove_cluster_containers

    removed: int = asyncio.run(remove_cluster_containers(cluster_id))
    return removed


def down(state_dir: Path, purge: bool, report: Report) -> None:
    """Stop agents, then the server, remove the cluster's containers, stop etcd. Safe to run
    when nothing runs. ``purge`` also deletes the state dir (only if it is Theseus's)."""
    record = statefile.load(state_dir)
    if record is None:
        report(f"no cluster recorded in {state_dir}; nothing to stop")
    else:
        access = record_access(record)
        cluster_id = record.cluster_id or server_cluster_id(record.server_address, access) or None
        for role in ("agent", "server"):
            for name, outcome in procs.stop(record.by_role(role), STOP_GRACE).items():
                report(f"{name}: {outcome}")
        if record.driver in (None, "docker") and cluster_id:
            try:
                removed = _remove_containers(cluster_id)
            except Exception as exc:  # Docker down or absent: report, and keep tearing down
                report(f"containers: could not remove ({exc.__class__.__name__}: {exc})")
            else:
                report(f"containers: removed {removed}")
        elif record.driver in (None, "docker"):
            report("containers: cluster id unknown, none removed")
        for name, outcome in procs.stop(record.by_role("etcd"), STOP_GRACE).items():
            report(f"{name}: {outcome}")
        statefile.clear(state_dir)
    if purge and state_dir.exists():
        if not statefile.is_state_dir(state_dir):
            raise ClusterError(f"{state_dir} does not look like a Theseus state dir; not deleting")
        shutil.rmtree(state_dir)
        report(f"deleted {state_dir}")
