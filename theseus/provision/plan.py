"""The plan of ``theseus cluster bootstrap`` (pure): the hosts file, what is known of a host
(``HostFacts``) and what the workstation wants on it (``Desired``) → the host's ordered steps,
each with what it checked and the commands that bring the host there (none: already so).

Steps, one per phase; every host goes through the same phases, and a phase starts on all hosts
only when the previous one ended on all of them (etcd needs every server host configured,
agents need the servers):

  preflight  Python, the advertise address is the host's, ports free (or held by our own
             service), clock skew, systemd or not: checks only
  packages   docker.io, python3-venv (+ etcd-server on servers): only the missing ones, recorded
  docker     the Engine at the host's docker_host answers
  theseus    the workstation's wheelhouse installed into <prefix>/opt/theseus/venv, when the
             host's recorded build differs
  config     certificates and environment files, each written only when its content differs
  services   systemd units (where systemd runs) or the supervisor's module present
  etcd       each member (re)started when not running or its configuration changed; healthy
  servers    the same; healthy; the first admin token once (on the first server host)
  agents     a fresh join token for an agent not yet joined, (re)started, its node ready, the
             token removed from its environment file

Called by ``theseus.provision.run``; unit-tested on its own (tests/unit/test_provision_plan.py).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from theseus.provision.facts import HostFacts, host_ports, wanted_packages
from theseus.provision.hosts import Host, HostsFile
from theseus.provision.layout import Layout
from theseus.provision.services import (
    JOIN_TOKEN_VARIABLE,
    Service,
    config_hash,
    env_text,
    layout_of,
    server_url,
    services_of,
    start_command,
    stop_command,
    unit_text,
)

PHASES = (
    "preflight",
    "packages",
    "docker",
    "theseus",
    "config",
    "services",
    "etcd",
    "servers",
    "agents",
)
MIN_PYTHON = (3, 11)
MAX_SOCKET_PATH = 107
MAX_SKEW = 1.0  # seconds: certificates, leases and token expiry all read the clock
PIP_ENV = "PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1"

CommandKind = Literal["run", "put", "put_dir", "local"]
# What the runner does itself, from the workstation, for a ``local`` command.
LocalAction = Literal["wait_server", "bootstrap_admin", "join_token", "wait_node"]


@dataclass(frozen=True)
class Command:
    """One thing a step does: a shell command on the host (``run``), a file written there by
    SFTP (``put``: ``content``, plus the run's secrets named in ``secrets`` as ``KEY=value``
    lines), a local directory copied (``put_dir``), or an action of the workstation's."""

    kind: CommandKind
    target: str  # run: the shell command; put/put_dir: the remote path; local: the action
    content: bytes = b""
    mode: int = 0o644
    source: Path | None = None  # put_dir: the local directory
    secrets: tuple[str, ...] = ()
    argument: str = ""  # local: a URL or a node name

    def show(self) -> str:
        """How it is printed (``--dry-run``, errors): never a secret."""
        if self.kind == "run":
            return self.target
        if self.kind == "put":
            extra = "".join(f", {name}=<redacted>" for name in self.secrets)
            return f"write {self.target} ({len(self.content)} bytes, mode {self.mode:04o}{extra})"
        if self.kind == "put_dir":
            return f"copy {self.source}/ to {self.target}/ (sftp)"
        return f"[workstation] {self.target.replace('_', ' ')} {self.argument}".rstrip()


@dataclass(frozen=True)
class Step:
    phase: str
    check: str  # what was found
    commands: tuple[Command, ...] = ()
    error: str | None = None  # found wrong and not for this tool to fix: the step fails

    @property
    def needed(self) -> bool:
        return bool(self.commands)


@dataclass(frozen=True)
class DesiredFile:
    path: str  # under <prefix>/etc/theseus
    content: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Desired:
    """What the workstation wants on one host."""

    files: tuple[DesiredFile, ...]
    build: str  # the wheelhouse's hash
    wheelhouse: Path
    project_wheel: str  # its file name in the wheelhouse
    pip_wheel: str  # pip's, run from the wheel itself
    python: tuple[int, int]  # the workstation's: the wheelhouse is built for it
    admin_token_known: bool = False
    first_server: str = ""  # the host that bootstraps the admin token


def q(path: PurePosixPath | str) -> str:
    return shlex.quote(str(path))


