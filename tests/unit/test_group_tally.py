"""The groups' tallies kept change by change (``theseus.server.group_tally.GroupTallies``, fed
by a real ``StateCache`` following an in-memory store) are always the ones counted from the
tasks (``tally_of``), and the group views made from either are the same: whatever the order
in which groups, tasks, statuses and nodes' liveness come, change and go, and whether the
cache saw them as changes or in its first load."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kit.builders import make_group, make_status, make_task
from theseus.model.groups import GroupRecord
from theseus.model.tasks import Desired, TaskRecord, TaskState
from theseus.server.group_tally import GroupTallies, Tally, tally_of
from theseus.server.views import group_info
from theseus.store import keys
from theseus.store.base import Delete, Op, Put
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, encode
from theseus.store.memory import MemoryStore

NODES = ("n0", "n1", "n2")
TASKS = tuple(f"t{i}" for i in range(6))
CHECKED = {"ports": {"api": 80}, "health_checks": [{"path": "/health"}]}
# Each group in two versions (a new version changes every task's "up to date"), one of them
# with health checks (a task then counts only once reported healthy).
GROUPS: dict[str, list[GroupRecord]] = {
    "web": [make_group("web", instances=2), make_group("web", instances=3, mem=32)],
    "api": [make_group("api", instances=1, **CHECKED), make_group("api", instances=2)],
}


def _task(draw: st.DrawFn, task_id: str) -> TaskRecord:
    group = draw(st.sampled_from([g for versions in GROUPS.values() for g in versions]))
    placed = draw(st.sampled_from((None, *NODES)))
    return make_task(
        group,
        node=placed,
        id=f"{group.service}.{task_id}",
        desired=draw(st.sampled_from(list(Desired))),
        attempt=draw(st.integers(0, 3)),
        pending_reason=None if placed else draw(st.sampled_from((None, "no room", "no port"))),
        not_before=draw(st.sampled_from((None, 5.0))),
    )


@st.composite
def changes(draw: st.DrawFn) -> list[Op]:
    """A run of writes over a small world: groups, tasks, statuses, nodes' liveness."""
    ops: list[Op] = []
    tasks: dict[str, TaskRecord] = {}
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(("group", "task", "status", "alive", "gone")))
        if kind == "group":
            service = draw(st.sampled_from(sorted(GROUPS)))
            record = draw(st.sampled_from(GROUPS[service]))
            ops.append(Put(keys.group_key(record.group_key.key), encode(record)))
        elif kind == "task":
            task = _task(draw, draw(st.sampled_from(TASKS)))
            tasks[task.id] = task
            ops.append(Put(keys.task_key(task.id), encode(task)))
        elif kind == "status" and tasks:
            task = tasks[draw(st.sampled_from(sorted(tasks)))]
            state = draw(st.sampled_from([s for s in TaskState if s.value != "lost"]))
            healthy = draw(st.sampled_from((None, True, False)))
            status = make_status(task, state, healthy=healthy)
            ops.append(Put(keys.status_key(task.id), encode(status)))
        elif kind == "alive":
            ops.append(alive_put(draw(st.sampled_from(NODES)), 1.0, 10))
        else:
            ops.append(Delete(draw(st.sampled_from(_deletable(tasks)))))
    return ops


def _deletable(tasks: dict[str, TaskRecord]) -> list[str]:
    return [
        *(keys.alive_key(node) for node in NODES),
        *(keys.group_key(versions[0].group_key.key) for versions in GROUPS.values()),
        *(keys.task_key(task_id) for task_id in sorted(tasks)),
        *(keys.status_key(task_id) for task_id in sorted(tasks)),
    ]


def _counts(tally: Tally) -> dict[str, Any]:
    return vars(tally) | {"reason": tally.pending_reason()}


async def _check(ops: list[Op], loaded_first: int) -> None:
    store = MemoryStore()
    for op in ops[:loaded_first]:  # these the cache finds in its first load
        await store.commit([op])
    cache = StateCache(store)
    tallies = GroupTallies(cache)
    cache.observers.append(tallies)
    following = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.wait_ready(), 5)
        for op in ops[loaded_first:]:
            revision = await store.commit([op])
            assert revision is not None
            assert await cache.wait_for_revision(revision, timeout=5)
            state = cache.state
            for group_id in state.groups.keys() | state.tasks_by_group.keys():
                group = state.groups.get(group_id)
                counted = tally_of(state, group_id, group)
                assert _counts(tallies.of(group_id)) == _counts(counted), (group_id, op)
                if group is not None:
                    kept = group_info(state, group_id, group, tallies.of(group_id))
                    assert kept == group_info(state, group_id, group)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=changes(), loaded=st.integers(0, 10))
def test_tallies_kept_change_by_change_are_the_ones_counted_from_the_tasks(
    ops: list[Op], loaded: int
) -> None:
    asyncio.run(_check(ops, min(loaded, len(ops))))
