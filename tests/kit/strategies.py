"""Hypothesis strategies for the pure core: cluster states the system can reach, and the specs,
constraints and nodes they are made of.

``cluster_states()`` is what the property tests of the reconciler and the scheduler draw
(``tests/unit/test_reconcile_properties.py``); ``constraints()`` and ``group_specs()`` are
there for other property tests to reuse. Everything is built from the model's own validated
records (no test builders), at a fixed ``NOW``, so that a failing example prints as records.
Not a test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from hypothesis import strategies as st

from theseus.model import registry
from theseus.model.constraints import Constraint, Operator
from theseus.model.deployments import DeploymentRecord
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.reconciler.registry import desired_registry

T = TypeVar("T")
IMAGE = "theseus/busybox:latest"
NOW = 10_000.0  # the pass's clock; every recorded time lies before it
EPSILON = 1e-9  # the scheduler's tolerance for float sums of cpus and memory

# Live groups are drawn from these; a group may need (``dependencies``) the services listed
# before its own, so the needs of live groups form no cycle, as ``dependency_errors`` demands.
SERVICES = ("db", "cache", "api", "web")
LABEL_SETS: tuple[tuple[str, ...], ...] = ((), ("blue",))
LIVE_KEYS = tuple(GroupKey.of(s, labels) for s in SERVICES for labels in LABEL_SETS)
# Groups that were removed; some of their tasks are still around (orphans).
REMOVED_KEYS = (GroupKey.of("legacy", ()), GroupKey.of("web", ("gone",)))

NODE_NAMES = tuple(f"n{i}" for i in range(6))
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "rack": ("r1", "r2"),  # few values, so that a group's tasks often share one
    "zone": ("a", "b"),
    "gpu": ("1", "1.0", "2"),  # numbers: IS compares them as 0.###
}
# Constraint fields: the node's name, attributes (with and without Marathon's ``@``), and
# ``disk``, which no node declares. Racks, which nodes share, come up most.
FIELDS = ("rack", "hostname", "zone", "rack", "@hostname", "@rack", "gpu", "disk")
REGEXES = ("r1", "r[12]", "a", "n[0-2]", "1(\\.0)?", ".*")
# Every operator; those that count the group's tasks (where placement can go wrong) twice.
OPERATORS = (*Operator, Operator.UNIQUE, Operator.MAX_PER, Operator.CLUSTER, Operator.GROUP_BY)

CONTROLS = {
    "eligible": NodeControl(schedulable=True, drain=False, updated_at=0.0),
    "ineligible": NodeControl(schedulable=False, drain=False, updated_at=0.0),
    "draining": NodeControl(schedulable=False, drain=True, updated_at=0.0),
}

# How far in the past things happened, in seconds before NOW (HISTORY_MAX_AGE is 3600).
AGES = (100.0, 5.0, 30.0, 5000.0)
# A pending task's backoff deadline relative to NOW: passed, due now, or still ahead.
NOT_BEFORE = (None, -50.0, 0.0, 1.0, 30.0)
STALE_REASONS = (
    None,
    "no ready nodes",
    "0/3 nodes can run it: 3 nodes: insufficient cpus (needs 1)",
    "waiting for dependency db: 0 of 1 tasks ready",
    "restart backoff after 2 quick failures",
)


def _values_of(field_name: str) -> tuple[str, ...]:
    name = field_name.removeprefix("@")
    if name == "hostname":
        return NODE_NAMES
    return ATTRIBUTES.get(name, ("x",))


@cache
def _below(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def _pick(draw: st.DrawFn, choices: Sequence[T]) -> T:
    """One of ``choices``, shrinking toward the first. (Strategies built once and reused: a
    fresh ``sampled_from`` per draw costs more than the whole reconcile pass.)"""
    return choices[0] if len(choices) == 1 else choices[draw(_below(len(choices)))]


def _maybe(draw: st.DrawFn, choices: Sequence[T]) -> T | None:
    """``None`` (what it shrinks to) or one of ``choices``."""
    index = draw(_below(len(choices) + 1))
    return None if index == 0 else choices[index - 1]


def _one_in(draw: st.DrawFn, n: int) -> bool:
    return draw(_below(n)) == n - 1


def _some(draw: st.DrawFn, choices: Sequence[T], most: int) -> list[T]:
    """Up to ``most`` distinct ``choices``, in their order."""
    if not choices:
        return []
    picked = {_pick(draw, choices) for _ in range(draw(_below(most + 1)))}
    return [c for c in choices if c in picked]


@st.composite
def constraints(draw: st.DrawFn) -> Constraint:
    """Any valid constraint of every operator the model supports, on fields some, all or no
    nodes have, with values that some nodes match."""
    field_name = _pick(draw, FIELDS)
    operator = _pick(draw, OPERATORS)
    values = _values_of(field_name)
    value: str | None
    if operator is Operator.UNIQUE:
        value = None
    elif operator is Operator.CLUSTER:
        value = _maybe(draw, values)
    elif operator is Operator.GROUP_BY:
        value = _maybe(draw, ("1", "2", "3"))
    elif operator is Operator.MAX_PER:
        value = _pick(draw, ("1", "2", "3"))
    elif operator in (Operator.LIKE, Operator.UNLIKE):
        value = _pick(draw, REGEXES)
    else:
        value = _pick(draw, (*values, "1.000"))
    parts = [field_name, operator.value] if value is None else [field_name, operator.value, value]
    return Constraint.model_validate(parts)


_CONSTRAINT = constraints()
CPUS = (0.1, 0.25, 0.5, 0.1, 1.0, 1.5)
MEM = (32.0, 64.0, 256.0, 32.0, 512.0)


@st.composite
def group_specs(
    draw: st.DrawFn, labels: Sequence[str] = (), needs: Sequence[str] = ()
) -> GroupSpec:
    """A valid spec (``_spec``) with ``labels``, needing some of ``needs``."""
    return _spec(draw, labels, needs)


def _spec(draw: st.DrawFn, labels: Sequence[str], needs: Sequence[str]) -> GroupSpec:
    """A valid spec: 0-4 instances, small or large cpus/mem, 0-2 ports, up to 2 constraints,
    any upgrade strategy, sticky or not, spread or binpack, sometimes health checks (a
    COMMAND check, which needs no port), sometimes a pod, and dependencies among ``needs``.
    The environment's ``V`` is drawn, so two draws for one group are usually two versions."""
    body: dict[str, Any] = {
        "labels": list(labels),
        "environment": {"V": _pick(draw, ("1", "2", "3"))},
        "instances": draw(_below(5)),
        "ports": {f"p{i}": 8000 + i for i in range(_pick(draw, (0, 1, 1, 2)))},
        "constraints": [draw(_CONSTRAINT) for _ in range(_pick(draw, (0, 1, 1, 2)))],
        "upgrade_strategy": {
            "minimum_health_capacity": _pick(draw, (1.0, 0.5, 0.0)),
            "maximum_over_capacity": _pick(draw, (0.0, 0.5, 1.0)),
        },
        "sticky": _one_in(draw, 2),
        "placement_strategy": _pick(draw, ("spread", "binpack")),
        "backoff_seconds": _pick(draw, (1.0, 0.0, 30.0)),
        "dependencies": _some(draw, needs, 2) if _one_in(draw, 3) else [],
    }
    if _one_in(draw, 2):
        body["health_checks"] = [{"protocol": "COMMAND", "command": "true"}]
    if _one_in(draw, 5):
        body["containers"] = [
            {"name": f"c{i}", "image": IMAGE, "cpus": _pick(draw, CPUS), "mem": _pick(draw, MEM)}
            for i in range(1 + draw(_below(2)))
        ]
    else:
        body.update(image=IMAGE, cpus=_pick(draw, CPUS), mem=_pick(draw, MEM))
    return GroupSpec.model_validate(body)