def shell(text: str) -> Command:
    return Command("run", text)


# --- preflight -------------------------------------------------------------------------


def preflight(hosts: HostsFile, host: Host, facts: HostFacts, desired: Desired) -> Step:
    found = [
        f"python {'.'.join(map(str, facts.python))}",
        f"systemd {'yes' if facts.systemd else 'no'}",
        f"skew {facts.skew:+.3f} s",
    ]
    problems: list[str] = []
    version = tuple(facts.python[:2])
    if version < MIN_PYTHON:
        problems.append(f"python3 is {'.'.join(map(str, facts.python))}; 3.11 or later needed")
    elif version != desired.python:
        problems.append(
            f"python3 is {version[0]}.{version[1]}, the workstation's "
            f"{desired.python[0]}.{desired.python[1]}: the wheels built here are for that one"
        )
    if not facts.own_address:
        problems.append(
            f"the advertise address {host.advertise} is not one of {host.name}'s own addresses"
        )
    for port in host_ports(hosts, host):
        state = facts.ports.get(str(port))
        if state is not None and state.busy and not state.ours:
            holder = f" by {state.holder}" if state.holder else ""
            problems.append(f"port {port} on {host.advertise} is taken{holder}")
    socket = layout_of(hosts, host).agent_state / "discovery" / "agent.sock"
    if host.is_agent and len(str(socket)) > MAX_SOCKET_PATH:
        problems.append(
            f"install.prefix {host.prefix} is too long: the agent's socket {socket} would be "
            f"over {MAX_SOCKET_PATH} bytes, the limit of a unix socket's path"
        )
    if abs(facts.skew) >= MAX_SKEW:
        problems.append(
            f"its clock is {facts.skew:+.2f} s off the workstation's (at most {MAX_SKEW:g} s): "
            "run an NTP client (chrony, systemd-timesyncd)"
        )
    return Step("preflight", ", ".join(found), error="; ".join(problems) or None)


# --- packages, docker, theseus ------------------------------------------------------------


def packages(host: Host, facts: HostFacts, layout: Layout) -> Step:
    missing = [p for p in wanted_packages(host) if not facts.packages.get(p, False)]
    if not missing:
        return Step("packages", "present: " + " ".join(wanted_packages(host)))
    if not facts.apt:
        return Step(
            "packages",
            "missing: " + " ".join(missing),
            error=f"no apt-get on {host.name}: install {' '.join(missing)} by hand",
        )
    names = " ".join(missing)
    record = q(layout.packages_record)
    return Step(
        "packages",
        "missing: " + names,
        (
            shell(
                "DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND="
                f"noninteractive apt-get install -y -q --no-install-recommends {names}"
            ),
            # Recorded so that teardown removes exactly what this tool installed.
            shell(f"mkdir -p {q(layout.lib)} && printf '%s\\n' {names} >> {record}"),
        ),
    )


def docker(host: Host, facts: HostFacts) -> Step:
    if facts.docker is not None:
        return Step("docker", f"Docker Engine {facts.docker} at {host.docker_host}")
    wait = (
        f"for i in $(seq 60); do DOCKER_HOST={q(host.docker_host)} docker version >/dev/null "
        "2>&1 && exit 0; sleep 0.5; done; echo 'the Docker Engine at "
        f"{host.docker_host} does not answer' >&2; exit 1"
    )
    commands: list[Command] = []
    if facts.systemd and host.docker_host == "unix:///var/run/docker.sock":
        commands.append(shell("systemctl enable --now docker"))
    commands.append(shell(wait))
    return Step("docker", f"no answer from {host.docker_host}", tuple(commands))


