"""Reconciler pass time at scale (pure code, no I/O): 1,000 nodes, 100 groups of 100 tasks.

    .venv/bin/python bench/reconcile_pass.py [--nodes 1000] [--groups 100] [--per-group 100]
        [--child]

Times (median of 5) the pass that creates and places every task of a fresh deploy, the
steady-state pass once every task runs and is registered (what the leader repeats on every
change), and that pass scoped to one group and to a tenth of them (``reconciler.scope``).
With ``--child``, also the fresh deploy's whole pass as the leader runs it (deployments'
step, reconcile, encoding): in this process, then in a forked child (``forked_pass``), with
the child's CPU and the parent's (the fork, reading and unpickling the answer). And what the
leader does with the encoded plan before its first transaction goes out (the cache told what
to expect, the writes packed into transactions): on the event loop, every other request
waits for it.
Runs against whatever ``theseus`` is importable, so the same script measures an older commit
through a git worktree.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskState, TaskStatus
from theseus.reconciler import reconcile as reconcile_module
from theseus.reconciler.reconcile import reconcile


def build(nodes: int, groups: int, per_group: int) -> ClusterState:
    state = ClusterState(revision=1)
    for i in range(nodes):
        node = NodeRecord(
            name=f"hollow-{i}",
            address="127.0.0.2",
            agent_port=5051,
            cpus=64,
            mem=1e6,
            registered_at=0.0,
        )
        state.nodes[node.name], state.alive[node.name] = node, i + 1
    for g in range(groups):
        spec = GroupSpec(image="sim", instances=per_group, cpus=0.01, mem=1, ports={"api": 80})
        record = GroupRecord(
            service=f"svc-{g}",
            labels=[],
            spec=spec,
            version=spec.version(),
            created_at=0.0,
            updated_at=0.0,
        )
        state.groups[record.group_key.key] = record
    return state


def timed(call: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def child_rows(state: ClusterState) -> None:
    from theseus.server.pass_process import _compute, forked_pass

    started = time.process_time()
    _compute(state.copy(), 100.0, {})
    alone = time.process_time() - started
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.process_time()
    forked_pass(state.copy(), 100.0, {})
    parent = time.process_time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    print("the placing pass as the leader runs it (deployments, reconcile, encoding), CPU:")
    print(f"  in this process:                   {alone * 1000:8.0f} ms")
    print(f"  in a child: user / system          {user * 1000:8.0f} / {system * 1000:.0f} ms")
    print(f"  the parent (fork, answer):         {parent * 1000:8.0f} ms")


def commit_preparation(plan: object) -> float:
    """Seconds (median of 5) from an encoded plan to its transactions, as the leader's
    ``_commit_plan`` does it (older code: an expectation per write, a unit per write, then
    ``pack``)."""
    from theseus.store.base import ModRevisionIs, Put
    from theseus.store.commit import _repeats_a_key, pack
    from theseus.store.encoding import encode_plan
    from theseus.store.expected import ExpectedRecords

    encoded = encode_plan(plan)  # type: ignore[arg-type]
    fence = [ModRevisionIs("/fence", 3)]

    def prepare() -> None:
        expected = ExpectedRecords()
        if hasattr(encoded, "transactions"):
            expected.expect_all(encoded.expected)
            txns = encoded.transactions(fence)
        else:
            for op in encoded.ops:
                record = encoded.records.get(op.key)
                if record is not None and isinstance(op, Put):
                    expected.expect(op.key, op.value, record)
            txns = pack(encoded.units(), fence)
        _repeats_a_key(txns)

    return timed(prepare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--child", action="store_true", help="the placing pass in a child too")
    args = parser.parse_args()
    state = build(args.nodes, args.groups, args.per_group)
    fresh = timed(lambda: reconcile(state, 100.0))
    if args.child:
        child_rows(state)
    plan = reconcile(state, 100.0)
    if args.child:
        writes = len(plan.task_puts) + len(plan.status_puts) + len(plan.registry_puts)
        print(f"the plan's {writes} writes before its commit (expectations, transactions):")
        print(f"  {'on the leader':<35}{commit_preparation(plan) * 1000:8.0f} ms")
    state.tasks.update(plan.task_puts)
    for task in state.tasks.values():
        state.statuses[task.id] = TaskStatus(
            task_id=task.id, state=TaskState.RUNNING, started_at=99.0, updated_at=99.0
        )
        if hasattr(state, "index_task"):
            state.index_task(None, task)
    if hasattr(state, "registry"):
        settle = reconcile(state, 100.0)
        state.registry.update(settle.registry_puts)
    memo_kwargs = {"memo": {}} if "memo" in reconcile_module.reconcile.__code__.co_varnames else {}
    steady = timed(lambda: reconcile(state, 100.0, **memo_kwargs))  # type: ignore[arg-type]
    tasks = args.groups * args.per_group
    print(f"reconcile pass, {args.nodes} nodes, {tasks} tasks in {args.groups} groups")
    print(f"  fresh deploy (create + place all): {fresh * 1000:8.0f} ms")
    print(f"  steady state (all running):        {steady * 1000:8.0f} ms")
    if "only" in reconcile_module.reconcile.__code__.co_varnames:
        # What most passes of a steady cluster are: scoped to the few groups that changed.
        for changed in (1, args.groups // 10):
            only = frozenset(sorted(state.groups)[:changed])
            scoped = timed(
                lambda only=only: reconcile(state, 100.0, only=only, **memo_kwargs)  # type: ignore[misc]
            )
            label = f"scoped to {changed} changed group(s):"
            print(f"  {label:<35}{scoped * 1000:8.0f} ms")
        # A small deploy during a big one (the benchmark's probe: a service scaled 1 -> 2):
        # one group one instance larger, its new task created and placed by a scoped pass.
        key = sorted(state.groups)[0]
        record = state.groups[key]
        bigger = record.spec.model_copy(update={"instances": record.spec.instances + 1})
        state.groups[key] = record.model_copy(update={"spec": bigger})
        one_more = timed(
            lambda: reconcile(state, 100.0, only=frozenset({key}), **memo_kwargs)  # type: ignore[misc]
        )
        state.groups[key] = record
        print(f"  {'scoped to 1 group, 1 task to place:':<35}{one_more * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
