"""The three services of a host (pure): their command lines and environments, and how each
is run — a systemd unit modelled on Nomad's where systemd runs, a supervisor process
(``theseus.provision.keeper``) where it does not.

The command lines come from the launcher's own descriptions (``theseus.cluster.argv``), so a
host runs exactly what ``theseus up --secure`` runs on one machine, with the host's advertise
address, the cluster's ports and the hosts file's ``agent:`` and ``server:`` options (a changed
option is a changed command line, so the plan restarts that service). Called by the plan
(``theseus.provision.plan``), status and teardown.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from theseus.cluster.argv import (
    AgentProcess,
    EtcdMember,
    EtcdTlsFiles,
    LogOptions,
    ServerProcess,
)
from theseus.cluster.certs import ETCD_CLIENT
from theseus.provision.hosts import Host, HostsFile
from theseus.provision.layout import Layout

JOIN_TOKEN_VARIABLE = "THESEUS_JOIN_TOKEN"


@dataclass(frozen=True)
class Service:
    name: str  # etcd | server | agent
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # without secrets: those are added by the runner
    only_main_process: bool = False  # systemd's KillMode=process: the agent's tasks live on
    oom_protected: bool = False


def layout_of(hosts: HostsFile, host: Host) -> Layout:
    return Layout(host.prefix, hosts.cluster)


def server_url(hosts: HostsFile, host: Host) -> str:
    return f"https://{host.advertise}:{hosts.ports.api}"


def server_urls(hosts: HostsFile) -> list[str]:
    return [server_url(hosts, h) for h in hosts.servers]


def _rotated(items: list[str], first: int) -> tuple[str, ...]:
    return tuple(items[first:] + items[:first])


def etcd_member(hosts: HostsFile, host: Host) -> EtcdMember:
    layout = layout_of(hosts, host)
    peers = tuple((h.name, f"https://{h.advertise}:{hosts.ports.etcd_peer}") for h in hosts.servers)
    return EtcdMember(
        name=host.name,
        data_dir=Path(str(layout.etcd_data)),
        client_port=hosts.ports.etcd_client,
        peer_port=hosts.ports.etcd_peer,
        host=host.advertise,
        initial_cluster=peers,
        token=f"theseus-{hosts.cluster}",
        pki_dir=Path(str(layout.pki)),
    )


def etcd_service(hosts: HostsFile, host: Host) -> Service:
    member = etcd_member(hosts, host)
    return Service("etcd", tuple(member.argv()), oom_protected=True)


def server_service(hosts: HostsFile, host: Host) -> Service:
    layout = layout_of(hosts, host)
    pki = Path(str(layout.pki))
    endpoints = [f"https://{h.advertise}:{hosts.ports.etcd_client}" for h in hosts.servers]
    index = hosts.servers.index(host)
    process = ServerProcess(
        port=hosts.ports.api,
        etcd=_rotated(endpoints, index),
        host=host.advertise,
        etcd_tls=EtcdTlsFiles(
            pki / "ca.pem", pki / f"{ETCD_CLIENT}.pem", pki / f"{ETCD_CLIENT}-key.pem"
        ),
        pki_dir=pki,
        liveness_timeout=hosts.server.liveness_timeout,
        agent_cert_days=hosts.server.agent_cert_days,
        peers=tuple(url for i, url in enumerate(server_urls(hosts)) if i != index),
        python=str(layout.python),
    )
    return Service("server", tuple(process.argv()), oom_protected=True)


def agent_service(hosts: HostsFile, host: Host) -> Service:
    layout = layout_of(hosts, host)
    urls = server_urls(hosts)
    # An agent on a server host starts with its own server; the others are spread.
    index = hosts.servers.index(host) if host.is_server else hosts.hosts.index(host)
    servers = _rotated(urls, index % len(urls))
    options = host.agent
    process = AgentProcess(
        servers=servers,
        name=host.name,
        address=host.advertise,
        port=hosts.ports.agent,
        state_dir=Path(str(layout.agent_state)),
        attributes=tuple(sorted(host.attributes.items())),
        host_volumes=tuple(f"{name}={path}" for name, path in sorted(host.host_volumes.items())),
        join=servers[0],
        cpus=options.cpus,
        mem=options.mem,
        allow_privileged=bool(options.allow_privileged),
        allow_host_namespaces=bool(options.allow_host_namespaces),
        allow_caps=tuple(options.allow_caps or ()),
        pull_timeout=options.pull_timeout,
        pod_infra_image=options.pod_infra_image,
        registry_login_cache=options.registry_login_cache,
        pull_unqualified=bool(options.pull_unqualified),
        log_max_size=options.log_max_size,
        log_max_files=options.log_max_files,
        python=str(layout.python),
    )
    return Service(
        "agent",
        tuple(process.argv()),
        env=(("DOCKER_HOST", host.docker_host),),
        only_main_process=True,
    )


def services_of(hosts: HostsFile, host: Host) -> list[Service]:
    """The host's services in the order they start (and the reverse of their stopping)."""
    services = []
    if host.is_server:
        services += [etcd_service(hosts, host), server_service(hosts, host)]
    if host.is_agent:
        services.append(agent_service(hosts, host))
    return services