def theseus(facts: HostFacts, layout: Layout, desired: Desired) -> Step:
    if facts.build == desired.build and facts.venv:
        return Step("theseus", f"build {desired.build} installed")
    found = f"build {facts.build or 'none'}, want {desired.build}"
    wheels = layout.wheels
    wheel = wheels / desired.project_wheel
    # pip runs from its wheel in the wheelhouse (the venv has none: ensurepip installing and
    # compiling pip and setuptools was 8 of 22 s), and compiles nothing: a module is compiled
    # when first imported (compiling all of them took 8 of the 14 s pip took).
    pip = (
        f"{PIP_ENV} {q(layout.python)} {q(wheels / desired.pip_wheel / 'pip')} install -q "
        f"--no-compile --no-index --find-links {q(wheels)}"
    )
    commands = [
        shell(f"rm -rf {q(wheels)} && mkdir -p {q(wheels)}"),
        Command("put_dir", str(wheels), source=desired.wheelhouse),
    ]
    if not facts.venv:
        commands.append(shell(f"python3 -m venv --without-pip {q(layout.venv)}"))
    commands.append(shell(f"{pip} {q(wheel)}"))
    if facts.venv:
        # The project's version does not change with every build: reinstall it by its wheel.
        commands.append(shell(f"{pip} --no-deps --force-reinstall {q(wheel)}"))
    commands += [
        shell(f"printf '%s\\n' {desired.build} > {q(layout.build_record)} && rm -rf {q(wheels)}"),
    ]
    return Step("theseus", found, tuple(commands))


# --- config, services ---------------------------------------------------------------------


def config(facts: HostFacts, layout: Layout, desired: Desired) -> Step:
    changed = [f for f in desired.files if facts.files.get(f.path) != f.sha256]
    if not changed:
        return Step("config", f"{len(desired.files)} files up to date")
    commands = [
        shell(
            f"mkdir -p {q(layout.pki)} {q(layout.lib)} {q(layout.log)} {q(layout.run)} && "
            f"chmod 700 {q(layout.pki)}"
        )
    ]
    commands += [Command("put", str(layout.etc / f.path), f.content, f.mode) for f in changed]
    return Step("config", f"{len(changed)} of {len(desired.files)} files differ", tuple(commands))


def services_step(hosts: HostsFile, host: Host, facts: HostFacts, layout: Layout) -> Step:
    services = services_of(hosts, host)
    if not facts.systemd:
        return Step("services", "no systemd: supervised by theseus.provision.keeper")
    changed = []
    for service in services:
        text = unit_text(service, layout).encode()
        if facts.service(service.name).unit_sha256 != hashlib.sha256(text).hexdigest():
            changed.append(Command("put", str(layout.unit_path(service.name)), text, 0o644))
    if not changed:
        return Step("services", "systemd units installed")
    return Step(
        "services",
        f"{len(changed)} units to write",
        (*changed, shell("systemctl daemon-reload")),
    )


def desired_hash(service: Service, layout: Layout, facts: HostFacts) -> str:
    """The configuration a service should be running with; files are the desired ones, so
    the plan needs no second look after the config step."""
    return config_hash(service, {"unit": unit_text(service, layout) if facts.systemd else ""})


def _restart(service: Service, layout: Layout, facts: HostFacts) -> list[Command]:
    state = facts.service(service.name)
    commands: list[Command] = []
    if state.installed or state.running:
        commands.append(shell(stop_command(service.name, layout, facts.systemd)))
    commands.append(shell(start_command(service, layout, facts.systemd)))
    if not facts.systemd:
        pidfile = q(layout.child_pidfile(service.name))
        commands.append(
            shell(
                f"for i in $(seq 100); do [ -f {pidfile} ] && exit 0; sleep 0.1; done; "
                f"echo 'the supervisor of {service.name} did not start' >&2; exit 1"
            )
        )
    return commands


def stays_up(name: str, layout: Layout, seconds: int = 3) -> str:
    """Fails, with its log's tail, if the supervised service restarts before it has run for
    ``seconds`` (an agent can register, and look ready, then fail on its next step)."""
    child, log = q(layout.child_pidfile(name)), q(layout.log_file(name))
    return (
        f"p=$(cat {child}); for i in $(seq 100); do "
        f'if [ "$(cat {child} 2>/dev/null)" != "$p" ] || ! kill -0 "$p" 2>/dev/null; then '
        f"echo '{name} restarted; its log:' >&2; tail -n 5 {log} >&2; exit 1; fi; "
        f'[ "$(ps -o etimes= -p "$p" | tr -d " ")" -ge {seconds} ] && exit 0; sleep 0.2; done; '
        f"exit 1"
    )


def _record(service: Service, layout: Layout, wanted: str) -> Command:
    return shell(f"printf '%s\\n' {wanted} > {q(layout.started_record(service.name))}")


def _service_state(facts: HostFacts, service: Service, wanted: str) -> tuple[bool, str]:
    state = facts.service(service.name)
    if state.running and state.started == wanted:
        return True, f"running (pid {state.pid}), configuration unchanged"
    if state.running:
        return False, "running with another configuration"
    return False, "not running"


