"""``theseus cluster bootstrap``, carried out: connect to every host, learn what each is like,
plan (``theseus.provision.plan``), then run the plan phase by phase, the hosts of a phase in
parallel, and report each step's status and duration.

Owns the order of things and what the workstation does itself (waiting for servers and nodes
through the API, the first admin token, join tokens). Nothing changes on any host before every
host is connected with a known host key and probed. A failed step stops the run at the end of
its phase: what is done stays done, and running the same command again resumes (done steps
are found done). Called by ``theseus.cli.provision_cmd``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.cluster.secure import ensure_admin_token, new_join_token, secure_client
from theseus.provision import wheelhouse
from theseus.provision.facts import (
    HostFacts,
    clock_skew,
    probe_command,
    probe_source,
)
from theseus.provision.hosts import Host, HostsFile
from theseus.provision.plan import PHASES, Command, Desired, Step, plan_host, q
from theseus.provision.services import layout_of, server_urls
from theseus.provision.ssh import Completed, Connection, SshError, connect
from theseus.provision.workstation import Workstation

Status = Literal["ok", "changed", "skipped", "failed", "planned"]
JOIN_TOKEN_TTL = 900.0  # seconds: long enough for a slow host, short enough to be no risk
SERVER_WAIT = 60.0
NODE_WAIT = 90.0


class BootstrapError(RuntimeError):
    """The run stopped before changing anything (hosts unreachable, unknown host keys)."""


@dataclass
class StepResult:
    host: str
    phase: str
    status: Status
    duration: float = 0.0
    found: str = ""
    error: str | None = None
    commands: tuple[str, ...] = ()


@dataclass
class Report:
    cluster: str
    results: list[StepResult] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    ca_pem: bytes = b""
    admin_token: str | None = None
    elapsed: float = 0.0

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "failed"]


class Secrets:
    """The run's secrets: what each host's files get, and what every printed text hides."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.by_host: dict[str, dict[str, str]] = {}

    def add(self, host: str, name: str, value: str) -> None:
        self.values.add(value)
        self.by_host.setdefault(host, {})[name] = value

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "<redacted>")
        return text


def tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


async def connect_all(hosts: Sequence[Host], accepted: dict[str, str]) -> dict[str, Connection]:
    """A connection to every host, or ``BootstrapError`` naming each one that failed (an
    unknown host key with its fingerprint) before anything is done on any of them."""
    answers = await asyncio.gather(
        *(connect(host, accepted) for host in hosts), return_exceptions=True
    )
    connections: dict[str, Connection] = {}
    problems: list[str] = []
    for host, answer in zip(hosts, answers, strict=True):
        if isinstance(answer, Connection):
            connections[host.name] = answer
        elif isinstance(answer, SshError):
            problems.append(str(answer))
        elif isinstance(answer, BaseException):
            problems.append(f"{host.name}: {answer.__class__.__name__}: {answer}")
    if problems:
        for connection in connections.values():
            connection.close()
        raise BootstrapError("nothing was changed:\n  " + "\n  ".join(problems))
    return connections


async def gather_facts(hosts: HostsFile, host: Host, connection: Connection) -> HostFacts:
    try:
        sent, received, clock = await connection.clock()
    except (OSError, TimeoutError, ValueError) as exc:
        raise BootstrapError(f"{host.name}: reading its clock failed: {exc}") from None
    probed = await connection.run(probe_command(hosts, host), input=probe_source(), timeout=60)
    if probed.exit_status != 0:
        raise BootstrapError(
            f"{host.name}: looking at the host failed (is python3 installed?): "
            f"{tail(probed.stderr) or probed.exit_status}"
        )
    facts = HostFacts.model_validate_json(probed.stdout)
    facts.skew = clock_skew(clock, sent, received)
    return facts


