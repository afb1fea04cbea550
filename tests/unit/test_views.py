"""The ``/v1`` views: ``GET /v1/tasks`` sends plain data that must match ``TaskInfo``, and a
node's use counts only its own live tasks."""

from __future__ import annotations

import json

from tests.kit.builders import make_group, make_node, make_state, make_status, make_task
from theseus.api.schemas import TaskInfo
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState
from theseus.server.views import group_info, node_info, task_entry, task_info


def indexed(state: ClusterState) -> ClusterState:
    for task in state.tasks.values():
        state.index_task(None, task)
    return state


def test_task_entries_are_exactly_task_info() -> None:
    group = make_group(ports={"api": 80, "ssh": 22})
    tasks = [
        make_task(group, "n1"),
        make_task(group, None, pending_reason="no node has room"),
        make_task(group, "n2", desired=Desired.STOP, stop_reason="scaled down"),
        make_task(group, "n2"),
    ]
    statuses = [
        make_status(tasks[0], TaskState.RUNNING, container_id="c0"),
        make_status(tasks[2], TaskState.EXITED, exit_code=3, message="bye"),
    ]
    state = make_state([group], [make_node("n1"), make_node("n2")], tasks, statuses, lost={"n2"})
    for task in tasks:
        entry = task_entry(state, task)
        # What the route sends, read back as the client reads it.
        assert TaskInfo.model_validate(json.loads(json.dumps(entry))) == task_info(state, task)
        assert set(entry) == set(TaskInfo.model_fields)
    assert task_entry(state, tasks[3])["state"] == "lost"
    assert task_entry(state, tasks[0])["ports"]["api"]["host_port"] is not None


def test_node_info_counts_only_the_nodes_live_tasks() -> None:
    group = make_group(cpus=0.5, mem=100)
    on_n1 = [make_task(group, "n1"), make_task(group, "n1")]
    done = make_task(group, "n1", desired=Desired.STOP)
    elsewhere = make_task(group, "n2")
    state = indexed(
        make_state(
            [group],
            [make_node("n1"), make_node("n2")],
            [*on_n1, done, elsewhere],
            [make_status(done, TaskState.STOPPED)],
        )
    )
    info = node_info(state, "n1")
    assert (info.tasks, info.used_cpus, info.used_mem) == (2, 1.0, 200.0)


def test_group_status_and_counts() -> None:
    group = make_group(instances=3)
    running = [make_task(group, "n1"), make_task(group, "n2")]
    waiting = make_task(group, None, pending_reason="no node has room")
    stopping = make_task(group, "n1", desired=Desired.STOP)
    state = make_state(
        [group],
        [make_node("n1"), make_node("n2")],
        [*running, waiting, stopping],
        [make_status(t, TaskState.RUNNING) for t in [*running, stopping]],
    )
    indexed(state)
    info = group_info(state, group.group_key.key, group)
    assert (info.running, info.running_current, info.pending) == (2, 2, 1)
    assert (info.status, info.message) == ("pending", "no node has room")

    backing_off = waiting.model_copy(update={"not_before": 5.0})
    state.tasks[waiting.id] = backing_off
    assert group_info(state, group.group_key.key, group).status == "deploying"

    failed = make_task(group, "n2", attempt=2)
    state.tasks[failed.id] = failed
    state.index_task(None, failed)
    assert group_info(state, group.group_key.key, group).status == "failing"

    del state.tasks[failed.id], state.tasks[waiting.id]
    state.statuses[stopping.id] = make_status(stopping, TaskState.STOPPED)
    running.append(make_task(group, "n2"))
    state.tasks[running[-1].id] = running[-1]
    state.index_task(None, running[-1])
    state.statuses[running[-1].id] = make_status(running[-1], TaskState.RUNNING)
    info = group_info(state, group.group_key.key, group)
    assert (info.status, info.running_current, info.pending) == ("converged", 3, 0)


def test_task_health_is_none_without_checks_and_the_agents_verdict_with() -> None:
    plain = make_group("plain")
    checked = make_group("checked", ports={"api": 80}, health_checks=[{"path": "/health"}])
    no_checks = make_task(plain, "n1")
    fresh, good, bad = (make_task(checked, "n1") for _ in range(3))
    statuses = [
        make_status(no_checks, TaskState.RUNNING),
        make_status(good, TaskState.RUNNING, healthy=True),
        make_status(bad, TaskState.RUNNING, healthy=False, health_message="HTTP 404 from /"),
    ]
    tasks = [no_checks, fresh, good, bad]
    state = make_state([plain, checked], [make_node("n1")], tasks, statuses)
    health = [(task_info(state, t).health, task_info(state, t).health_message) for t in tasks]
    assert health == [
        (None, None),
        ("unknown", None),
        ("healthy", None),
        ("unhealthy", "HTTP 404 from /"),
    ]


def test_a_group_with_checks_converges_once_its_tasks_are_healthy() -> None:
    group = make_group(instances=1, ports={"api": 80}, health_checks=[{"path": "/health"}])
    task = make_task(group, "n1")
    state = indexed(
        make_state([group], [make_node("n1")], [task], [make_status(task, TaskState.RUNNING)])
    )
    info = group_info(state, group.group_key.key, group)
    assert (info.running, info.running_current, info.status) == (1, 0, "deploying")
    state.statuses[task.id] = make_status(task, TaskState.RUNNING, healthy=True)
    info = group_info(state, group.group_key.key, group)
    assert (info.running, info.running_current, info.status) == (1, 1, "converged")
