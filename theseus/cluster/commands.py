"""Command lines and addresses of the processes ``theseus up`` starts (pure, no side effects).

Called by ``theseus.cluster.local``; unit-tested directly. Keeping these pure means the exact
``etcd`` / ``server`` / ``agent`` invocations are visible in one place and in the tests.

Several etcd members and servers (``theseus up --ha``): member *i* listens on
``etcd_port + 2(i-1)`` (its peer port is the next one), server *i* on ``port + i-1``. Each server
is given every member and each agent every server, rotated so that server *i* starts with
member *i* and agent *i* with server *i*: the load is shared, and every process can fail over.
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
    servers: int = 1
    etcd_members: int = 1
    # Node attributes for placement constraints: each key's values are handed out to the
    # nodes in turn (``parse_node_attributes``).
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + i}" for i in range(self.servers)]

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    @property
    def etcd_ports(self) -> list[int]:
        """Each member's client port (its peer port is the next one)."""
        return [self.etcd_port + 2 * i for i in range(self.etcd_members)]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.etcd_ports]

    def etcd_name(self, member: int) -> str:
        """The process (and etcd member) name: ``etcd`` alone, ``etcd-1``... of several."""
        return "etcd" if self.etcd_members == 1 else f"etcd-{member}"

    def server_name(self, index: int) -> str:
        return "server" if self.servers == 1 else f"server-{index}"

    @property
    def etcd_peer_port(self) -> int:
        return self.etcd_port + 1

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def etcd_command(config: ClusterConfig, member: int = 1) -> list[str]:
    """Member ``member`` (from 1) of the cluster's etcd."""
    port = config.etcd_ports[member - 1]
    client = f"http://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{port + 1}"
    if config.etcd_members == 1:
        name, data_dir = "theseus", config.state_dir / "etcd"
        cluster = [f"theseus={peer}"]
    else:
        # Kept apart from a one-member cluster's data (and from one of another size): a
        # member's data only fits the cluster it was created in.
        name = config.etcd_name(member)
        data_dir = config.state_dir / "etcd" / f"cluster-of-{config.etcd_members}" / name
        cluster = [
            f"{config.etcd_name(i)}=http://127.0.0.1:{p + 1}"
            for i, p in enumerate(config.etcd_ports, 1)
        ]
    command = [
        config.etcd_binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        ",".join(cluster),
    ]
    if config.etcd_members > 1:
        command += ["--initial-cluster-state", "new", "--initial-cluster-token", "theseus"]
    return command + [
        # One deploy of many groups is one transaction; etcd's default of 128 ops is too few.
        "--max-txn-ops",
        "1024",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


def server_command(config: ClusterConfig, index: int = 1) -> list[str]:
    """Server ``index`` (from 1): given every etcd member, its own one first."""
    etcd: list[str] = []
    for endpoint in _rotated(config.etcd_endpoints, index - 1):
        etcd += ["--etcd", endpoint]
    return [
        config.python,
        "-m",
        "theseus",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(config.port + index - 1),
        *etcd,
    ]


def parse_node_attributes(options: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["rack=r1,r2", "zone=a"]`` → ``(("rack", ("r1", "r2")), ("zone", ("a",)))``;
    ``ValueError`` naming the bad option."""
    parsed: dict[str, tuple[str, ...]] = {}
    for option in options:
        key, sep, values = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{option!r} is not KEY=VALUE or KEY=V1,V2,...")
        if key == "hostname":
            raise ValueError("'hostname' is built in: it is the node's name")
        items = tuple(v.strip() for v in values.split(","))
        if not all(items):
            raise ValueError(f"{option!r} has an empty value")
        parsed[key] = items
    return tuple(parsed.items())


def node_attributes(config: ClusterConfig, index: int) -> dict[str, str]:
    """Node ``index``'s attributes: each key's values in turn (node-1 the first, node-2 the
    second, ..., starting over when they run out), so ``rack=r1,r2`` spreads three nodes
    over two racks."""
    return {key: values[(index - 1) % len(values)] for key, values in config.attributes}


def _rotated(items: list[str], start: int) -> list[str]:
    start %= len(items)
    return items[start:] + items[:start]


def agent_command(config: ClusterConfig, index: int) -> list[str]:
    name = node_name(index)
    command = [
        config.python,
        "-m",
        "theseus",
        "agent",
        "--server",
        ",".join(_rotated(config.api_urls, index - 1)),
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
    for key, value in node_attributes(config, index).items():
        command += ["--attr", f"{key}={value}"]
    command += ["--state-dir", str(config.state_dir / "agents" / name)]
    return command


def _number(value: float) -> str:
    """2.0 → "2", 0.5 → "0.5": the agent's options read nicer without a spurious ".0"."""
    return str(int(value)) if float(value).is_integer() else str(value)