async def facts_of_all(
    hosts: HostsFile, connections: dict[str, Connection]
) -> dict[str, HostFacts]:
    answers = await asyncio.gather(
        *(gather_facts(hosts, h, connections[h.name]) for h in hosts.hosts),
        return_exceptions=True,
    )
    problems = [str(a) for a in answers if isinstance(a, BaseException)]
    if problems:
        raise BootstrapError("nothing was changed:\n  " + "\n  ".join(problems))
    return {
        h.name: a for h, a in zip(hosts.hosts, answers, strict=True) if isinstance(a, HostFacts)
    }


class Bootstrap:
    def __init__(
        self,
        hosts: HostsFile,
        workstation: Workstation,
        wheelhouse_root: Path,
        accepted: dict[str, str] | None = None,
        progress: Callable[[StepResult], None] | None = None,
    ) -> None:
        self.hosts = hosts
        self.ws = workstation
        self.wheelhouse_root = wheelhouse_root
        self.accepted = accepted or {}
        self.progress = progress or (lambda result: None)
        self.secrets = Secrets()
        self.urls = server_urls(hosts)

    # --- the plan --------------------------------------------------------------------------

    def _desired(self, host: Host, house: wheelhouse.Wheelhouse, ws: Workstation) -> Desired:
        return Desired(
            files=ws.desired_files(self.hosts, host),
            build=house.build,
            wheelhouse=house.directory,
            project_wheel=house.project_wheel,
            pip_wheel=house.pip_wheel,
            python=(sys.version_info[0], sys.version_info[1]),
            admin_token_known=ws.admin_token() is not None,
            first_server=self.hosts.servers[0].name,
        )

    def plans(
        self, facts: dict[str, HostFacts], house: wheelhouse.Wheelhouse, ws: Workstation
    ) -> dict[str, list[Step]]:
        ws.ensure_ca()
        return {
            h.name: plan_host(self.hosts, h, facts[h.name], self._desired(h, house, ws))
            for h in self.hosts.hosts
        }

    async def dry_run(self) -> dict[str, list[Step]]:
        """The plan, from the hosts' facts, without changing anything: certificates are
        issued into a copy of the workstation's state, the wheelhouse is not built."""
        self.ws.check_servers(self.hosts)
        connections = await connect_all(self.hosts.hosts, self.accepted)
        try:
            facts = await facts_of_all(self.hosts, connections)
        finally:
            for connection in connections.values():
                connection.close()
        house = await asyncio.to_thread(wheelhouse.planned, self.wheelhouse_root)
        with tempfile.TemporaryDirectory(prefix="theseus-dry-run-") as tmp:
            copy = Path(tmp) / "state"
            if self.ws.root.is_dir():
                shutil.copytree(self.ws.root, copy)
            return self.plans(facts, house, Workstation(copy, self.ws.cluster))

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        self.ws.check_servers(self.hosts)
        connections = await connect_all(self.hosts.hosts, self.accepted)
        report = Report(self.hosts.cluster, servers=self.urls)
        try:
            facts = await facts_of_all(self.hosts, connections)
            house = await asyncio.to_thread(wheelhouse.ensure, self.wheelhouse_root)
            plans = self.plans(facts, house, self.ws)
            stopped = False
            for phase in PHASES:
                if phase == "etcd" and not stopped:
                    # From here on etcd's members exist: the server hosts are fixed.
                    record = self.ws.record()
                    self.ws.save_record(self.hosts, record.cluster_id if record else None)
                work = [
                    (h, step)
                    for h in self.hosts.hosts
                    for step in plans[h.name]
                    if step.phase == phase
                ]
                if stopped:
                    for host, step in work:
                        result = StepResult(host.name, phase, "skipped", found=step.check)
                        report.results.append(result)
                        self.progress(result)
                    continue
                results = await asyncio.gather(
                    *(self.execute_step(host, step, connections[host.name]) for host, step in work)
                )
                report.results += results
                stopped = any(r.status == "failed" for r in results)
        finally:
            for connection in connections.values():
                connection.close()
        report.ca_pem = self.ws.pki.read_ca()
        report.admin_token = self.ws.admin_token()
        if not report.failed:
            self.ws.save_record(self.hosts, await asyncio.to_thread(self._cluster_id))
        report.elapsed = time.monotonic() - started
        return report

    def _client(self, token: str | None = None) -> ServerClient:
        return secure_client(self.urls, self.ws.pki, token)

    def _cluster_id(self) -> str | None:
        try:
            with self._client() as client:
                return client.health().cluster_id
        except (ServerUnreachable, ApiError):
            return None

    async def execute_step(self, host: Host, step: Step, connection: Connection) -> StepResult:
        started = time.monotonic()
        result = StepResult(host.name, step.phase, "ok", found=step.check)
        if step.error is not None:
            result.status, result.error = "failed", step.error
        else:
            for command in step.commands:
                result.status = "changed"
                result.commands += (command.show(),)
                problem = await self._command(host, command, connection)
                if problem is not None:
                    result.status = "failed"
                    result.error = self.secrets.redact(f"`{command.show()}`: {problem}")
                    break
        result.duration = time.monotonic() - started
        self.progress(result)
        return result

    async def _command(self, host: Host, command: Command, connection: Connection) -> str | None:
        """None when it worked; else what went wrong (the command's stderr tail)."""
        done: Completed
        if command.kind == "run":
            done = await connection.run(command.target)
        elif command.kind == "put":
            extra = self.secrets.by_host.get(host.name, {})
            content = (
                command.content
                + "".join(
                    f"{name}={extra[name]}\n" for name in command.secrets if name in extra
                ).encode()
            )
            done = await connection.put(command.target, content, command.mode)
        elif command.kind == "put_dir":
            assert command.source is not None
            done = await connection.put_dir(command.source, command.target)
        else:
            try:
                await asyncio.to_thread(self._local, host, command.target, command.argument)
            except (ServerUnreachable, ApiError, TimeoutError) as exc:
                log = await self._log_tail(host, command.target, connection)
                return self.secrets.redact(f"{exc}{log}")
            return None
        if done.exit_status == 0:
            return None
        return f"exited {done.exit_status}: {tail(done.stderr) or tail(done.stdout)}"

    async def _log_tail(self, host: Host, action: str, connection: Connection) -> str:
        """The last lines of the log of the service a failed wait was for."""
        service = {"wait_server": "server", "wait_node": "agent"}.get(action)
        if service is None:
            return ""
        layout = layout_of(self.hosts, host)
        command = (
            f"journalctl -q -n 8 -u {layout.unit_name(service)} 2>/dev/null; "
            f"tail -n 8 {q(layout.log_file(service))} 2>/dev/null; true"
        )
        done = await connection.run(command, timeout=15)
        text = tail(done.stdout)
        return f"\n--- the last lines of its {service}'s log:\n{text}" if text else ""

    def _local(self, host: Host, action: str, argument: str) -> None:
        if action == "wait_server":
            self._wait(lambda: self._healthy(argument), SERVER_WAIT, f"the server {argument}")
        elif action == "bootstrap_admin":
            token = ensure_admin_token(argument, self.ws.pki)
            self.secrets.values.add(token)
        elif action == "join_token":
            admin = self.ws.admin_token()
            if admin is None:
                raise TimeoutError("no admin token: the servers step has not bootstrapped one")
            self.secrets.values.add(admin)
            token = new_join_token(self.urls, self.ws.pki, admin, JOIN_TOKEN_TTL)
            self.secrets.add(host.name, "THESEUS_JOIN_TOKEN", token)
        elif action == "wait_node":
            self._wait(lambda: self._node_ready(argument), NODE_WAIT, f"node {argument} ready")

    def _healthy(self, url: str) -> bool:
        try:
            with secure_client(url, self.ws.pki) as client:
                client.health()
            return True
        except (ServerUnreachable, ApiError):
            return False

    def _node_ready(self, name: str) -> bool:
        try:
            with self._client(self.ws.admin_token()) as client:
                return any(n.name == name and n.status == "ready" for n in client.nodes().nodes)
        except (ServerUnreachable, ApiError):
            return False

    @staticmethod
    def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        raise TimeoutError(f"waited {timeout:g} s for {what}")