def env_text(service: Service, secrets: dict[str, str] | None = None) -> str:
    lines = [f"{key}={value}" for key, value in service.env]
    lines += [f"{key}={value}" for key, value in sorted((secrets or {}).items())]
    return "".join(line + "\n" for line in lines)


def config_hash(service: Service, file_hashes: dict[str, str]) -> str:
    """What a running service was started from: its command line, its environment without
    secrets (a join token removed after the join restarts nothing) and the files it reads."""
    document = {
        "argv": list(service.argv),
        "env": [list(pair) for pair in service.env],
        "files": {k: v for k, v in sorted(file_hashes.items())},
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


# --- systemd ----------------------------------------------------------------------------


def unit_text(service: Service, layout: Layout) -> str:
    """A unit modelled on Nomad's (``nomad.service``): restarted 2 s after a failure, 65536
    files, the environment file, OOM-protected etcd and server; the agent's ``KillMode=process``
    leaves its tasks running when it restarts."""
    lines = [
        "[Unit]",
        f"Description=Theseus {service.name} (cluster {layout.cluster})",
        "Wants=network-online.target",
        "After=network-online.target" + (" docker.service" if service.name == "agent" else ""),
        "",
        "[Service]",
        f"EnvironmentFile=-{layout.env_file(service.name)}",
        "ExecStart=" + shlex.join(service.argv),
        "Restart=on-failure",
        "RestartSec=2",
        "LimitNOFILE=65536",
        "TasksMax=infinity",
    ]
    if service.oom_protected:
        lines.append("OOMScoreAdjust=-1000")
    if service.only_main_process:
        lines.append("KillMode=process")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# The keeper's services that write their own log, rotated (--log-file): Theseus's. (Under
# systemd, the journal keeps and rotates every service's output.)
ROTATED_LOGS = ("server", "agent")


def keeper_argv(service: Service, layout: Layout) -> list[str]:
    """The supervisor's command line (hosts without systemd), started with ``setsid -f``."""
    argv = [str(layout.python), "-m", "theseus.provision.keeper", "--name", service.name]
    argv += ["--pidfile", str(layout.pidfile(service.name))]
    argv += ["--child-pidfile", str(layout.child_pidfile(service.name))]
    argv += ["--log", str(layout.log_file(service.name))]
    argv += ["--env-file", str(layout.env_file(service.name))]
    if service.only_main_process:
        argv.append("--only-main-process")
    child = list(service.argv)
    if service.name in ROTATED_LOGS:
        # The keeper appends its child's output to that file, which would grow without
        # bound: Theseus's processes write their log to it themselves, rotated (only what
        # bypasses logging, a crash's traceback, follows their stdout to wherever it was).
        child += LogOptions(Path(str(layout.log_file(service.name)))).argv()
    return [*argv, "--", *child]


def start_command(service: Service, layout: Layout, systemd: bool) -> str:
    if systemd:
        unit = layout.unit_name(service.name)
        return f"systemctl daemon-reload && systemctl enable {unit} && systemctl restart {unit}"
    keeper = shlex.join(keeper_argv(service, layout))
    return f"setsid -f {keeper} </dev/null >/dev/null 2>&1"


def stop_command(service: str, layout: Layout, systemd: bool) -> str:
    """Stop the service and wait until it is gone (a missing one is already stopped)."""
    if systemd:
        unit = layout.unit_name(service)
        return f"systemctl stop {unit} 2>/dev/null || true"
    pidfile = shlex.quote(str(layout.pidfile(service)))
    return (
        f"if [ -f {pidfile} ]; then pid=$(cat {pidfile}); kill -TERM $pid 2>/dev/null; "
        f"for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; fi; true"
    )
