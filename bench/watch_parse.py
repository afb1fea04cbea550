"""What the server's watch spends reading one change from etcd's JSON lines
(``theseus.store.etcd_watch._changes``): a line of 1,000 task records of the size a
50,000-task deploy writes (943 bytes each), as etcd's gateway sends them (keys and values in
base64), read again and again; CPU time per change.

Runs against whatever ``theseus`` is importable, so the same script measures an older commit
from its worktree: ``PYTHONPATH=<worktree> python bench/watch_parse.py``.

    python bench/watch_parse.py [--events 1000] [--value-bytes 943] [--rounds 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time

from theseus.store import etcd_watch


def watch_line(events: int, value_bytes: int) -> bytes:
    """One line of etcd's gateway: ``events`` puts of task records in one answer."""
    value = base64.b64encode(b"x" * value_bytes).decode()
    puts = [
        {
            "kv": {
                "key": base64.b64encode(f"/theseus/tasks/svc-{i % 500}.{i:012x}".encode()).decode(),
                "create_revision": str(1000 + i),
                "mod_revision": str(1000 + i),
                "version": "1",
                "value": value,
            }
        }
        for i in range(events)
    ]
    header = {"cluster_id": "1", "member_id": "2", "revision": str(1000 + events)}
    return json.dumps({"result": {"header": header, "events": puts}}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--value-bytes", type=int, default=943)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    line = watch_line(args.events, args.value_bytes)
    per_change = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(args.rounds):
            changes = list(etcd_watch._changes(line))
        per_change.append((time.process_time() - started) / args.rounds / len(changes))
    print(
        f"watch line of {args.events:,} changes ({len(line) / 2**20:.1f} MiB), "
        f"values of {args.value_bytes} bytes: {1e6 * statistics.median(per_change):.2f} µs "
        f"of CPU per change (median of 5 x {args.rounds} reads)"
    )


if __name__ == "__main__":
    main()
