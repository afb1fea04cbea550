"""Real processes for integration tests: an etcd member, a server and agents, each started
as a child process on free loopback ports and stopped by PID, also when a test fails.

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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def client(self) -> ServerClient:
        return ServerClient(self.server_url)

    def spawn(self, name: str, argv: list[str]) -> Process:
        log = self.root / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        handle.close()
        process = Process(name, popen, log)
        self.processes[name] = process
        return process

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
        self, liveness_timeout: int = 4, registry_repair_interval: float = 3.0
    ) -> None:
        self.spawn(
            "server",
            [
                sys.executable,
                "-m",
                "theseus",
                "server",
                "--port",
                str(self.server_port),
                "--etcd",
                f"127.0.0.1:{self.etcd_port}",
                "--liveness-timeout",
                str(liveness_timeout),
                "--registry-repair-interval",
                str(registry_repair_interval),
            ],
        )
        wait_until(lambda: _answers(f"{self.server_url}/v1/health"), 30, "server answers")

    def start_agent(
        self, name: str, address: str, driver: str = "docker", cpus: float = 1.0, mem: int = 2048
    ) -> Process:
        process = self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "theseus",
                "agent",
                "--server",
                self.server_url,
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
        # Agents first (they leave containers running by design), then server, then etcd.
        for name in sorted(self.processes, key=lambda n: (n == "etcd", n == "server")):
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


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def environ_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
