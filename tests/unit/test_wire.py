"""Memoised JSON answers: they read back as the API's models, and a memoised piece is only
reused while what it was made from is unchanged."""

from __future__ import annotations

import pytest

from tests.kit.builders import make_group, make_node, make_state, make_status, make_task
from theseus.api.schemas import Assignment, AssignmentList, GroupList, TaskList
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskState
from theseus.server.views import group_info, task_info
from theseus.server.wire import WireMemo, groups_body


def cluster() -> ClusterState:
    group = make_group(ports={"api": 80})
    tasks = [make_task(group, "n1"), make_task(group, "n2"), make_task(group, None)]
    state = make_state([group], [make_node("n1"), make_node("n2")], tasks)
    for task in tasks:
        state.index_task(None, task)
    return state


def test_assignments_read_back_as_the_model() -> None:
    state = cluster()
    wire = WireMemo()
    answer = AssignmentList.model_validate_json(wire.assignments_json(state, "n1", 7, 10.0))
    (task,) = state.tasks_on("n1")
    assert answer.index == 7 and answer.heartbeat_interval == 10.0
    assert answer.poll_wait is None
    advised = wire.assignments_json(state, "n1", 7, 10.0, poll_wait=100.0)
    assert AssignmentList.model_validate_json(advised).poll_wait == 100.0
    assert answer.tasks == [
        Assignment(
            task_id=task.id,
            service=task.service,
            labels=task.labels,
            group=task.group_key.key,
            version=task.version,
            desired="run",
            spec=task.spec,
            host_ports=task.host_ports,
            attempt=task.attempt,
        )
    ]
    # The spec leaves out what is at its default: the agent fills it back in.
    assert '"upgrade_strategy"' not in wire.assignments_json(state, "n1", 7, 10.0)
    # The server's record of a first success reaches the next answer (for adoption).
    state.statuses[task.id] = make_status(task, TaskState.RUNNING, was_healthy=True)
    healthy = AssignmentList.model_validate_json(wire.assignments_json(state, "n1", 7, 10.0))
    assert healthy.tasks[0].was_healthy is True
    # A replaced record (the cache's way of changing one) is encoded again.
    state.tasks[task.id] = task.model_copy(update={"attempt": 3})
    again = AssignmentList.model_validate_json(wire.assignments_json(state, "n1", 8, None))
    assert again.tasks[0].attempt == 3 and again.heartbeat_interval is None


def test_task_list_follows_statuses_and_node_loss() -> None:
    state = cluster()
    wire = WireMemo()
    tasks = sorted(state.tasks.values(), key=lambda t: t.id)

    def listed() -> TaskList:
        return TaskList.model_validate_json(wire.tasks_json(state, tasks))

    assert listed().tasks == [task_info(state, t) for t in tasks]
    # The one on n1 (ids, and so the order, depend on how many tasks earlier tests made).
    on_n1 = next(i for i, t in enumerate(tasks) if t.node == "n1")
    state.statuses[tasks[on_n1].id] = make_status(tasks[on_n1], TaskState.RUNNING)
    assert listed().tasks[on_n1].state == "running"
    del state.alive["n1"]
    assert listed().tasks[on_n1].state == "lost"
    assert listed().tasks == [task_info(state, t) for t in tasks]


def test_group_entries_are_recomputed_only_after_a_change() -> None:
    state = cluster()
    wire = WireMemo()
    groups = list(state.groups.items())
    group_id = groups[0][0]
    index = {group_id: 1}

    def listed(alive_index: int = 1) -> GroupList:
        parts = [wire.group_json(state, g, group, index[g], alive_index) for g, group in groups]
        return GroupList.model_validate_json(groups_body(parts))

    assert listed().groups == [group_info(state, group_id, groups[0][1])]
    assert listed().groups[0].running == 0
    for task in [t for t in state.tasks_of(group_id) if t.node]:
        state.statuses[task.id] = make_status(task, TaskState.RUNNING)
    assert listed().groups[0].running == 0  # memoised: the cache has not said it changed
    index[group_id] = 2
    assert listed().groups[0].running == 2
    del state.alive["n2"]
    assert listed(alive_index=2).groups[0].running == 1


def test_a_spec_is_encoded_once_for_the_tasks_that_share_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = cluster()
    (task,) = state.tasks_on("n1")
    twin = task.model_copy(update={"id": task.id + "-twin"})  # a pass's tasks share a spec
    state.tasks[twin.id] = twin
    state.index_task(None, twin)
    encoded: list[object] = []
    encode = type(task.spec).model_dump_json

    def counting(spec: object, **kwargs: object) -> str:
        encoded.append(spec)
        return encode(spec, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(task.spec), "model_dump_json", counting)
    wire = WireMemo()
    answer = AssignmentList.model_validate_json(wire.assignments_json(state, "n1", 7, None))
    assert [a.spec for a in answer.tasks] == [task.spec, task.spec]
    assert encoded == [task.spec]
    # Another spec object under the same group and version (a record read back from etcd)
    # is encoded for itself: its own content, never the one kept.
    other = task.spec.model_copy(update={"mem": 999.0})
    state.tasks[task.id] = task.model_copy(update={"spec": other})
    again = AssignmentList.model_validate_json(wire.assignments_json(state, "n1", 8, None))
    assert sorted(a.spec.mem for a in again.tasks) == sorted([task.spec.mem, 999.0])
