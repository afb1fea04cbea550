"""A reconcile pass in a child process of its own: ``forked_pass`` is called by
``theseus.server.leader.Leader`` from its worker thread, once per pass.

Why: the pass is pure CPU (placing 10,000 tasks takes half a second), and in a thread it shares
the GIL with the event loop that answers every agent. During a big deploy the two starved each
other: a plan that takes 0.5 s alone took 1.5-4 s beside the loop at 1,000 nodes and 18 s at
2,000, while the loop, waiting for the GIL, answered heartbeats too late. A child process has
its own interpreter, so the loop keeps the GIL and the pass runs on another core.

How: ``os.fork`` gives the child the snapshot as it is in the parent's memory (copy-on-write),
so nothing is encoded on the way in. The child computes, pickles what it found into a pipe
and leaves with ``os._exit`` (no exit handlers, no finalizers: the parent's gRPC channels,
event loop and threads exist in the child only as memory, and are never touched there). The
parent's thread reads the pipe without the GIL, then unpickles (about 5 ms per 1,000 placed
tasks). Threads do not survive a fork; the child only runs pure code (``reconcile``, ``track``,
``encode_plan``), which takes no lock that another thread could have held at the fork.

The registry's encoding memo (``theseus.reconciler.registry``) matches records by identity,
and objects cannot come back from a child as themselves: the child says which entries it
encoded again, by the ids of their records, and the parent files them under its own objects
(the snapshot's, or the plan's that the cache will keep).

A pass goes to a child when it has placements to make, or looks at very many tasks
(``worth_a_child``): a fork costs the pages the child touches, every one copied from the
parent (a steady pass over 20,000 tasks took 0.6-1.3 s in a child against 0.3 s in the
thread, and a deploy's reports call for about twenty of them), while placing is what takes
the CPU (105 µs a task). From ``CHILD_MIN_TASKS`` tasks on, though, looking is a GIL held
for seconds, which the event loop cannot spare. A pass in a child has the scope the leader
gave it, as in the thread: all groups, or only those that changed, some of them lightly.

The tasks a pass looks at lightly (only their statuses changed: the passes that register a
deploy's tasks as they start) never send it to a child. Such a pass registers 30,000-40,000
tasks in 0.6-1.0 s in the thread. In a child at 5,000 nodes it took 1.5 s there; while it
ran, the parent, busy with the agents' reports, copied every page it wrote to (its system
time went from 0.04-0.18 to 0.20-0.48 cores, about 0.7 s more), and then it read the child's
answer (BENCHMARKS.md, issue 17, twenty-seventh session).

If the child ends without an answer (killed, out of memory), ``PassProcessFailed`` is raised
and the leader runs that pass in its thread instead.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskRecord
from theseus.reconciler.deployments import Tracked, track
from theseus.reconciler.reconcile import Plan, reconcile
from theseus.reconciler.registry import Encoded, EncodingMemo
from theseus.store.encoding import EncodedPlan, encode_plan

T = TypeVar("T")

# Placements from which a pass is worth a child: about 50 ms of placing, as much as a fork of
# a server with 10,000 tasks costs.
CHILD_MIN_PLACEMENTS = 500
# Tasks a pass looks at in full (not lightly: see above) from which it is worth a child though
# it places nothing. Looking at 50,000 tasks takes 0.45 s alone; in the leader's thread at
# 5,000 nodes, while a deploy's reports made every group change, each such pass took 1-3 s
# and held the GIL half of that time away from the event loop (heartbeats answered in
# seconds, reports timed out). Below this, a thread is cheaper: the child pays for every page
# it touches (BENCHMARKS.md).
CHILD_MIN_TASKS = 30_000


class PassProcessFailed(RuntimeError):
    """The child ended without an answer."""


@dataclass(frozen=True)
class MemoEntry:
    """A memo entry the child encoded, by the ids of its records: a group's key, or a
    task's id and its node's name."""

    group: str | None
    task: str | None
    node: str | None
    value: bytes


@dataclass
class PassResult:
    plan: Plan
    encoded: EncodedPlan
    tracked: Tracked
    memo_changed: dict[str, MemoEntry]
    memo_dropped: list[str]
    child_peak_rss: int = 0  # bytes: the child's own pages, shared ones included


def worth_a_child(
    state: ClusterState,
    only: frozenset[str] | None = None,
    light: Mapping[str, frozenset[str]] | None = None,
) -> bool:
    """Whether a pass over ``state`` (over the groups ``only`` names, or all) looks at
    ``CHILD_MIN_TASKS`` tasks or more in full (those of the ``light`` groups do not count:
    see the module's docstring), or may place ``CHILD_MIN_PLACEMENTS`` or more: tasks without
    a node, and the instances the groups lack (a new or scaled group's tasks are created by
    the pass that places them)."""
    if only is None:
        looked_at = len(state.tasks)
    else:
        light = light or {}
        looked_at = sum(len(state.tasks_by_group.get(key, ())) for key in only if key not in light)
    if looked_at >= CHILD_MIN_TASKS:
        return True
    missing = instances_lacking(state)
    if missing >= CHILD_MIN_PLACEMENTS:
        return True
    return missing + _unplaced(state, only) >= CHILD_MIN_PLACEMENTS


def _unplaced(state: ClusterState, only: frozenset[str] | None) -> int:
    """Tasks without a node that the pass may place: of the scope's groups only, since a
    scoped pass places no other (counting them all was a look at every task before each of
    the leader's passes, a second apart at rest: 6.5 ms of GIL at 50,000 tasks, now 0.1)."""
    if only is None:
        return sum(1 for task in state.tasks.values() if task.node is None)
    tasks = state.tasks
    return sum(
        1
        for key in only
        for task_id in state.tasks_by_group.get(key, ())
        if task_id in tasks and tasks[task_id].node is None
    )


def instances_lacking(state: ClusterState) -> int:
    """The instances the groups lack: the tasks a full pass will create and place (a new or
    scaled group's tasks are created by the pass that places them)."""
    return sum(
        max(0, group.spec.instances - len(state.tasks_by_group.get(key, ())))
        for key, group in state.groups.items()
    )


def run_forked(compute: Callable[[], T]) -> tuple[T, int]:
    """``compute()`` in a forked child: its result (or its exception) in the parent, and the
    child's peak RSS in bytes (the pages it shared with the parent count in full)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's lines are not traced
        _child(compute, read_fd, write_fd)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        _, status, usage = os.wait4(pid, 0)
    if not data:
        raise PassProcessFailed(f"the pass's process ended without an answer ({status=})")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value, usage.ru_maxrss * 1024  # ru_maxrss: KiB on Linux


def _child(compute: Callable[[], object], read_fd: int, write_fd: int) -> None:
    code = 1
    try:
        os.close(read_fd)
        # A stop of the server's process group is the parent's to handle; here it only
        # ends the child (the parent then sees no answer).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        gc.disable()  # a collection would touch, and so copy, every page of the parent
        try:
            outcome: tuple[bool, object] = (True, compute())
        except Exception as exc:  # raised again in the parent
            outcome = (False, exc)
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
        code = 0
    finally:
        os._exit(code)


def forked_pass(
    snapshot: ClusterState,
    now: float,
    memo: EncodingMemo,
    only: frozenset[str] | None = None,
    light: Mapping[str, frozenset[str]] | None = None,
) -> PassResult:
    """One pass over ``snapshot`` in a child (over the groups ``only`` names, or all; some of
    them ``light``ly: ``theseus.reconciler.reconcile``); ``memo`` is brought up to date in
    the parent."""
    result, peak_rss = run_forked(lambda: _compute(snapshot, now, memo, only, light))
    result.child_peak_rss = peak_rss
    _apply_memo(memo, result, snapshot)
    return result


def _compute(
    snapshot: ClusterState,
    now: float,
    memo: EncodingMemo,
    only: frozenset[str] | None = None,
    light: Mapping[str, frozenset[str]] | None = None,
) -> PassResult:
    before = dict(memo)
    tracked = track(snapshot, now)
    plan = reconcile(snapshot, now, memo=memo, only=only, light=light)
    changed = {
        key: _entry(encoded) for key, encoded in memo.items() if before.get(key) is not encoded
    }
    dropped = [key for key in before if key not in memo]
    return PassResult(plan, encode_plan(plan), tracked, changed, dropped)


def _entry(encoded: Encoded) -> MemoEntry:
    source, node = encoded.source, encoded.node
    group = source.group_key.key if isinstance(source, GroupRecord) else None
    task = source.id if isinstance(source, TaskRecord) else None
    name = node.name if isinstance(node, NodeRecord) else None
    return MemoEntry(group, task, name, encoded.value)


def _apply_memo(memo: EncodingMemo, result: PassResult, snapshot: ClusterState) -> None:
    for key in result.memo_dropped:
        memo.pop(key, None)
    planned = result.plan.task_puts
    for key, entry in result.memo_changed.items():
        source: object = None
        if entry.group is not None:
            source = snapshot.groups.get(entry.group)
        elif entry.task is not None:
            source = planned.get(entry.task) or snapshot.tasks.get(entry.task)
        node = snapshot.nodes.get(entry.node) if entry.node is not None else None
        if source is None or (entry.node is not None and node is None):
            memo.pop(key, None)  # encoded again next time
        else:
            memo[key] = Encoded(source, node, entry.value)
