"""The promises a cluster must keep once it has settled after faults (pure; no I/O).

``check`` compares one observation of the cluster (groups, tasks, registry, Docker's running
containers) with what the workload got acknowledged, and returns every broken promise as a
line of text. Called by ``tests.chaos.run`` after each round; unit-tested on its own.

The promises (issue "Resilience", chaos test):

1. every group has exactly ``instances`` tasks meant to run, and all of them run;
2. the registry lists exactly the running tasks of each service (for a service with health
   checks: the running tasks its agents report healthy, which after settling is all of them);
3. no container runs that no running task owns;
4. no task id runs in two containers;
5. every acknowledged deploy is reflected: a service has the instances of its last
   acknowledged change, or is absent if that change removed it. A request whose answer was
   lost (the server died mid-call) may or may not have been applied, so both outcomes pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

REMOVED = -1  # "instances" of a removed service in the expectations


@dataclass(frozen=True)
class TaskView:
    id: str
    service: str
    desired: str  # run | stop
    state: str


@dataclass
class Observation:
    groups: dict[str, int]  # service -> instances (the chaos workload uses no labels)
    tasks: list[TaskView]
    registry: dict[str, set[str]]  # service -> registered instance names (task ids)
    containers: list[str]  # the task label of every running container of the cluster


@dataclass
class Expectations:
    """What the workload was told, per service: the acknowledged instances (``REMOVED``
    for a removal), plus the outcomes of calls that got no answer since."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    uncertain: dict[str, set[int]] = field(default_factory=dict)

    def acked(self, service: str, instances: int) -> None:
        self.acknowledged[service] = instances
        self.uncertain.pop(service, None)

    def unanswered(self, service: str, instances: int) -> None:
        self.uncertain.setdefault(service, set()).add(instances)

    def allowed(self, service: str) -> set[int]:
        return {self.acknowledged.get(service, REMOVED)} | self.uncertain.get(service, set())

    def services(self) -> set[str]:
        return set(self.acknowledged) | set(self.uncertain)


def check(seen: Observation, expected: Expectations) -> list[str]:
    violations: list[str] = []
    meant_to_run: dict[str, list[TaskView]] = {}
    for task in seen.tasks:
        if task.desired == "run":
            meant_to_run.setdefault(task.service, []).append(task)
    running_ids = {t.id for ts in meant_to_run.values() for t in ts if t.state == "running"}

    for service, instances in sorted(seen.groups.items()):
        tasks = meant_to_run.get(service, [])
        running = [t for t in tasks if t.state == "running"]
        if len(tasks) != instances or len(running) != instances:
            violations.append(
                f"{service}: {len(running)} running of {len(tasks)} tasks, wants {instances}"
            )
    for service in sorted(set(meant_to_run) - set(seen.groups)):
        violations.append(f"{service}: {len(meant_to_run[service])} tasks of a removed group")

    for service in sorted(set(seen.registry) | set(seen.groups)):
        registered = seen.registry.get(service, set())
        running = {t.id for t in meant_to_run.get(service, []) if t.state == "running"}
        if registered != running:
            violations.append(
                f"{service}: registry {_few(registered - running)} extra, "
                f"{_few(running - registered)} missing"
            )

    counts = Counter(seen.containers)
    for task_id, count in sorted(counts.items()):
        if task_id not in running_ids:
            violations.append(f"container of {task_id} runs, but no running task owns it")
        if count > 1:
            violations.append(f"task {task_id} runs in {count} containers")

    for service in sorted(expected.services() | set(seen.groups)):
        actual = seen.groups.get(service, REMOVED)
        allowed = expected.allowed(service)
        if actual not in allowed:
            violations.append(
                f"{service}: {_describe(actual)}, but the acknowledged state is "
                f"{' or '.join(_describe(a) for a in sorted(allowed))}"
            )
    return violations


def _few(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:3]) + (" ..." if len(ordered) > 3 else "")
    return f"{len(ordered)} [{shown}]"


def _describe(instances: int) -> str:
    return "removed" if instances == REMOVED else f"{instances} instances"
