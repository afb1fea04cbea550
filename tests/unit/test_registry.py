"""The registry is derived from task state: entries exist iff their task runs on a live node."""

from __future__ import annotations

import json
import sys
import tracemalloc

from tests.kit.builders import make_group, make_node, make_state, make_status, make_task, running
from theseus.model import registry
from theseus.model.groups import GroupKey
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.reconcile import reconcile
from theseus.reconciler.registry import desired_registry, registry_diff

NODES = [make_node("n1", address="127.0.0.2"), make_node("n2", address="127.0.0.3")]


def test_entries_keep_the_original_shape_in_json() -> None:
    group = make_group("ingestor", labels=["dev"], ports={"ssh": 22, "api": 5000})
    task = make_task(group, "n1", host_ports={"ssh": 31001, "api": 31002})
    wanted = desired_registry(make_state([group], NODES, [task], running([task])))
    config = json.loads(wanted['/services/ingestor/["dev"]/config'])
    assert config["image"] == group.spec.image and config["instances"] == group.instances
    info = json.loads(wanted[f'/services/ingestor/["dev"]/containers/{task.id}/info'])
    assert info["service_name"] == "ingestor" and info["instance_name"] == task.id
    assert info["instance_host"] == "127.0.0.2" and info["labels"] == ["dev"]
    assert info["port_mapping"]["api"] == {
        "external": ["127.0.0.2", "31002/tcp"],
        "exposed": "5000/tcp",
        "host_port": 31002,
        "container_port": 5000,
    }


def test_only_running_tasks_on_live_nodes_that_should_run_are_registered() -> None:
    group = make_group(instances=4)
    up, starting, stopping, on_lost = (make_task(group, n) for n in ("n1", "n1", "n2", "n2"))
    stopping = stopping.model_copy(update={"desired": Desired.STOP})
    statuses = [
        make_status(up, TaskState.RUNNING),
        make_status(starting, TaskState.STARTING),
        make_status(stopping, TaskState.RUNNING),
        make_status(on_lost, TaskState.RUNNING),
    ]
    state = make_state([group], NODES, [up, starting, stopping, on_lost], statuses, lost={"n2"})
    containers = [k for k in desired_registry(state) if "/containers/" in k]
    assert containers == [registry.container_key(group.group_key, up.id)]


def test_a_group_without_running_tasks_keeps_its_config() -> None:
    """The original deleted the config of an empty group (bug 1); here config = group exists."""
    group = make_group(instances=2)
    wanted = desired_registry(make_state([group], NODES))
    assert list(wanted) == [registry.config_key(group.group_key)]


def test_diff_adds_missing_updates_changed_and_removes_stale_entries() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running([task]))
    wanted = desired_registry(state)
    config = registry.config_key(group.group_key)
    bogus = registry.container_key(group.group_key, "web.bogus")
    state.registry = {config: b"{}", bogus: b"{}"}
    diff = registry_diff(state)
    assert diff.updated == [config]
    assert diff.added == [registry.container_key(group.group_key, task.id)]
    assert diff.deletes == {bogus}
    assert diff.puts == {k: wanted[k] for k in diff.added + diff.updated}


def test_reconcile_unregisters_a_task_in_the_pass_that_stops_it() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running([task]))
    state.registry = desired_registry(state)
    scaled = group.model_copy(update={"spec": group.spec.model_copy(update={"instances": 0})})
    state.groups[group.group_key.key] = scaled
    plan = reconcile(state, 100.0)
    assert plan.task_puts[task.id].desired is Desired.STOP
    assert registry.container_key(group.group_key, task.id) in plan.registry_deletes


