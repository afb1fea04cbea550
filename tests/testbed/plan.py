"""The test bed's plan: every name, address and path of a test bed of N hosts, decided before
anything is made. Pure (no I/O): ``tests/unit/test_testbed_plan.py`` checks it.

Called by ``tests.testbed.up`` (what to make), ``tests.testbed.down`` (what a bed of the
recorded size is made of) and the fixture. The addresses are those of ``docs/machines.md``:

* bridge ``thstb0`` at 198.18.0.1/24 in the root namespace;
* the image registry in namespace ``ths-tb-registry`` at 198.18.0.2:5000;
* host ``h<i>`` in namespace ``ths-tb-h<i>`` at 198.18.0.<10+i>, its Docker bridge at
  198.19.<i>.1/24 and the networks its engine makes later from 198.19.<128+8(i-1)>.0/21.

Everything is in 198.18.0.0/15, the range reserved for network tests (RFC 2544): no private
10/172/192.168 range and no public address is ever used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TESTBED_RANGE = ipaddress.ip_network("198.18.0.0/15")
HOSTS_NETWORK = ipaddress.ip_network("198.18.0.0/24")  # the bridge's link
BRIDGE = "thstb0"
BRIDGE_ADDRESS = "198.18.0.1"
PREFIX_LEN = 24
NETNS_PREFIX = "ths-tb-"
REGISTRY_NAME = "registry"
REGISTRY_ADDRESS = "198.18.0.2"
REGISTRY_PORT = 5000
FIRST_HOST_OCTET = 11
MAX_HOSTS = 16  # each host's engine has 8 /24s at 198.19.128-255
SSH_PORT = 22
CLUSTER_NAME = "testbed"
# A unix socket's path is at most 107 bytes; containerd's is the longest under an exec root.
_MAX_SOCKET_PATH = 107
_CONTAINERD_SOCKET = "containerd/containerd.sock"

Role = Literal["server", "agent", "both"]


class PlanError(ValueError):
    """The test bed asked for cannot be made (too many hosts, a work directory too deep)."""


@dataclass(frozen=True)
class HostPaths:
    """Where one host keeps its things, all under ``.testbed/hosts/<name>/``: the hosts share
    this machine's filesystem, so each has its own of everything."""

    root: Path  # .testbed/hosts/<name>
    prefix: Path  # the hosts file's install.prefix: what the bootstrap installs goes here
    docker_data: Path
    docker_exec: Path
    docker_socket: Path
    docker_pidfile: Path
    docker_config: Path  # an empty daemon.json: the machine's /etc/docker/daemon.json is not ours
    docker_log: Path
    sshd_dir: Path
    sshd_config: Path
    sshd_host_key: Path
    sshd_pidfile: Path
    sshd_log: Path


@dataclass(frozen=True)
class HostPlan:
    index: int  # 1-based
    name: str  # h1, h2, ...
    netns: str  # ths-tb-h1
    address: str  # 198.18.0.11
    veth: str  # the root namespace's end, on the bridge; the other end is eth0 inside
    role: Role
    docker_bip: str  # 198.19.<i>.1/24
    docker_pool: str  # base of the networks the engine makes itself (docker network create)
    cgroup_parent: str  # every container of this engine lives in cgroups under it
    paths: HostPaths

    @property
    def docker_host(self) -> str:
        return f"unix://{self.paths.docker_socket}"

    @property
    def attributes(self) -> dict[str, str]:
        return {"host": self.name}


@dataclass(frozen=True)
class RegistryPlan:
    netns: str
    address: str
    port: int
    veth: str
    workdir: Path

    @property
    def host(self) -> str:
        """What images are named by: ``<host>/theseus/busybox:latest``."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class TestbedPlan:
    __test__ = False  # not a pytest class, whatever its name

    workdir: Path  # .testbed
    bridge: str
    bridge_cidr: str  # 198.18.0.1/24
    hosts: tuple[HostPlan, ...]
    registry: RegistryPlan

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def hosts_file(self) -> Path:
        return self.workdir / "hosts.yaml"

    @property
    def cluster_state_dir(self) -> Path:
        """``theseus cluster --state-dir``: the workstation's side of the bootstrapped cluster."""
        return self.workdir / "cluster"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def ssh_dir(self) -> Path:
        return self.workdir / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def netns_names(self) -> list[str]:
        return [self.registry.netns] + [h.netns for h in self.hosts]

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in the test bed (hosts: {self.host_names})")

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]


