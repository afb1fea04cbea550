"""What ``theseus up`` starts, where (pure, no side effects): its options (``ClusterConfig``)
mapped onto one description per process (``theseus.cluster.argv``), node names and addresses,
and the default state dir.

Called by ``theseus.cluster.local`` and ``theseus.cli.cluster_cmds``; unit-tested directly, so
that the exact ``etcd`` / ``server`` / ``agent`` invocations of ``up`` are visible in the tests.

Several etcd members and servers (``theseus up --ha``): member *i* listens on
``etcd_port + 2(i-1)`` (its peer port is the next one), server *i* on ``port + i-1``. Each server
is given every member and each agent every server, rotated so that server *i* starts with
member *i* and agent *i* with server *i*: the load is shared, and every process can fail over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from theseus.cluster.argv import (
    LOOPBACK,
    AgentProcess,
    EtcdMember,
    LogOptions,
    ServerProcess,
    etcd_url,
)
from theseus.cluster.certs import etcd_client_files
from theseus.security.files import PkiDir

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
    # ``NAME=/path[:ro]`` host volumes every agent declares (``theseus agent --host-volume``).
    host_volumes: tuple[str, ...] = ()
    # ``--secure``: a CA, TLS, tokens; agents join with a join token (docs/security.md).
    secure: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def api_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"{self.scheme}://127.0.0.1:{self.port + i}" for i in range(self.servers)]

    @property
    def pki_dir(self) -> Path:
        """The servers' certificates and the CA (``--secure`` only)."""
        return self.state_dir / "pki"

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


def etcd_member(config: ClusterConfig, member: int = 1) -> EtcdMember:
    """Member ``member`` (from 1) of the cluster's etcd (over TLS with ``--secure``)."""
    port = config.etcd_ports[member - 1]
    pki_dir = config.pki_dir if config.secure else None
    if config.etcd_members == 1:
        return EtcdMember(
            name="theseus",
            data_dir=config.state_dir / "etcd",
            client_port=port,
            peer_port=port + 1,
            binary=config.etcd_binary,
            pki_dir=pki_dir,
        )
    name = config.etcd_name(member)
    return EtcdMember(
        name=name,
        # Kept apart from a one-member cluster's data (and from one of another size): a
        # member's data only fits the cluster it was created in.
        data_dir=config.state_dir / "etcd" / f"cluster-of-{config.etcd_members}" / name,
        client_port=port,
        peer_port=port + 1,
        initial_cluster=tuple(
            (config.etcd_name(i), etcd_url(LOOPBACK, p + 1, pki_dir))
            for i, p in enumerate(config.etcd_ports, 1)
        ),
        token="theseus",
        binary=config.etcd_binary,
        pki_dir=pki_dir,
    )


def etcd_command(config: ClusterConfig, member: int = 1) -> list[str]:
    return etcd_member(config, member).argv()


def server_process(config: ClusterConfig, index: int = 1) -> ServerProcess:
    """Server ``index`` (from 1): given every etcd member, its own one first."""
    members = [etcd_member(config, m).endpoint for m in range(1, config.etcd_members + 1)]
    return ServerProcess(
        port=config.port + index - 1,
        etcd=tuple(_rotated(members, index - 1)),
        python=config.python,
        pki_dir=config.pki_dir if config.secure else None,
        etcd_tls=etcd_client_files(PkiDir(config.pki_dir)) if config.secure else None,
        # The file its output is appended to (``theseus.cluster.supervise``): it writes its
        # log there itself, rotated, so a cluster left up does not fill the disk.
        log=LogOptions(config.log_file(config.server_name(index))),
        # Where its dashboard's tabs go when it stops answering: the others.
        peers=tuple(url for i, url in enumerate(config.api_urls, 1) if i != index),
    )


def server_command(config: ClusterConfig, index: int = 1) -> list[str]:
    return server_process(config, index).argv()


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


def agent_process(config: ClusterConfig, index: int) -> AgentProcess:
    """Agent ``index`` (from 1): node-``index`` on its own loopback address, given every
    server, server ``index`` first."""
    name = node_name(index)
    return AgentProcess(
        servers=tuple(_rotated(config.api_urls, index - 1)),
        name=name,
        address=node_address(index),
        port=AGENT_PORT,
        state_dir=config.state_dir / "agents" / name,
        driver=config.driver,
        cpus=config.node_cpus,
        mem=config.node_mem,
        attributes=tuple(node_attributes(config, index).items()),
        host_volumes=config.host_volumes,
        python=config.python,
        join=config.api_url if config.secure else None,
        log=LogOptions(config.log_file(name)),  # as the servers' (server_process)
    )


def agent_command(config: ClusterConfig, index: int) -> list[str]:
    return agent_process(config, index).argv()
