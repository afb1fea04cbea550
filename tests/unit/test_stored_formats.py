"""Task records and statuses as stored in etcd: without the fields at their defaults
(``theseus.store.encoding``), read back as the same records, by any reader.

Leaving defaults out makes each default part of the stored format: a record written today and
read by a later version takes that version's defaults. ``test_the_defaults_are_the_stored_
formats`` pins them, so that changing one is seen for what it is: a change of every stored
record that leaves the field out. (Then write that field in full, or convert the records.)
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings

from tests.kit.builders import make_group, make_status, make_task
from tests.kit.strategies import cluster_states
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskRecord, TaskState, TaskStatus
from theseus.reconciler.reconcile import Plan
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.encoding import encode_compact, encode_plan, status_put

# What a record that spells out only its required fields means: every default, in full.
SPEC_DEFAULTS: dict[str, Any] = {
    "containers": None,
    "labels": [],
    "ports": {},
    "environment": {},
    "instances": 1,
    "cpus": 0.3,
    "mem": 512.0,
    "volumes": [],
    "command": None,
    "args": None,
    "upgrade_strategy": {
        "minimum_health_capacity": 1.0,
        "maximum_over_capacity": 0.0,
        "progress_deadline_seconds": 600.0,
        "auto_revert": True,
    },
    "backoff_seconds": 1.0,
    "backoff_factor": 2.0,
    "max_launch_delay_seconds": 300.0,
    "task_kill_grace_period_seconds": 10.0,
    "stop_after_server_loss_seconds": 30.0,
    "init": True,
    "pull": "if_not_present",
    "sticky": False,
    "constraints": [],
    "placement_strategy": "spread",
    "health_checks": [],
    "dependencies": [],
    "privileged": False,
    "network_mode": "bridge",
    "pid_mode": "private",
    "cap_add": [],
    "logs": None,
}
TASK_DEFAULTS: dict[str, Any] = {
    "node": None,
    "host_ports": {},
    "desired": "run",
    "stop_reason": None,
    "attempt": 0,
    "not_before": None,
    "sticky_node": None,
    "pending_reason": None,
}
STATUS_DEFAULTS: dict[str, Any] = {
    "exit_code": None,
    "oom_killed": False,
    "message": None,
    "container_id": None,
    "started_at": None,
    "finished_at": None,
    "healthy": None,
    "health_message": None,
    "was_healthy": False,
}


def test_the_defaults_are_the_stored_formats() -> None:
    spec = GroupSpec.model_validate_json('{"image":"i"}')
    assert spec.model_dump(mode="json") == {**SPEC_DEFAULTS, "image": "i"}
    task = TaskRecord.model_validate_json(
        '{"id":"w.1","service":"w","labels":[],"version":"v","created_at":1.0,"spec":{"image":"i"}}'
    )
    assert task.model_dump(mode="json", exclude={"spec"}) == {
        **TASK_DEFAULTS,
        "id": "w.1",
        "service": "w",
        "labels": [],
        "version": "v",
        "created_at": 1.0,
    }
    status = TaskStatus.model_validate_json('{"task_id":"w.1","state":"running","updated_at":1.0}')
    assert status.model_dump(mode="json") == {
        **STATUS_DEFAULTS,
        "task_id": "w.1",
        "state": "running",
        "updated_at": 1.0,
    }


def test_the_nested_defaults_are_the_stored_formats_too() -> None:
    # A pod's members, health checks and log options leave their defaults out as well.
    spec = GroupSpec.model_validate_json(
        '{"containers":[{"name":"a","image":"i"}],"ports":{"http":80},'
        '"health_checks":[{"protocol":"TCP"}],"logs":{}}'
    )
    read = spec.model_dump(mode="json")
    assert read["containers"] == [
        {
            "name": "a",
            "image": "i",
            "command": None,
            "args": None,
            "environment": {},
            "cpus": 0.1,
            "mem": 128.0,
            "volumes": [],
            "health_checks": [],
            "pull": None,
        }
    ]
    assert read["health_checks"] == [
        {
            "protocol": "TCP",
            "path": "/",
            "port_name": None,
            "port_index": None,
            "command": None,
            "grace_period_seconds": 300.0,
            "interval_seconds": 60.0,
            "timeout_seconds": 20.0,
            "max_consecutive_failures": 3,
            "ignore_http1xx": False,
        }
    ]
    assert read["logs"] == {"max_size": None, "max_files": None}
    assert GroupSpec.model_validate_json(encode_compact(spec)) == spec


def test_a_task_and_its_status_are_stored_without_their_defaults() -> None:
    group = make_group("web", instances=3)
    task = make_task(group, "n1", host_ports={})
    status = make_status(task, TaskState.RUNNING)
    encoded = encode_plan(Plan(task_puts={task.id: task}, status_puts={task.id: status}))
    stored = {op.key: op.value for op in encoded.ops if isinstance(op, Put)}
    record = json.loads(stored[keys.task_key(task.id)])
    assert set(record) == {"id", "service", "labels", "version", "node", "created_at", "spec"}
    assert "upgrade_strategy" not in record["spec"] and record["spec"]["instances"] == 3
    assert set(json.loads(stored[keys.status_key(task.id)])) == {
        "task_id",
        "state",
        "started_at",
        "updated_at",
    }
    assert status_put(status).value == stored[keys.status_key(task.id)]
    assert len(stored[keys.task_key(task.id)]) < len(task.model_dump_json()) / 2


def test_a_record_stored_whole_by_an_earlier_server_still_reads() -> None:
    task = make_task(make_group("web"), "n1", attempt=2)
    assert TaskRecord.model_validate_json(task.model_dump_json()) == task


@settings(max_examples=150, deadline=None)
@given(cluster_states())
def test_every_task_and_status_reads_back_as_written(state: ClusterState) -> None:
    plan = Plan(task_puts=dict(state.tasks), status_puts=dict(state.statuses))
    for op in encode_plan(plan).ops:
        assert isinstance(op, Put)
        if op.key.startswith(keys.TASKS):
            task = state.tasks[op.key.removeprefix(keys.TASKS)]
            read = TaskRecord.model_validate_json(op.value)
            assert read == task and read.spec.version() == task.spec.version()
        else:
            assert (
                TaskStatus.model_validate_json(op.value)
                == state.statuses[op.key.removeprefix(keys.STATUS)]
            )


def test_a_pods_spec_reads_back_with_its_members_sums() -> None:
    pod = GroupSpec.model_validate(
        {
            "containers": [
                {"name": "app", "image": "a", "cpus": 0.25, "mem": 64},
                {"name": "sidecar", "image": "b"},
            ]
        }
    )
    read = GroupSpec.model_validate_json(encode_compact(pod))
    assert read == pod and (read.cpus, read.mem) == (pod.cpus, pod.mem)