def etcd(hosts: HostsFile, host: Host, facts: HostFacts, layout: Layout, files: str) -> Step:
    service = services_of(hosts, host)[0]
    wanted = with_files(desired_hash(service, layout, facts), files)
    ok, found = _service_state(facts, service, wanted)
    if ok:
        return Step("etcd", found)
    health = (
        f"{q(layout.python)} -m theseus.provision.hostcheck etcd "
        f"https://{host.advertise}:{hosts.ports.etcd_client} {q(layout.pki)} etcd-{host.name}"
    )
    commands = [
        *_restart(service, layout, facts),
        shell(health),
        _record(service, layout, wanted),
    ]
    return Step("etcd", found, tuple(commands))


def servers(
    hosts: HostsFile, host: Host, facts: HostFacts, layout: Layout, desired: Desired, files: str
) -> Step:
    service = services_of(hosts, host)[1]
    # A new build of Theseus restarts the servers and agents onto it (etcd is not Theseus).
    wanted = with_files(desired_hash(service, layout, facts), f"{files}:{desired.build}")
    ok, found = _service_state(facts, service, wanted)
    commands: list[Command] = []
    if not ok:
        commands += _restart(service, layout, facts)
        commands.append(Command("local", "wait_server", argument=server_url(hosts, host)))
        commands.append(_record(service, layout, wanted))
    if not desired.admin_token_known and host.name == desired.first_server:
        if ok:
            commands.append(Command("local", "wait_server", argument=server_url(hosts, host)))
        commands.append(Command("local", "bootstrap_admin", argument=server_url(hosts, host)))
        found += "; no admin token yet"
    return Step("servers", found, tuple(commands))


def agents(
    hosts: HostsFile, host: Host, facts: HostFacts, layout: Layout, desired: Desired
) -> Step:
    service = services_of(hosts, host)[-1]
    wanted = with_files(desired_hash(service, layout, facts), desired.build)
    ok, found = _service_state(facts, service, wanted)
    if ok and facts.agent_joined:
        return Step("agents", found + ", joined")
    env_file = str(layout.env_file("agent"))
    env = env_text(service).encode()
    commands: list[Command] = []
    if not facts.agent_joined:
        found += ", not joined"
        commands += [
            Command("local", "join_token", argument=host.name),
            # The token is a file's content, never a command line's argument.
            Command("put", env_file, env, 0o600, secrets=(JOIN_TOKEN_VARIABLE,)),
        ]
    commands += _restart(service, layout, facts)
    commands.append(Command("local", "wait_node", argument=host.name))
    if not facts.systemd:
        commands.append(shell(stays_up(service.name, layout)))
    if not facts.agent_joined:
        # Joined: its certificate is in its state dir; a restart needs no token.
        commands.append(Command("put", env_file, env, 0o600))
    commands.append(_record(service, layout, wanted))
    return Step("agents", found, tuple(commands))


def with_files(service_hash: str, files: str) -> str:
    """A service's hash with the digest of the files it reads (etcd's and the server's
    certificates; the agent's are its own)."""
    return hashlib.sha256(f"{service_hash}:{files}".encode()).hexdigest()[:16]


def files_digest(desired: Desired, prefix: str) -> str:
    """The hash of the desired config files under ``prefix`` (``pki/``): a changed
    certificate restarts the services that read it."""
    chosen = sorted((f.path, f.sha256) for f in desired.files if f.path.startswith(prefix))
    return hashlib.sha256(repr(chosen).encode()).hexdigest()[:16]


def plan_host(hosts: HostsFile, host: Host, facts: HostFacts, desired: Desired) -> list[Step]:
    """The host's steps in phase order; a phase without work for this host is absent."""
    layout = layout_of(hosts, host)
    pki = files_digest(desired, "pki/")
    steps = [
        preflight(hosts, host, facts, desired),
        packages(host, facts, layout),
        docker(host, facts),
        theseus(facts, layout, desired),
        config(facts, layout, desired),
        services_step(hosts, host, facts, layout),
    ]
    if host.is_server:
        steps.append(etcd(hosts, host, facts, layout, pki))
        steps.append(servers(hosts, host, facts, layout, desired, pki))
    if host.is_agent:
        steps.append(agents(hosts, host, facts, layout, desired))
    return steps
