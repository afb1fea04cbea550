"""What a server's cache costs to load a big cluster from etcd: time and memory.

    .venv/bin/python bench/cache_load.py [--nodes 5000] [--groups 500] [--per-group 100]
                                          [--rounds 3]

Starts etcd (in a temp dir, on free loopback ports), writes a deployed cluster into it: the
tasks a reconcile pass creates and places for ``--groups`` groups of ``--per-group`` on
``--nodes`` nodes, each running (a status) and registered. Then, ``--rounds`` times, a fresh
Python process loads it into a ``StateCache`` (what a restarted server, a new leader or any
other server of the cluster does) and prints the load's wall time and CPU, and its RSS
growth (VmRSS after the load, less before it, after a full collection).

Runs against whatever ``theseus`` is importable, so the same script measures an older commit
through a git worktree (``PYTHONPATH=<worktree>``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time

from procs import children_in_temp_dir, start_etcd
from reconcile_pass import build

from theseus.model.tasks import TaskState, TaskStatus
from theseus.reconciler.reconcile import reconcile
from theseus.store import keys
from theseus.store.base import Op, Put
from theseus.store.cache import StateCache
from theseus.store.commit import Txn, commit_all
from theseus.store.encoding import encode
from theseus.store.etcd import EtcdStore


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def write_cluster(port: int, nodes: int, groups: int, per_group: int) -> int:
    state = build(nodes, groups, per_group)
    plan = reconcile(state, 100.0)
    ops: list[Op] = [Put(keys.group_key(g), encode(r)) for g, r in state.groups.items()]
    ops += [Put(keys.node_key(n.name), encode(n)) for n in state.nodes.values()]
    for task in plan.task_puts.values():
        status = TaskStatus(task_id=task.id, state=TaskState.RUNNING, updated_at=99.0)
        ops += [
            Put(keys.task_key(task.id), encode(task)),
            Put(keys.status_key(task.id), encode(status)),
        ]
    ops += [Put(key, value) for key, value in plan.registry_puts.items()]
    store = EtcdStore([f"http://127.0.0.1:{port}"])
    await store.connect()
    await commit_all(store, [Txn((op,)) for op in ops], parallel=2)
    await store.close()
    return len(plan.task_puts)


async def load(port: int) -> dict[str, float]:
    store = EtcdStore([f"http://127.0.0.1:{port}"])
    await store.connect()
    gc.collect()
    before = rss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    cache = StateCache(store)
    following = asyncio.create_task(cache.run())
    await cache.wait_ready()
    took = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    gc.collect()
    took["rss"] = rss_mib() - before
    took["tasks"] = len(cache.state.tasks)
    following.cancel()
    await store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-from", type=int, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.load_from is not None:
        print(json.dumps(asyncio.run(load(args.load_from))))
        return
    with children_in_temp_dir("theseus-cache-load-") as children:
        _, port = start_etcd(children)
        tasks = asyncio.run(write_cluster(port, args.nodes, args.groups, args.per_group))
        print(f"a cluster of {args.nodes} nodes, {tasks} tasks in {args.groups} groups, in etcd")
        rounds = []
        for _ in range(args.rounds):
            argv = [sys.executable, __file__, "--load-from", str(port)]
            answer = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            rounds.append(json.loads(answer.splitlines()[-1]))
            assert rounds[-1]["tasks"] == tasks, rounds[-1]
        for name, label, unit in (
            ("wall", "load, wall", "s"),
            ("cpu", "load, CPU", "s"),
            ("rss", "RSS growth", "MiB"),
        ):
            values = [r[name] for r in rounds]
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {label:<12} median {statistics.median(values):8.2f} {unit}  ({shown})")


if __name__ == "__main__":
    main()
