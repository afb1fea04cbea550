"""``theseus cluster teardown`` and ``theseus cluster status``.

Teardown's plan (pure, ``teardown_steps``): agents stopped on every host, then servers, then
etcd; then on each host the containers of this cluster's tasks removed from its engine (by the
``theseus.cluster`` label, ``theseus.images.labels``), the units or supervisors, every
directory this tool made under the prefix, and the packages it installed (unless told to keep
them). The workstation's state of the cluster goes last (the CLI removes its context).

Status: every host's services (running or not, pid, since), the Theseus build and version on
it, Docker's and etcd's versions, and the node as the API sees it. Called by
``theseus.cli.provision_cmd``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass

from theseus.api.client import ApiError, ServerUnreachable
from theseus.api.schemas import NodeInfo
from theseus.cluster.secure import secure_client
from theseus.images.labels import LABEL_CLUSTER
from theseus.provision.facts import HostFacts
from theseus.provision.hosts import Host, HostsFile
from theseus.provision.layout import SERVICES
from theseus.provision.plan import Step, q, shell
from theseus.provision.run import (
    Bootstrap,
    Report,
    connect_all,
    facts_of_all,
)
from theseus.provision.services import layout_of, server_urls, stop_command

TEARDOWN_PHASES = ("stop agent", "stop server", "stop etcd", "remove")


def teardown_steps(
    hosts: HostsFile,
    host: Host,
    facts: HostFacts,
    cluster_id: str | None,
    keep_packages: bool,
) -> list[Step]:
    layout = layout_of(hosts, host)
    steps: list[Step] = []
    for service in reversed(SERVICES):
        state = facts.service(service)
        if not (state.running or state.installed):
            steps.append(Step(f"stop {service}", "not running"))
            continue
        found = f"running (pid {state.pid})" if state.running else "installed"
        steps.append(
            Step(f"stop {service}", found, (shell(stop_command(service, layout, facts.systemd)),))
        )
    commands = []
    if cluster_id:
        docker = f"DOCKER_HOST={q(host.docker_host)} docker"
        listing = f"{docker} ps -aq --filter label={LABEL_CLUSTER}={q(cluster_id)}"
        # Removed, then checked gone: a removal already under way (another host sharing the
        # engine, as in a test bed) answers an error but ends with the container gone.
        commands.append(
            shell(
                f'ids=$({listing}); [ -z "$ids" ] || {docker} rm -f -v $ids >/dev/null '
                f'2>&1; for i in $(seq 50); do [ -z "$({listing})" ] && exit 0; sleep 0.2; '
                f'done; echo "containers left: $({listing})" >&2; exit 1'
            )
        )
    if facts.systemd:
        units = " ".join(q(layout.unit_path(s)) for s in SERVICES)
        names = " ".join(layout.unit_name(s) for s in SERVICES)
        commands.append(
            shell(f"systemctl disable {names} 2>/dev/null; rm -f {units}; systemctl daemon-reload")
        )
    packages = [] if keep_packages else facts.installed_packages
    if packages:
        commands.append(
            shell("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q " + " ".join(packages))
        )
    commands.append(shell("rm -rf " + " ".join(q(p) for p in layout.owned)))
    if str(layout.prefix) != "/":
        # The prefix's own directories, if this tool made them and they are empty now.
        # rmdir goes on after one that is not empty; the prefix itself last.
        parents = [layout.prefix / p for p in ("opt", "etc", "var/lib", "var/log", "var", "run")]
        parents.append(layout.prefix)
        commands.append(shell("rmdir " + " ".join(q(p) for p in parents) + " 2>/dev/null; true"))
    found = f"cluster {cluster_id or 'id unknown: containers left'}"
    if packages:
        found += f"; packages {' '.join(packages)}"
    steps.append(Step("remove", found, tuple(commands)))
    return steps


def cluster_id_of(hosts: HostsFile, boot: Bootstrap, recorded: str | None) -> str | None:
    if recorded:
        return recorded
    try:
        with secure_client(server_urls(hosts), boot.ws.pki) as client:
            return client.health().cluster_id
    except (ServerUnreachable, ApiError, OSError):
        return None


async def teardown(boot: Bootstrap, keep_packages: bool) -> Report:
    hosts = boot.hosts
    started = time.monotonic()
    report = Report(hosts.cluster, servers=boot.urls)
    connections = await connect_all(hosts.hosts, boot.accepted)
    try:
        facts = await facts_of_all(hosts, connections)
        record = boot.ws.record()
        cluster_id = await asyncio.to_thread(
            cluster_id_of, hosts, boot, record.cluster_id if record else None
        )
        plans = {
            h.name: teardown_steps(hosts, h, facts[h.name], cluster_id, keep_packages)
            for h in hosts.hosts
        }
        for phase in TEARDOWN_PHASES:
            work = [(h, s) for h in hosts.hosts for s in plans[h.name] if s.phase == phase]
            report.results += await asyncio.gather(
                *(boot.execute_step(h, s, connections[h.name]) for h, s in work)
            )
    finally:
        for connection in connections.values():
            connection.close()
    if not report.failed:
        shutil.rmtree(boot.ws.root, ignore_errors=True)
    report.elapsed = time.monotonic() - started
    return report


@dataclass(frozen=True)
class HostStatus:
    host: Host
    facts: HostFacts
    node: NodeInfo | None


async def status(boot: Bootstrap) -> list[HostStatus]:
    hosts = boot.hosts
    connections = await connect_all(hosts.hosts, boot.accepted)
    try:
        facts = await facts_of_all(hosts, connections)
    finally:
        for connection in connections.values():
            connection.close()
    nodes = await asyncio.to_thread(_nodes, boot)
    return [HostStatus(h, facts[h.name], nodes.get(h.name)) for h in hosts.hosts]


def _nodes(boot: Bootstrap) -> dict[str, NodeInfo]:
    token = boot.ws.admin_token()
    if token is None or not boot.ws.pki.ca_cert.is_file():
        return {}
    try:
        with secure_client(boot.urls, boot.ws.pki, token) as client:
            return {n.name: n for n in client.nodes().nodes}
    except (ServerUnreachable, ApiError):
        return {}
