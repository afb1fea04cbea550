"""What is known of a host before the plan is made: ``HostFacts``, read by ``probe.py`` on the
host in one SSH round trip, and the arguments that probe takes.

Called by the runner (``theseus.provision.run``: bootstrap, status, teardown); the plan
(``theseus.provision.plan``) decides from these facts alone.
"""

from __future__ import annotations

import json
import shlex
from importlib import resources

from pydantic import BaseModel, Field

from theseus.provision.hosts import Host, HostsFile
from theseus.provision.layout import SERVICES
from theseus.provision.services import layout_of

BASE_PACKAGES = ("docker.io", "python3-venv")
SERVER_PACKAGES = ("etcd-server",)


class PortState(BaseModel):
    busy: bool
    ours: bool
    holder: str = ""


class ServiceState(BaseModel):
    running: bool = False
    pid: int | None = None
    since: float | None = None
    installed: bool = False
    started: str | None = None  # the configuration hash it was last started with
    unit_sha256: str | None = None  # its systemd unit file's


class HostFacts(BaseModel):
    python: list[int]
    time: float
    systemd: bool
    apt: bool
    packages: dict[str, bool]
    own_address: bool
    ports: dict[str, PortState]
    docker: str | None = None
    etcd: str | None = None
    build: str | None = None
    venv: bool = False
    files: dict[str, str] = Field(default_factory=dict)  # path under etc/theseus -> sha256
    services: dict[str, ServiceState] = Field(default_factory=dict)
    agent_joined: bool = False
    installed_packages: list[str] = Field(default_factory=list)
    theseus_version: str | None = None
    # Measured by the workstation: the host's clock minus the midpoint of the round trip.
    skew: float = 0.0

    def service(self, name: str) -> ServiceState:
        return self.services.get(name, ServiceState())


def wanted_packages(host: Host) -> tuple[str, ...]:
    return BASE_PACKAGES + (SERVER_PACKAGES if host.is_server else ())


def host_ports(hosts: HostsFile, host: Host) -> list[int]:
    ports = []
    if host.is_server:
        ports += [hosts.ports.api, hosts.ports.etcd_client, hosts.ports.etcd_peer]
    if host.is_agent:
        ports.append(hosts.ports.agent)
    return ports


def probe_arguments(hosts: HostsFile, host: Host) -> dict[str, object]:
    layout = layout_of(hosts, host)
    return {
        "advertise": host.advertise,
        "docker_host": host.docker_host,
        "packages": list(wanted_packages(host)),
        "ports": host_ports(hosts, host),
        # A port held by a process started from this prefix is our own service's.
        "ours": [str(layout.opt) + "/", str(layout.etcd_data)],
        "etc": str(layout.etc),
        "build_record": str(layout.build_record),
        "python": str(layout.python),
        "agent_cert": str(layout.agent_cert),
        "packages_record": str(layout.packages_record),
        "services": [
            {
                "name": name,
                "unit": layout.unit_name(name),
                "unit_path": str(layout.unit_path(name)),
                "pidfile": str(layout.pidfile(name)),
                "child_pidfile": str(layout.child_pidfile(name)),
            }
            for name in SERVICES
        ],
    }


def probe_command(hosts: HostsFile, host: Host) -> str:
    """``python3 - ARGS``: the probe's source goes on stdin (``probe_source``)."""
    return "python3 - " + shlex.quote(json.dumps(probe_arguments(hosts, host)))


def probe_source() -> str:
    return resources.files("theseus.provision").joinpath("probe.py").read_text()


def clock_skew(output: str, sent: float, received: float) -> float:
    """The host's clock (``date +%s.%N``) minus the midpoint of the round trip:
    off by at most half of it."""
    return float(output.strip()) - (sent + received) / 2
