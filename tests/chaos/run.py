"""The chaos run: faults and workload on a real cluster, in rounds, each ending with a check.

A round lasts ``round_seconds``: at random moments it deploys, scales or removes one of a few
services (two of them with a health check, so that they are registered only once their agent
says they are healthy), and injects faults: ``docker kill`` of a container, a checked task
made to fail its health check (it must leave the registry, be killed by its agent and be
replaced), SIGKILL of an
agent (started again after a random pause, sometimes past the liveness timeout, so the node
is lost and comes back), SIGKILL of the leader server (started again), and with 3 etcd
members SIGKILL of one member at a time (started again). Then every process is brought
back, and the run waits, up to ``settle_seconds``, for the invariants of
``tests.chaos.invariants`` to hold; the time that takes is the round's convergence time.
Invariants still broken at the deadline are the round's violations.

Used by ``python -m tests.chaos`` (``scripts/chaos``) and, short, by the test suite.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker

from tests.chaos.invariants import REMOVED, Expectations, Observation, TaskView, check
from tests.kit.cluster import Cluster
from theseus.api.client import ApiError, ServerClient, ServerUnreachable

SERVICES = ("alpha", "bravo", "charlie", "delta")
CHECKED = ("bravo", "delta")  # deployed with a health check, failed on purpose by a fault
SICK_MARK = "/tmp/sick"
HEALTH_CHECK = {
    "protocol": "COMMAND",
    "command": f"test ! -e {SICK_MARK}",
    "interval_seconds": 0.5,
    "timeout_seconds": 2,
    "grace_period_seconds": 10,
    "max_consecutive_failures": 3,
}
IMAGE = "theseus/busybox:latest"
WORKLOAD = ("deploy", "remove")  # the rest of ACTIONS are faults
# Relative weights of what happens at each tick of a round.
ACTIONS = {
    "deploy": 4,
    "remove": 1,
    "kill_container": 3,
    "sicken_task": 2,
    "kill_agent": 2,
    "kill_leader": 1,
    "kill_etcd_member": 1,
}


@dataclass
class RoundResult:
    number: int
    faults: Counter[str]
    converged_after: float | None  # seconds after the round's faults ended; None: never
    violations: list[str]


@dataclass
class ChaosReport:
    rounds: list[RoundResult] = field(default_factory=list)
    # The longest a group ran more than its instances (the test bed's runs measure it).
    longest_over_instances: float | None = None

    @property
    def faults(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for result in self.rounds:
            total.update(result.faults)
        return total

    @property
    def violations(self) -> list[str]:
        return [f"round {r.number}: {v}" for r in self.rounds for v in r.violations]

    @property
    def longest_convergence(self) -> float | None:
        times = [r.converged_after for r in self.rounds if r.converged_after is not None]
        return max(times) if times else None

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": len(self.rounds),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(n for kind, n in self.faults.items() if kind not in WORKLOAD),
            "violations": len(self.violations),
            "longest_convergence_s": self.longest_convergence,
            "convergence_s": [r.converged_after for r in self.rounds],
            **(
                {"longest_over_instances_s": self.longest_over_instances}
                if self.longest_over_instances is not None
                else {}
            ),
        }


@dataclass
class Restart:
    due: float
    what: str
    start: Callable[[], None]


class Chaos:
    def __init__(
        self,
        cluster: Cluster,
        agents: dict[str, dict[str, Any]],
        seed: int,
        log: Callable[[str], None] = print,
        round_seconds: float = 10.0,
        settle_seconds: float = 60.0,
    ) -> None:
        self.cluster = cluster
        self.agents = agents
        self.rng = random.Random(seed)
        self.log = log
        self.round_seconds = round_seconds
        self.settle_seconds = settle_seconds
        self.expected = Expectations()
        self.docker = docker.from_env()
        self.restarts: list[Restart] = []
        # What a run of another kind (the test bed's) changes: its faults and their weights,
        # the image, settings every deploy carries, and whether deploys roll updates.
        self.actions = dict(ACTIONS)
        self.image = IMAGE
        self.spec_extra: dict[str, Any] = {}
        self.rolling_updates = True
        with self._client() as client:
            self.cluster_id = client.health().cluster_id or ""

    # --- the run ------------------------------------------------------------------------------

    def run(self, duration: float) -> ChaosReport:
        report = ChaosReport()
        ends = time.monotonic() + duration
        number = 0
        while time.monotonic() < ends or number == 0:
            number += 1
            faults = self._round()
            self._restart_everything()
            converged_after, violations = self._settle()
            result = RoundResult(number, faults, converged_after, violations)
            report.rounds.append(result)
            state = (
                f"converged in {converged_after:.2f}s"
                if converged_after is not None
                else (f"NOT converged: {len(violations)} violations")
            )
            stamp = time.strftime("%H:%M:%S")
            self.log(f"{stamp} round {number}: {dict(faults)}; {state}")
            for violation in violations:
                self.log(f"  violation: {violation}")
        return report

    def _round(self) -> Counter[str]:
        done: Counter[str] = Counter()
        ends = time.monotonic() + self.round_seconds
        while time.monotonic() < ends:
            self._restart_due()
            kinds = [k for k in self.actions if self._possible(k)]
            kind = self.rng.choices(kinds, weights=[self.actions[k] for k in kinds])[0]
            if getattr(self, f"_{kind}")():
                done[kind] += 1
            self._tick()
            time.sleep(self.rng.uniform(0.2, 0.8))  # the pace of the chaos, not a wait
        return done

    def _tick(self) -> None:
        """After each action of a round: what a run of another kind samples."""

    def _possible(self, kind: str) -> bool:
        if kind == "kill_etcd_member":
            return len(self._etcd_members()) >= 3
        return True

    # --- workload -----------------------------------------------------------------------------

    def _client(self) -> ServerClient:
        return ServerClient(self._server_addresses(), timeout=5.0)

    def _deploy(self) -> bool:
        service = self.rng.choice(SERVICES)
        instances = self.rng.randint(0, 4)
        spec = {"image": self.image, "instances": instances, "cpus": 0.05, "mem": 32}
        spec |= self.spec_extra
        if self.rolling_updates and self.rng.random() < 0.3:
            spec["environment"] = {"ROUND": str(self.rng.randint(0, 3))}  # a rolling update
        if service in CHECKED:
            # Registered only once the agent says healthy; the agent re-checks adopted
            # tasks after its restarts, and a new leader reads the verdicts from etcd.
            spec["health_checks"] = [HEALTH_CHECK]
        document = json.dumps({"deploy": {service: spec}})
        return self._call(service, instances, lambda c: c.deploy(document, "application/json"))

    def _remove(self) -> bool:
        service = self.rng.choice(SERVICES)
        return self._call(service, REMOVED, lambda c: c.remove(service))

    def _call(self, service: str, outcome: int, call: Callable[[ServerClient], object]) -> bool:
        try:
            with self._client() as client:
                call(client)
        except ServerUnreachable:
            self.expected.unanswered(service, outcome)  # it may or may not have been applied
            return False
        except ApiError as exc:
            if exc.status >= 500:
                self.expected.unanswered(service, outcome)
            return False  # 4xx: refused, nothing applied
        self.expected.acked(service, outcome)
        return True

    # --- faults -------------------------------------------------------------------------------

    def _kill_container(self) -> bool:
        ours = self._containers()
        if not ours:
            return False
        victim = self.rng.choice(ours)
        try:
            self.docker.api.kill(victim["Id"])
        except docker.errors.APIError:
            return False  # already gone
        return True

    def _sicken_task(self) -> bool:
        """Make a checked task's health check fail from now on: its agent must take it out
        of the registry, kill it after three failures and have it replaced."""
        checked = [c for c in self._containers() if c["Labels"]["theseus.service"] in CHECKED]
        if not checked:
            return False
        victim = self.rng.choice(checked)
        try:
            exit_code, _ = self.docker.containers.get(victim["Id"]).exec_run(["touch", SICK_MARK])
        except docker.errors.APIError:
            return False  # gone meanwhile
        return bool(exit_code == 0)

    def _kill_agent(self) -> bool:
        alive = [n for n in self.agents if self.cluster.processes[n].alive()]
        if len(alive) <= 1:
            return False
        name = self.rng.choice(alive)
        self.cluster.processes[name].stop(signal.SIGKILL)
        pause = self.rng.uniform(0.5, 8.0)  # past the liveness timeout now and then
        self._later(pause, name, self._starter(name))
        return True

    def _kill_leader(self) -> bool:
        for name, url in self._servers().items():
            if not self.cluster.processes[name].alive():
                continue
            try:
                with ServerClient(url, timeout=1.0) as client:
                    leads = client.health().leader
            except (ServerUnreachable, ApiError):
                continue
            if leads:
                self.cluster.processes[name].stop(signal.SIGKILL)
                self._later(self.rng.uniform(0.5, 3.0), name, self._starter(name))
                return True
        return False

    def _kill_etcd_member(self) -> bool:
        members = self._etcd_members()
        alive = [m for m in members if self.cluster.processes[m].alive()]
        if len(alive) < len(members):
            return False  # one member at a time
        name = self.rng.choice(alive)
        self.cluster.processes[name].stop(signal.SIGKILL)
        self._later(self.rng.uniform(1.0, 4.0), name, self._starter(name))
        return True

    # --- restarts -----------------------------------------------------------------------------

    def _later(self, delay: float, what: str, start: Callable[[], None]) -> None:
        self.restarts.append(Restart(time.monotonic() + delay, what, start))

    def _restart_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [r for r in self.restarts if everything or r.due <= now]
        for restart in due:
            self.restarts.remove(restart)
            restart.start()

    def _restart_everything(self) -> None:
        self._restart_due(everything=True)

    # --- settling -----------------------------------------------------------------------------

    def _settle(self) -> tuple[float | None, list[str]]:
        # More than a wait (``tests/kit/wait.py``): it times the convergence, keeps the last
        # violations for the report and logs what it still waits for on slow rounds.
        started = time.monotonic()
        deadline = started + self.settle_seconds
        violations = ["never observed"]
        shown = 0.0  # when the violations were last logged (slow settles say what they wait for)
        while time.monotonic() < deadline:
            try:
                violations = check(self._observe(), self.expected)
            except (ServerUnreachable, ApiError) as exc:
                violations = [f"cannot observe: {exc}"]
            if not violations:
                return time.monotonic() - started, []
            waited = time.monotonic() - started
            if waited >= 4.0 and waited - shown >= 2.0:
                shown = waited
                stamp = time.strftime("%H:%M:%S")
                self.log(f"{stamp}   still waiting after {waited:.1f}s: {'; '.join(violations)}")
            time.sleep(0.25)
        return None, violations

    def _observe(self) -> Observation:
        with self._client() as client:
            groups = {g.service: g.instances for g in client.groups().groups}
            tasks = [TaskView(t.id, t.service, t.desired, t.state) for t in client.tasks().tasks]
            registry = {
                service: {
                    c.instance_name for g in client.registry(service).groups for c in g.containers
                }
                for service in SERVICES
            }
        containers = [c["Labels"]["theseus.task"] for c in self._containers()]
        registry = {s: ids for s, ids in registry.items() if ids or s in groups}
        return Observation(groups, tasks, registry, containers)

    def _containers(self) -> list[dict[str, Any]]:
        """Running containers of this cluster's chaos services."""
        running = self.docker.api.containers(
            filters={"label": [f"theseus.cluster={self.cluster_id}", "theseus.task"]}
        )
        return [c for c in running if c["Labels"].get("theseus.service") in SERVICES]

    # --- the cluster's shape --------------------------------------------------------------

    def _servers(self) -> dict[str, str]:
        """Server process name -> API address."""
        if self.cluster.servers:
            return {name: self.cluster.url_of(name) for name in self.cluster.servers}
        return {"server": self.cluster.server_url}

    def _server_addresses(self) -> list[str]:
        return list(self._servers().values())

    def _etcd_members(self) -> list[str]:
        return list(self.cluster.etcd_members) or ["etcd"]

    def _starter(self, name: str) -> Callable[[], None]:
        """Start a killed process again with its own command line (same ports, same data)."""

        def start() -> None:
            if not self.cluster.processes[name].alive():
                self.cluster.restart(name)

        return start

    def close(self) -> None:
        self.docker.close()
