"""Builders for test records with realistic defaults; override what a test cares about."""

from __future__ import annotations

import itertools
from typing import Any

from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.reconciler.reconcile import Plan, reconcile

_ids = itertools.count(1)


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
