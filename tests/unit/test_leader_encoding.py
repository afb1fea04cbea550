"""The leader's plan as store operations: a node's new tasks side by side (one transaction
wakes its long-poll once), and the records behind the puts for the cache."""

from __future__ import annotations

import json

from tests.kit.builders import make_group, make_status, make_task
from theseus.model.tasks import TaskRecord, TaskState
from theseus.reconciler.reconcile import Plan
from theseus.store import keys
from theseus.store.base import Delete, Put
from theseus.store.encoding import encode_plan


def test_task_writes_are_grouped_by_node_and_records_kept() -> None:
    group = make_group()
    tasks = [make_task(group, node) for node in ("n2", "n1", None, "n2", "n1")]
    status = make_status(tasks[0], TaskState.LOST)
    plan = Plan(
        task_puts={t.id: t for t in tasks},
        status_puts={status.task_id: status},
        task_deletes={"old.1"},
        registry_puts={"/services/web/x": b"{}"},
        registry_deletes={"/services/web/y"},
    )
    encoded = encode_plan(plan)
    task_ops = [op for op in encoded.ops if op.key.startswith(keys.TASKS)]
    node_of = {keys.task_key(t.id): t.node for t in tasks}
    nodes = [node_of[op.key] for op in task_ops if isinstance(op, Put)]
    assert nodes == [None, "n1", "n1", "n2", "n2"]
    assert encoded.expected[keys.status_key(status.task_id)].record is status
    for op in encoded.ops:
        if isinstance(op, Put) and op.key in encoded.expected:
            value, record = encoded.expected[op.key]
            assert value is op.value  # what the watch will bring back, as the cache expects
            assert type(record).model_validate_json(op.value) == record
            # Exactly the record, without the fields at their defaults (the stored form).
            assert json.loads(op.value) == json.loads(record.model_dump_json(exclude_defaults=True))
    assert Delete(keys.task_key("old.1")) in encoded.ops
    assert len(encoded.ops) == 5 + 1 + 1 + 1 + 1


def test_tasks_of_several_specs_each_carry_their_own() -> None:
    # Each spec is encoded once per plan and put into its tasks' records.
    web, api = make_group("web", instances=2), make_group("api", mem=512)
    tasks = [make_task(web), make_task(api), make_task(web), make_task(api)]
    encoded = encode_plan(Plan(task_puts={t.id: t for t in tasks}))
    read = {op.key: TaskRecord.model_validate_json(op.value) for op in encoded.ops}
    assert read == {keys.task_key(t.id): t for t in tasks}