@dataclass
class _Node:
    """A node while tasks are laid out on it: ``then`` is the record its tasks were placed
    under, ``now`` the one it has at ``NOW`` (an agent may have registered again since)."""

    then: NodeRecord
    now: NodeRecord
    alive: bool
    control: str | None
    cpus: float = 0.0
    mem: float = 0.0
    ports: set[int] = field(default_factory=set)

    def free_ports(self) -> list[int]:
        low, high = self.then.port_range
        return [p for p in range(low, high + 1) if p not in self.ports]

    def fits(self, spec: GroupSpec) -> bool:
        return (
            self.cpus + spec.cpus <= self.then.cpus + EPSILON
            and self.mem + spec.mem <= self.then.mem + EPSILON
            and len(spec.ports) <= len(self.free_ports())
        )


def _node(draw: st.DrawFn, name: str) -> _Node:
    """A node as its agent registered it (and, now and then, registered it again with less),
    alive or lost, with or without an operator's control."""
    attributes = {}
    for key, values in ATTRIBUTES.items():
        value = _maybe(draw, values)
        if value is not None:
            attributes[key] = value
    low = 31000
    width = _pick(draw, (1000, 1000, 1000, 1, 2, 4))  # some nodes run out of ports
    then = NodeRecord(
        name=name,
        address=f"10.0.0.{NODE_NAMES.index(name) + 1}",
        agent_port=5051,
        cpus=_pick(draw, (4.0, 2.0, 1.0, 8.0)),
        mem=_pick(draw, (4096.0, 1024.0, 8192.0)),
        port_range=(low, low + width - 1),
        attributes=attributes,
        driver=_pick(draw, ("docker", "sim", "process")),
        registered_at=0.0,
    )
    now = then
    if _one_in(draw, 8):
        # Its agent restarted with less to offer (--cpus, --mem, --port-range): the tasks it
        # adopted may now over-commit it, or hold ports outside its range.
        shifted = (low + 1, low + width)
        now = then.model_copy(
            update={"cpus": then.cpus / 2, "mem": then.mem / 2, "port_range": shifted}
        )
    alive = not _one_in(draw, 5)
    control = _pick(draw, (None, None, None, "ineligible", *CONTROLS))
    return _Node(then, now, alive, control)