def host_address(index: int) -> str:
    return str(HOSTS_NETWORK.network_address + FIRST_HOST_OCTET - 1 + index)


def _host_paths(workdir: Path, name: str) -> HostPaths:
    root = workdir / "hosts" / name
    docker = root / "docker"
    sshd = root / "sshd"
    return HostPaths(
        root=root,
        prefix=root / "root",
        docker_data=docker / "data",
        docker_exec=docker / "exec",
        docker_socket=docker / "docker.sock",
        docker_pidfile=docker / "docker.pid",
        docker_config=docker / "daemon.json",
        docker_log=docker / "dockerd.log",
        sshd_dir=sshd,
        sshd_config=sshd / "sshd_config",
        sshd_host_key=sshd / "ssh_host_ed25519_key",
        sshd_pidfile=sshd / "sshd.pid",
        sshd_log=sshd / "sshd.log",
    )


def _check_in_range(what: str, address: str) -> None:
    network = ipaddress.ip_network(address, strict=False)
    if not network.subnet_of(TESTBED_RANGE):  # type: ignore[arg-type]
        raise PlanError(f"{what} {address} is outside {TESTBED_RANGE}")


def make_plan(workdir: Path, hosts: int) -> TestbedPlan:
    """The plan of a test bed of ``hosts`` hosts whose files live in ``workdir`` (absolute:
    the engines and sshds are given these paths). h1 runs a server and etcd (role ``both``),
    the others are agents."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise PlanError(f"--hosts: {hosts} is not between 1 and {MAX_HOSTS}")
    if not workdir.is_absolute():
        raise PlanError(f"the work directory {workdir} must be absolute")
    planned = []
    for index in range(1, hosts + 1):
        name = f"h{index}"
        paths = _host_paths(workdir, name)
        socket = paths.docker_exec / _CONTAINERD_SOCKET
        if len(str(socket).encode()) > _MAX_SOCKET_PATH:
            raise PlanError(
                f"the work directory {workdir} is too deep: {socket} is longer than a unix "
                f"socket's path may be ({_MAX_SOCKET_PATH} bytes)"
            )
        planned.append(
            HostPlan(
                index=index,
                name=name,
                netns=NETNS_PREFIX + name,
                address=host_address(index),
                veth=f"thstb-{name}",
                role="both" if index == 1 else "agent",
                docker_bip=f"198.19.{index}.1/24",
                docker_pool=f"198.19.{128 + 8 * (index - 1)}.0/21",
                cgroup_parent=f"/{NETNS_PREFIX}{name}",
                paths=paths,
            )
        )
    plan = TestbedPlan(
        workdir=workdir,
        bridge=BRIDGE,
        bridge_cidr=f"{BRIDGE_ADDRESS}/{PREFIX_LEN}",
        hosts=tuple(planned),
        registry=RegistryPlan(
            netns=NETNS_PREFIX + REGISTRY_NAME,
            address=REGISTRY_ADDRESS,
            port=REGISTRY_PORT,
            veth="thstb-reg",
            workdir=workdir / "registry",
        ),
    )
    for what, address in addresses(plan):
        _check_in_range(what, address)
    return plan


def addresses(plan: TestbedPlan) -> list[tuple[str, str]]:
    """Every address and network the plan uses, named: the range check's input, and the
    documentation's."""
    named = [("bridge", plan.bridge_cidr), ("registry", plan.registry.address)]
    for host in plan.hosts:
        named += [
            (f"{host.name} address", host.address),
            (f"{host.name} docker bridge", host.docker_bip),
            (f"{host.name} docker address pool", host.docker_pool),
        ]
    return named
