"""Command lines and addresses of the processes ``theseus up`` starts (pure, no side effects).

Called by ``theseus.cluster.local``; unit-tested directly. Keeping these pure means the exact
``etcd`` / ``server`` / ``agent`` invocations are visible in one place and in the tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

AGENT_PORT = 5051  # every agent listens on its own loopback address, so one port fits all
DRIVERS = ("docker", "process", "sim")


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/theseus``, else ``~/.local/state/theseus`` (XDG base-dir spec)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or ""
    # The spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "state")
    return Path(base) / "theseus"


def node_name(index: int) -> str:
    return f"node-{index}"


def node_address(index: int) -> str:
    """node-1 → 127.0.0.2, node-2 → 127.0.0.3, ...: all of 127.0.0.0/8 is loopback on Linux,
    so each agent gets its own address and can publish container ports without collisions."""
    if not 1 <= index <= 253:
        raise ValueError(f"node index {index} out of range 1..253")
    return f"127.0.0.{index + 1}"


@dataclass(frozen=True)
class ClusterConfig:
    """What ``theseus up`` was asked for."""

    state_dir: Path
    nodes: int = 3
    port: int = 5000
    etcd_port: int = 2379
    driver: str | None = None  # None: the agent's own default
    node_cpus: float | None = None  # None: the agent measures the machine
    node_mem: float | None = None  # MB
    python: str = "python3"
    etcd_binary: str = "etcd"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    @property
    def etcd_peer_port(self) -> int:
        return self.etcd_port + 1

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def etcd_command(config: ClusterConfig) -> list[str]:
    client = f"http://127.0.0.1:{config.etcd_port}"
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    return [
        config.etcd_binary,
        "--name",
        "theseus",
        "--data-dir",
        str(config.state_dir / "etcd"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"theseus={peer}",
        # One deploy of many groups is one transaction; etcd's default of 128 ops is too few.
        "--max-txn-ops",
        "1024",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


def server_command(config: ClusterConfig) -> list[str]:
    return [
        config.python,
        "-m",
        "theseus",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(config.port),
        "--etcd",
        config.etcd_endpoint,
    ]


def agent_command(config: ClusterConfig, index: int) -> list[str]:
    name = node_name(index)
    command = [
        config.python,
        "-m",
        "theseus",
        "agent",
        "--server",
        config.api_url,
        "--name",
        name,
        "--address",
        node_address(index),
        "--port",
        str(AGENT_PORT),
    ]
    if config.driver is not None:
        command += ["--driver", config.driver]
    if config.node_cpus is not None:
        command += ["--cpus", _number(config.node_cpus)]
    if config.node_mem is not None:
        command += ["--mem", _number(config.node_mem)]
    command += ["--state-dir", str(config.state_dir / "agents" / name)]
    return command


def _number(value: float) -> str:
    """2.0 → "2", 0.5 → "0.5": the agent's options read nicer without a spurious ".0"."""
    return str(int(value)) if float(value).is_integer() else str(value)