# A task's phase: (desired states it may have, its status, whether it has a node).
# ``None`` status: the agent has not reported (``pending`` or ``assigned``, derived).
PHASES: dict[str, tuple[tuple[Desired, ...], TaskState | None, bool]] = {
    "running": ((Desired.RUN,), TaskState.RUNNING, True),
    "pending": ((Desired.RUN,), None, False),
    "assigned": ((Desired.RUN,), None, True),
    "starting": ((Desired.RUN,), TaskState.STARTING, True),
    "exited": ((Desired.RUN, Desired.STOP), TaskState.EXITED, True),
    "failed": ((Desired.RUN, Desired.STOP), TaskState.FAILED, True),
    "lost": ((Desired.RUN, Desired.STOP), TaskState.LOST, True),
    "stopping": ((Desired.STOP,), TaskState.RUNNING, True),
    "stopping-unreported": ((Desired.STOP,), None, True),
    "stopped": ((Desired.STOP,), TaskState.STOPPED, True),
}
# Per group: a steady one (its tasks run or are on their way), or one in every phase.
STEADY = ("running", "running", "running", "starting", "assigned", "pending")
ANY_PHASE = ("running", "running", "running", *PHASES)


def _status(draw: st.DrawFn, task: TaskRecord, state: TaskState) -> TaskStatus:
    started = task.created_at + _pick(draw, (1.0, 0.0))
    ran = _pick(draw, (2.0, 0.5, 20.0, 4000.0))
    finished = min(NOW, started + ran) if state.terminal else None
    healthy: bool | None = None
    if task.spec.has_health_checks and state is TaskState.RUNNING:
        healthy = _pick(draw, (True, None, False))
    was_healthy = healthy is True or (task.spec.has_health_checks and _one_in(draw, 2))
    messages = {
        TaskState.EXITED: "killed after 3 failed health checks in a row",
        TaskState.FAILED: "driver error: image not found",
        TaskState.LOST: f"node {task.node} lost",
    }
    return TaskStatus(
        task_id=task.id,
        state=state,
        exit_code=_pick(draw, (0, 1, 137)) if state is TaskState.EXITED else None,
        message=messages.get(state),
        container_id=None if state is TaskState.FAILED else f"c-{task.id}",
        started_at=None if state in (TaskState.FAILED, TaskState.STARTING) else started,
        finished_at=finished,
        healthy=healthy,
        was_healthy=was_healthy,
        updated_at=finished if finished is not None else started,
    )


