"""Real processes for integration tests: an etcd member, a server and agents, each started
as a child process on free loopback ports and stopped by PID, also when a test fails.

``start_ha_cluster`` starts several servers and, optionally, an etcd of several members, for
the tests of failover; ``Cluster.kill`` and ``Cluster.restart`` act on one process by name.

Tests talk to the cluster only as users do: HTTP (``ServerClient``), the ``theseus`` command,
and the Docker API for inspecting and killing containers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from theseus.api.client import ServerClient

T = TypeVar("T")


# Below the kernel's ephemeral range (32768-60999 by default) and Theseus's host ports
# (31000-32000): a port the kernel hands out (port 0, or an outgoing connection's source
# port) could be taken by a client between this check and the child's bind; these never are.
_TEST_PORTS = range(20_000, 30_000)
_next_port = _TEST_PORTS.start + (os.getpid() * 7919) % len(_TEST_PORTS)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host``, from a range the kernel never assigns, each
    handed out once per test process (a process's own children cannot race for it)."""
    global _next_port
    for _ in range(len(_TEST_PORTS)):
        port = _next_port
        _next_port = port + 1 if port + 1 < _TEST_PORTS.stop else _TEST_PORTS.start
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_TEST_PORTS} on {host}")


def wait_until(
    check: Callable[[], T | None], timeout: float, message: str, interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    root: Path
    etcd_port: int
    server_port: int
    processes: dict[str, Process] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)  # name -> address
    servers: dict[str, int] = field(default_factory=dict)  # server name -> API port
    etcd_members: dict[str, int] = field(default_factory=dict)  # name -> client port (if >1)

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def server_urls(self) -> list[str]:
        """Every server started, in start order (just ``server_url`` for one server)."""
        return [f"http://127.0.0.1:{port}" for port in self.servers.values()] or [self.server_url]

    @property
    def etcd_endpoints(self) -> list[str]:
        ports = list(self.etcd_members.values()) or [self.etcd_port]
        return [f"127.0.0.1:{port}" for port in ports]

    def url_of(self, server: str) -> str:
        return f"http://127.0.0.1:{self.servers[server]}"

    def client(self, addresses: str | list[str] | None = None) -> ServerClient:
        return ServerClient(addresses or self.server_url)

    def spawn(self, name: str, argv: list[str]) -> Process:
        log = self.root / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        handle.close()
        process = Process(name, popen, log, list(argv))
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process (SIGKILL: it gets no chance to clean up) and reap it."""
        process = self.processes[name]
        process.popen.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.popen.wait(10)

    def restart(self, name: str) -> Process:
        """Start a stopped process again with the same command line (and log)."""
        old = self.processes[name]
        assert old.popen.poll() is not None, f"{name} still runs"
        return self.spawn(name, old.argv)

    def start_etcd_members(self, count: int = 3) -> None:
        """An etcd cluster of ``count`` members (etcd-1, ...) on free ports; ``etcd_port``
        becomes the first member's client port."""
        names = [f"etcd-{i}" for i in range(1, count + 1)]
        peers = {name: free_port() for name in names}
        self.etcd_members = {name: free_port() for name in names}
        self.etcd_port = self.etcd_members[names[0]]
        initial = ",".join(f"{name}=http://127.0.0.1:{peers[name]}" for name in names)
        for name in names:
            client = f"http://127.0.0.1:{self.etcd_members[name]}"
            peer = f"http://127.0.0.1:{peers[name]}"
            self.spawn(
                name,
                [
                    "etcd",
                    f"--name={name}",
                    f"--data-dir={self.root / name}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster={initial}",
                    "--initial-cluster-state=new",
                    f"--initial-cluster-token=t-{self.root.name}",
                    "--max-txn-ops=1024",
                    "--logger=zap",
                    "--log-outputs=stderr",
                ],
            )
        for name in names:
            self.wait_etcd_member(name)

    def wait_etcd_member(self, name: str, timeout: float = 30) -> None:
        url = f"http://127.0.0.1:{self.etcd_members[name]}/health"
        wait_until(lambda: _answers(url), timeout, f"{name} healthy")

    def start_etcd(self) -> None:
        peer = free_port()
        data = self.root / "etcd"
        self.spawn(
            "etcd",
            [
                "etcd",
                "--name=t",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=t=http://127.0.0.1:{peer}",
                "--max-txn-ops=1024",
                "--logger=zap",
                "--log-outputs=stderr",
            ],
        )
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{self.etcd_port}/health"),
            20,
            "etcd answers",
        )

    def start_server(
        self,
        liveness_timeout: int = 4,
        registry_repair_interval: float = 3.0,
        name: str = "server",
        port: int | None = None,
    ) -> None:
        """A server against every etcd member; ``name`` and ``port`` for a further one."""
        port = port or self.server_port
        etcd = [arg for endpoint in self.etcd_endpoints for arg in ("--etcd", endpoint)]
        self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "theseus",
                "server",
                "--port",
                str(port),
                *etcd,
                "--liveness-timeout",
                str(liveness_timeout),
                "--registry-repair-interval",
                str(registry_repair_interval),
            ],
        )
        self.servers[name] = port
        url = f"http://127.0.0.1:{port}/v1/health"
        wait_until(lambda: _answers(url), 30, f"{name} answers")

    def start_agent(
        self,
        name: str,
        address: str,
        driver: str = "docker",
        cpus: float = 1.0,
        mem: int = 2048,
        servers: list[str] | None = None,
        attributes: dict[str, str] | None = None,
    ) -> Process:
        attrs = [f"--attr={key}={value}" for key, value in (attributes or {}).items()]
        process = self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "theseus",
                "agent",
                "--server",
                ",".join(servers or [self.server_url]),
                "--name",
                name,
                "--address",
                address,
                "--port",
                str(free_port(address)),
                "--driver",
                driver,
                "--cpus",
                str(cpus),
                "--mem",
                str(mem),
                "--state-dir",
                str(self.root / "agents" / name),
                *attrs,
            ],
        )
        self.nodes[name] = address
        return process

    def wait_nodes_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            with self.client() as client:
                nodes = client.nodes().nodes
            return {n.name for n in nodes if n.status == "ready"} >= set(self.nodes)

        wait_until(ready, timeout, f"nodes {sorted(self.nodes)} ready")

    def stop(self) -> None:
        # Agents first (they leave containers running by design), then servers, then etcd.
        def order(name: str) -> tuple[bool, bool]:
            return name.startswith("etcd"), name in self.servers or name == "server"

        for name in sorted(self.processes, key=order):
            self.processes[name].stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.processes.values())


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
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
    try:
        cluster.start_etcd()
        cluster.start_server(liveness_timeout, registry_repair_interval)
        for name, options in agents.items():
            cluster.start_agent(name, **options)
        cluster.wait_nodes_ready()
    except BaseException:
        print(cluster.logs())
        cluster.stop()
        raise
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
    try:
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
    except BaseException:
        print(cluster.logs())
        cluster.stop()
        raise
    return cluster


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def environ_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
