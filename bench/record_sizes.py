"""A task record and a status as etcd holds them: whole, and without the fields at their
defaults (``theseus.store.encoding.encode_compact``, the stored form since issue 17's
fifteenth session): their size, and the CPU to encode and to parse each.

The records have the benchmark's shape (bench/scale.py): the smallest spec, a task placed on a
node, a running status.

    python bench/record_sizes.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from theseus.model.spec import GroupSpec
from theseus.model.tasks import TaskRecord, TaskState, TaskStatus
from theseus.store.encoding import encode_compact, encode_task


def per_call_us(calls: int, work: Callable[[], object]) -> float:
    work()
    started = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    spec = GroupSpec.model_validate({"image": "sim", "instances": 100, "cpus": 0.01, "mem": 1})
    now = time.time()
    task = TaskRecord(
        id="svc-0012.0123456789ab",
        service="svc-0012",
        labels=[],
        version=spec.version(),
        spec=spec,
        node="hollow-0123",
        created_at=now,
    )
    status = TaskStatus(
        task_id=task.id,
        state=TaskState.RUNNING,
        container_id="sim-0123456789ab",
        started_at=now,
        updated_at=now,
    )
    task_whole = task.model_dump_json().encode()
    task_compact = encode_task(task, encode_compact(spec))
    status_whole = status.model_dump_json().encode()
    status_compact = encode_compact(status)
    assert TaskRecord.model_validate_json(task_compact) == task
    assert TaskStatus.model_validate_json(status_compact) == status
    rows = [
        ("task record", "whole", task_whole, TaskRecord),
        ("task record", "compact", task_compact, TaskRecord),
        ("status", "whole", status_whole, TaskStatus),
        ("status", "compact", status_compact, TaskStatus),
    ]
    print(f"{'record':<12} {'form':<8} {'bytes':>6} {'parse':>10}")
    for name, form, value, model in rows:
        parse = per_call_us(calls, lambda v=value, m=model: m.model_validate_json(v))
        print(f"{name:<12} {form:<8} {len(value):>6} {parse:>8.2f} µs")
    encodes = [
        ("task record without its spec, whole", lambda: task.model_dump_json(exclude={"spec"})),
        (
            "task record without its spec, compact",
            lambda: task.model_dump_json(exclude={"spec"}, exclude_defaults=True),
        ),
        ("spec, whole (once per plan and group)", spec.model_dump_json),
        ("spec, compact", lambda: encode_compact(spec)),
        ("status, whole", status.model_dump_json),
        ("status, compact", lambda: encode_compact(status)),
    ]
    print("encoding:")
    for label, work in encodes:
        print(f"  {label:<40} {per_call_us(calls, work):>6.2f} µs")


if __name__ == "__main__":
    main()