def test_entries_are_the_bytes_json_dumps_wrote() -> None:
    # Entries written before the encoder changed must compare equal, or every one of them
    # would be written again after an upgrade.
    labels = ["dév", 'q"uote', "back\\slash", "日本"]
    group = make_group("ingestor", labels=labels, environment={"TEXT": "tab\tnew\nline\u2028"})
    task = make_task(group, "n1", host_ports={"api": 31002, "ssh": 31001})
    state = make_state([group], NODES, [task], running([task]))
    wanted = desired_registry(state)
    assert len(wanted) == 2
    for value in wanted.values():
        before = json.dumps(
            json.loads(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert value == before.encode()


def test_an_entry_holds_no_more_memory_than_its_bytes() -> None:
    # The leader keeps every entry; orjson's own bytes would each hold 4 KiB.
    group = make_group("ingestor", ports={"api": 5000})
    task = make_task(group, "n1", host_ports={"api": 31002})
    value = registry.container_value(task, NODES[0])
    tracemalloc.start()
    try:
        entries = [registry.encode(value) for _ in range(1000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / len(entries) < 2 * sys.getsizeof(entries[0])


def test_keys_round_trip_any_printable_label() -> None:
    group = GroupKey.of("svc", ["a/b", "x,y", "it's"])
    assert registry.parse_key(registry.config_key(group)) == (group, None)
    assert registry.parse_key(registry.container_key(group, "svc.123")) == (group, "svc.123")
    assert registry.parse_key("/services/svc/not-json/config") is None
    assert registry.service_of(registry.config_key(group)) == "svc"


def test_the_encoding_memo_changes_nothing_but_the_work() -> None:
    group = make_group(instances=2)
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    state = make_state([group], NODES, tasks, running(tasks))
    memo: dict[str, tuple[object, object, bytes]] = {}
    first = desired_registry(state, memo)
    assert first == desired_registry(state)
    again = desired_registry(state, memo)
    key = registry.container_key(group.group_key, tasks[0].id)
    assert again[key] is first[key]  # reused, not re-encoded
    moved = tasks[0].model_copy(update={"host_ports": {"api": 31999}})
    state.tasks[moved.id] = moved
    changed = desired_registry(state, memo)
    assert changed == desired_registry(state) and changed[key] != first[key]
    del state.tasks[tasks[1].id]
    desired_registry(state, memo)
    assert registry.container_key(group.group_key, tasks[1].id) not in memo


def test_a_task_with_health_checks_is_registered_only_while_healthy() -> None:
    group = make_group(instances=4, ports={"api": 5000}, health_checks=[{"path": "/health"}])
    unknown, healthy, unhealthy, exited = (make_task(group, "n1") for _ in range(4))
    statuses = [
        make_status(unknown, TaskState.RUNNING),  # in its grace period: no verdict yet
        make_status(healthy, TaskState.RUNNING, healthy=True),
        make_status(unhealthy, TaskState.RUNNING, healthy=False, health_message="HTTP 404"),
        make_status(exited, TaskState.EXITED, exit_code=143, healthy=True),
    ]
    tasks = [unknown, healthy, unhealthy, exited]
    state = make_state([group], NODES, tasks, statuses)
    containers = [k for k in desired_registry(state) if "/containers/" in k]
    assert containers == [registry.container_key(group.group_key, healthy.id)]


def test_an_unhealthy_verdict_deletes_the_entry_at_once() -> None:
    group = make_group(instances=1, ports={"api": 5000}, health_checks=[{"path": "/health"}])
    task = make_task(group, "n1")
    memo: dict[str, tuple[object, object, bytes]] = {}
    state = make_state([group], NODES, [task], [make_status(task, TaskState.RUNNING)])
    key = registry.container_key(group.group_key, task.id)
    assert registry_diff(state, memo).added == [registry.config_key(group.group_key)]
    state.statuses[task.id] = make_status(task, TaskState.RUNNING, healthy=True)
    assert registry_diff(state, memo).added == [registry.config_key(group.group_key), key]
    state.registry.update(desired_registry(state, memo))
    state.statuses[task.id] = make_status(task, TaskState.RUNNING, healthy=False)
    assert registry_diff(state, memo).deletes == {key}


def test_a_task_copied_into_another_group_answers_its_own_group_key() -> None:
    """``TaskRecord.group_key`` is kept on the record once asked (passes ask it of every task
    several times); a copy made with another service or labels must not answer the
    original's, although pydantic copies the record's dict."""
    task = make_task(make_group("web", labels=["blue"]))
    assert task.group_key == GroupKey.of("web", ["blue"])  # asked, and so kept
    moved = task.model_copy(update={"service": "api", "labels": ["green"]})
    assert moved.group_key == GroupKey.of("api", ["green"])
    assert task.model_copy(update={"desired": Desired.STOP}).group_key == task.group_key
