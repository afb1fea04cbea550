"""Builders of test objects with realistic defaults; override what a test cares about.

Model records and cluster states (and a reconcile pass over them) for the scheduler,
reconciler and server tests; API answers (``TaskInfo``) and agent assignments for the CLI and
agent tests."""

from __future__ import annotations

import itertools
from typing import Any

from theseus.api.schemas import Assignment, PortInfo, TaskInfo
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec, parse_deploy_document, parse_document_text
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.reconciler.reconcile import Plan, reconcile

_ids = itertools.count(1)
NOW = 1_700_000_000.0  # the clock of the tests that format times and ages


def make_spec(**overrides: Any) -> GroupSpec:
    fields: dict[str, Any] = {
        "image": "theseus/busybox:latest",
        "ports": {"api": 5000},
        "instances": 3,
        "cpus": 0.1,
        "mem": 64,
        "labels": ["dev"],
    }
    fields.update(overrides)
    return GroupSpec.model_validate(fields)


def make_group(service: str = "web", **spec_overrides: Any) -> GroupRecord:
    spec = make_spec(**spec_overrides)
    return GroupRecord(
        service=service,
        labels=spec.labels,
        spec=spec,
        version=spec.version(),
        created_at=0.0,
        updated_at=0.0,
    )


def make_node(name: str = "n1", **overrides: Any) -> NodeRecord:
    fields: dict[str, Any] = {
        "name": name,
        "address": "127.0.0.2",
        "agent_port": 5051,
        "cpus": 2.0,
        "mem": 4096.0,
        "port_range": (31000, 31999),
        "registered_at": 0.0,
    }
    fields.update(overrides)
    return NodeRecord.model_validate(fields)


def make_task(group: GroupRecord, node: str | None = "n1", **overrides: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "id": f"{group.service}.t{next(_ids)}",
        "service": group.service,
        "labels": group.labels,
        "version": group.version,
        "spec": group.spec,
        "node": node,
        "host_ports": {"api": 31000 + next(_ids)} if node else {},
        "desired": Desired.RUN,
        "created_at": 1.0,
    }
    fields.update(overrides)
    return TaskRecord.model_validate(fields)


def make_status(task: TaskRecord, state: TaskState, **overrides: Any) -> TaskStatus:
    fields: dict[str, Any] = {
        "task_id": task.id,
        "state": state,
        "started_at": 1.0 if state is not TaskState.FAILED else None,
        "updated_at": 1.0,
    }
    if state.terminal:
        fields["finished_at"] = 2.0
    fields.update(overrides)
    return TaskStatus.model_validate(fields)


def make_state(
    groups: list[GroupRecord] = (),  # type: ignore[assignment]
    nodes: list[NodeRecord] = (),  # type: ignore[assignment]
    tasks: list[TaskRecord] = (),  # type: ignore[assignment]
    statuses: list[TaskStatus] = (),  # type: ignore[assignment]
    lost: set[str] = frozenset(),  # type: ignore[assignment]
) -> ClusterState:
    state = ClusterState(
        revision=1,
        groups={g.group_key.key: g for g in groups},
        tasks={t.id: t for t in tasks},
        statuses={s.task_id: s for s in statuses},
        nodes={n.name: n for n in nodes},
        alive={n.name: 1 for n in nodes if n.name not in lost},
    )
    for task in tasks:
        state.index_task(None, task)  # as the cache does
    return state


def running(tasks: list[TaskRecord]) -> list[TaskStatus]:
    return [make_status(t, TaskState.RUNNING) for t in tasks]


def key_of(group: GroupRecord) -> str:
    return GroupKey.of(group.service, group.labels).key


# --- driving the reconciler in unit tests ---------------------------------------------------

_new_ids = itertools.count()


def plan_of(state: ClusterState, now: float = 100.0) -> Plan:
    """One reconcile pass with predictable new task ids."""
    return reconcile(state, now, lambda service: f"{service}.new{next(_new_ids)}")


def created(plan: Plan, state: ClusterState) -> list[TaskRecord]:
    return [t for tid, t in plan.task_puts.items() if tid not in state.tasks]


def stopped(plan: Plan) -> list[TaskRecord]:
    return [t for t in plan.task_puts.values() if t.desired is Desired.STOP]


def apply_plan(state: ClusterState, plan: Plan) -> None:
    """Commit a plan and play the agents: run what is placed, stop what is asked to stop."""
    for task in plan.task_puts.values():
        state.index_task(state.tasks.get(task.id), task)
        state.tasks[task.id] = task
    for task_id in plan.task_deletes:
        state.index_task(state.tasks.pop(task_id), None)
        state.statuses.pop(task_id, None)
    for task in state.tasks.values():
        if task.node and task.desired is Desired.RUN:
            state.statuses[task.id] = make_status(task, TaskState.RUNNING)
        elif task.node and task.desired is Desired.STOP:
            state.statuses[task.id] = make_status(task, TaskState.STOPPED)


# --- API answers and agent assignments --------------------------------------------------------

# One group of two, as the CLI tests deploy it, and its version digest.
WEB_DOC = (
    "deploy:\n  web:\n    image: theseus/busybox:latest\n    instances: 2\n    labels: [dev]\n"
)
WEB_VERSION = parse_deploy_document(parse_document_text(WEB_DOC)).deploy["web"].version()


def make_group_info(
    status: str, running: int, version: str = WEB_VERSION, **extra: Any
) -> dict[str, Any]:
    """``WEB_DOC``'s group as ``GET /v1/groups`` shows it (JSON), in ``status``."""
    return {
        "service": "web",
        "labels": ["dev"],
        "group": "web/dev",
        "version": version,
        "instances": 2,
        "running": running,
        "running_current": running,
        "pending": 0,
        "status": status,
        "spec": {"image": "theseus/busybox:latest"},
        "created_at": NOW,
        "updated_at": NOW,
        **extra,
    }


def make_task_info(**overrides: Any) -> TaskInfo:
    """A running task as ``GET /v1/tasks`` shows it, created two minutes before ``NOW``."""
    fields: dict[str, Any] = {
        "id": "ingestor.0123456789ab",
        "service": "ingestor",
        "labels": ["monkey"],
        "group": "ingestor/monkey",
        "version": "abc",
        "node": "node-1",
        "address": "127.0.0.2",
        "ports": {
            "ssh": PortInfo(container_port=22, host_port=31000),
            "api": PortInfo(container_port=5000, host_port=31001),
        },
        "desired": "run",
        "state": "running",
        "created_at": NOW - 125,
    }
    fields.update(overrides)
    return TaskInfo(**fields)


def make_assignment(task_id: str, desired: str = "run", **spec: Any) -> Assignment:
    """What the server assigns an agent for one task of group ``web/[]``; its spec's ports
    (``api`` and ``alt`` unless given) get host ports 31001, 31002, ..."""
    fields: dict[str, Any] = {"image": "img", "ports": {"api": 5000, "alt": 5000}}
    fields.update(spec)
    group_spec = GroupSpec.model_validate(fields)
    return Assignment.model_validate(
        {
            "task_id": task_id,
            "service": "web",
            "labels": [],
            "group": "web/[]",
            "version": group_spec.version(),
            "desired": desired,
            "spec": group_spec,
            "host_ports": {name: 31001 + i for i, name in enumerate(group_spec.ports)},
        }
    )