def _task(
    draw: st.DrawFn,
    task_id: str,
    group: GroupRecord,
    specs: Sequence[GroupSpec],
    phases: Sequence[str],
    nodes: list[_Node],
) -> tuple[TaskRecord, TaskStatus | None]:
    """One task of ``group`` with one of ``specs``, in one of ``phases``, on a drawn node if
    the phase has one. A task
    that would hold resources (not ended) on a node where they no longer fit (cpus, memory,
    free ports, as the node was registered then) is pending instead: the scheduler could
    not have put it there. A task that ended holds nothing, so its ports may be reused."""
    spec = _pick(draw, specs)
    phase = _pick(draw, phases)
    desired_choices, state, placed = PHASES[phase]
    desired = _pick(draw, desired_choices)
    node: _Node | None = _pick(draw, nodes) if placed else None
    holds = state is None or not state.terminal
    free: list[int] = []
    if node is not None:
        low, high = node.then.port_range
        free = node.free_ports() if holds else list(range(low, high + 1))
        if len(free) < len(spec.ports) or (holds and not node.fits(spec)):
            node, state, desired = None, None, Desired.RUN
    host_ports: dict[str, int] = {}
    if node is not None:
        for name in spec.ports:
            port = _pick(draw, free)
            free.remove(port)
            host_ports[name] = port
        if holds:
            node.cpus += spec.cpus
            node.mem += spec.mem
            node.ports.update(host_ports.values())
    unplaced = node is None
    not_before = _pick(draw, NOT_BEFORE) if unplaced else None
    sticky = _maybe(draw, NODE_NAMES) if spec.sticky else None
    task = TaskRecord(
        id=task_id,
        service=group.service,
        labels=list(group.labels),
        version=spec.version(),
        spec=spec,
        node=None if node is None else node.then.name,
        host_ports=host_ports,
        desired=desired,
        stop_reason=None if desired is Desired.RUN else "scaled down to 0",
        attempt=draw(_below(5)),
        not_before=None if not_before is None else NOW + not_before,
        sticky_node=sticky,
        pending_reason=_pick(draw, STALE_REASONS) if unplaced else None,
        created_at=NOW - _pick(draw, AGES),
    )
    return task, None if state is None else _status(draw, task, state)


def _group_record(key: GroupKey, spec: GroupSpec) -> GroupRecord:
    return GroupRecord(
        service=key.service,
        labels=list(key.labels),
        spec=spec,
        version=spec.version(),
        created_at=0.0,
        updated_at=0.0,
    )


def _task_specs(draw: st.DrawFn, group: GroupRecord, others: Sequence[str]) -> list[GroupSpec]:
    """The specs a group's tasks may carry: the group's own; the same version with older
    values of what is outside the digest (instances, sticky, upgrade strategy, dependencies,
    which a change leaves on running tasks); and an older version. Per group, in one of
    three mixes: settled (the current version only), rolling out (mostly the older one), or
    any."""
    mix = _pick(draw, ("settled", "rolling", "any"))
    stale = group.spec
    if mix != "rolling":
        stale = group.spec.model_copy(
            update={
                "instances": draw(_below(5)),
                "sticky": _one_in(draw, 2),
                "dependencies": _some(draw, others, 2),
            }
        )
    if mix == "settled":
        return [group.spec, stale]
    older = _spec(draw, group.labels, others)
    return [older, older, group.spec] if mix == "rolling" else [group.spec, older, stale]


@st.composite
def cluster_states(draw: st.DrawFn) -> ClusterState:
    """A cluster state the system can reach, as the leader's cache holds it at ``NOW``.

    Generates: 1-6 nodes, alive or lost (lost: registered but not in ``alive``), each with
    no control or eligible, ineligible or draining, rack/zone/gpu attributes or not, a docker,
    sim or process driver, 1-8 cpus, 1024-8192 MB, and 1-1000 host ports; some registered
    again with half their cpus and memory and a shifted port range. 1-4 live groups
    (``group_specs``: every constraint operator, upgrade strategies, sticky, health checks,
    pods, dependencies) and 0-2 removed groups, each with 0-6 tasks of its current spec, of
    its version with stale non-digest fields, or of an older version (``_task_specs``), in
    every phase (or, for a steady group, only running or on their way): pending (with or
    without a backoff deadline, a sticky node or a stale reason), assigned, starting,
    running (healthy, unhealthy or no verdict yet), exited, failed or lost (still meant to
    run, or stopped and kept as history), being stopped, stopped. A task may run on a lost
    node (it died since the last pass) or have a lost status on a live one (the node came
    back). One still meant to run with a lost status is what a plan leaves when its status
    write and its task write land in different transactions (a plan over ``MAX_TXN_OPS`` is
    written in several, in parallel) and the leader dies between them. Plus running
    deployments of some groups, now and then a status whose task is gone (an agent's report
    that raced the task's deletion), and a registry that is what the last pass wrote, or has
    lost entries, or holds a stale one (edited by hand).

    Rules out what the system cannot produce:

    * two tasks that hold resources (a node and a non-terminal state) sharing a host port on
      one node, or over-committing its cpus or memory as it was registered when they were
      placed: the scheduler never does that, and only a node registering again with less
      (drawn above) over-commits it afterwards. A task that would not fit is pending instead;
    * a status for a task without a node (only agents report, and only tasks placed on
      them), and a task meant to stop without a node (the pass that stops an unplaced task
      deletes it);
    * dependency cycles between live groups, and live groups needing services that are not
      deployed (``dependency_errors`` refuses both); stale and older specs, and removed
      groups' tasks, may need any service, since a need is outside the version digest.
    """
    nodes = [_node(draw, name) for name in NODE_NAMES[: 1 + draw(_below(6))]]
    live_keys = sorted(
        {_pick(draw, LIVE_KEYS) for _ in range(1 + draw(_below(4)))},
        key=lambda k: (SERVICES.index(k.service), k.labels),
    )
    removed_keys = _some(draw, REMOVED_KEYS, 2)
    groups: list[GroupRecord] = []
    for key in live_keys:
        needs = sorted({g.service for g in groups if g.service != key.service})
        groups.append(_group_record(key, _spec(draw, key.labels, needs)))
    every_service = sorted({k.service for k in (*LIVE_KEYS, *REMOVED_KEYS)})
    removed = [
        _group_record(key, _spec(draw, key.labels, [s for s in every_service if s != key.service]))
        for key in removed_keys
    ]
    tasks: list[TaskRecord] = []
    statuses: list[TaskStatus] = []
    for group in (*groups, *removed):
        others = [s for s in every_service if s != group.service]
        specs = _task_specs(draw, group, others)
        phases = _pick(draw, (STEADY, ANY_PHASE))
        for _ in range(draw(_below(7))):
            task_id = f"{group.service}.t{len(tasks)}"
            task, status = _task(draw, task_id, group, specs, phases, nodes)
            tasks.append(task)
            if status is not None:
                statuses.append(status)
    if _one_in(draw, 6):
        statuses.append(TaskStatus(task_id="gone.t0", state=TaskState.RUNNING, updated_at=NOW - 5))

    state = ClusterState(
        revision=1,
        groups={g.group_key.key: g for g in groups},
        tasks={t.id: t for t in tasks},
        statuses={s.task_id: s for s in statuses},
        nodes={n.now.name: n.now for n in nodes},
        alive={n.now.name: i + 1 for i, n in enumerate(nodes) if n.alive},
        controls={n.now.name: CONTROLS[n.control] for n in nodes if n.control is not None},
    )
    for task in tasks:
        state.index_task(None, task)
    for group in groups:
        if _one_in(draw, 4):
            record = _deployment(group)
            state.deployments[record.id] = record
    state.registry = _registry(draw, state)
    return state


def _deployment(group: GroupRecord) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"d-{group.service}",
        group=group.group_key.key,
        service=group.service,
        labels=list(group.labels),
        kind="update",
        from_version=1,
        to_version=2,
        digest=group.version,
        instances=group.instances,
        started_at=NOW - 30,
        updated_at=NOW - 30,
        deadline=NOW + 570,
        progress_deadline_seconds=600.0,
        auto_revert=True,
    )


def _registry(draw: st.DrawFn, state: ClusterState) -> dict[str, bytes]:
    """What the leader last wrote: the registry this state implies, some entries missing
    (a pass whose registry writes are not committed yet), maybe one stale or edited entry."""
    wanted = desired_registry(state)
    keys = sorted(wanted)
    lost = {_pick(draw, keys) for _ in range(_pick(draw, (0, 0, 1, 3)))} if keys else set()
    kept = {k: v for k, v in wanted.items() if k not in lost}
    if state.groups and _one_in(draw, 4):
        group = next(iter(state.groups.values()))
        kept[registry.container_key(group.group_key, f"{group.service}.ghost")] = b"{}"
    if kept and _one_in(draw, 4):
        kept[next(iter(kept))] = b'{"edited":true}'
    return kept
