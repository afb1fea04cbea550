"""The leader scopes its passes (``theseus.reconciler.scope``) on the in-memory store: once the
tasks are placed, an agent's report is registered by a pass over its group only, and a node's
loss, which every group depends on, is handled by a pass over all of them."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.kit.builders import make_group, make_node
from tests.kit.leader import commit_groups_and_live_node, make_leader
from tests.kit.wait import wait_until_async
from theseus.model import registry
from theseus.model.tasks import TaskRecord, TaskState, TaskStatus
from theseus.server.leader import MAX_REST, MIN_REST, REST_FACTOR, Leader, rest_after
from theseus.server.metrics import ServerMetrics
from theseus.server.settle import (
    SETTLE_GROWTH,
    SETTLE_MAX,
    SETTLE_MIN_PLACEMENTS,
    SETTLE_QUIET,
    Settling,
)
from theseus.store import keys
from theseus.store.base import Delete, Put
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, encode, node_put, status_put
from theseus.store.leadership import Leadership
from theseus.store.memory import MemoryStore


def passes(metrics: ServerMetrics, scope: str) -> float:
    return metrics.passes.labels("thread", scope)._value.get()


async def report_running(store: MemoryStore, task: TaskRecord) -> None:
    """The task's status as its agent's report writes it: running."""
    status = TaskStatus(task_id=task.id, state=TaskState.RUNNING, started_at=1.0, updated_at=1.0)
    await store.commit([status_put(status)])


async def test_a_report_is_registered_by_a_scoped_pass_and_a_node_loss_by_a_full_one(
    store: MemoryStore, cache: StateCache
) -> None:
    web, db = make_group("web", instances=2), make_group("db", instances=1)
    await commit_groups_and_live_node(store, [web, db], make_node("n1"))
    leader, metrics = make_leader(store, cache)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(
            lambda: sum(t.node == "n1" for t in cache.state.tasks.values()) == 3, 10, "3 placed"
        )
        before = passes(metrics, "changed")
        task = next(iter(cache.state.tasks_of(web.group_key.key)))
        await report_running(store, task)
        key = registry.container_key(task.group_key, task.id)
        await wait_until_async(lambda: key in cache.state.registry, 10, "the task registered")
        assert passes(metrics, "changed") > before
        full_before = passes(metrics, "all")
        # The node is lost (as the leader's sweep deletes it): every group may change.
        await store.commit([Delete(keys.alive_key("n1"))])
        await wait_until_async(
            lambda: all(
                (s := cache.state.statuses.get(t.id)) is not None and s.state is TaskState.LOST
                for t in cache.state.tasks.values()
                if t.node == "n1"
            ),
            10,
            "the node's tasks lost",
        )
        assert key not in cache.state.registry
        assert passes(metrics, "all") > full_before
    finally:
        running.cancel()


def test_the_leader_rests_after_a_long_pass_and_not_after_a_short_one() -> None:
    """A small cluster's passes (tens of ms) follow each other at once; a pass over 50,000
    tasks is followed by twice its length of rest, so that a deploy's reports are reconciled
    in fewer, bigger passes, and never more than ``MAX_REST``."""
    assert rest_after(0.01) == 0.0
    assert rest_after(MIN_REST) == MIN_REST * REST_FACTOR
    assert rest_after(1.5) == 1.5 * REST_FACTOR > 1.5
    assert rest_after(30.0) == MAX_REST


def test_a_big_deploy_waits_for_its_groups_to_settle_and_a_small_one_does_not() -> None:
    """``Settling``: a pass with many placements waits until the deploy has not grown for
    ``SETTLE_QUIET`` seconds, never longer than ``SETTLE_MAX`` since it first waited; fewer
    placements than ``SETTLE_MIN_PLACEMENTS`` never wait."""
    big, small = SETTLE_MIN_PLACEMENTS, SETTLE_MIN_PLACEMENTS - 1
    assert Settling().delay(10.0, 9.9, big) == pytest.approx(SETTLE_QUIET - 0.1)
    assert Settling().delay(10.0, 9.9, small) == 0.0
    assert Settling().delay(10.0, 10.0 - SETTLE_QUIET, big) == 0.0  # quiet long enough
    # The next document (more instances) is waited for again, from its own change.
    settling = Settling()
    assert settling.delay(10.0, 9.9, big) == pytest.approx(SETTLE_QUIET - 0.1)
    assert settling.delay(10.3, 10.2, big + SETTLE_GROWTH) == pytest.approx(SETTLE_QUIET - 0.1)
    assert settling.delay(10.7, 10.2, big + SETTLE_GROWTH) == 0.0
    assert settling.since is None  # the wait is over: the next pass goes


def test_small_changes_during_a_big_deploys_wait_do_not_prolong_it() -> None:
    """Groups that change all the time (a service scaled 1 <-> 2 four times a second) do not
    hold the pass back beyond the deploy's own quiet; a deploy that keeps growing is held
    back ``SETTLE_MAX`` in all, not longer."""
    big = SETTLE_MIN_PLACEMENTS
    settling = Settling()
    assert settling.delay(10.0, 10.0, big) == pytest.approx(SETTLE_QUIET)
    assert settling.delay(10.25, 10.25, big + 1) == pytest.approx(SETTLE_QUIET - 0.25)
    assert settling.delay(10.5, 10.5, big) == 0.0  # a probe changed a group: no growth
    growing = Settling()
    first = 10.0
    for step in range(int(SETTLE_MAX / 0.25)):
        now = first + 0.25 * step
        assert growing.delay(now, now, big + step * SETTLE_GROWTH) > 0.0
    assert growing.delay(first + SETTLE_MAX, first + SETTLE_MAX, big * 100) == 0.0


async def test_a_deploy_sent_as_two_documents_is_placed_by_one_pass(
    store: MemoryStore, cache: StateCache
) -> None:
    """The second document comes 0.1 s after the first, each of ``SETTLE_MIN_PLACEMENTS``
    placements: the leader waits for the groups to settle and places both in one pass (one
    pass's tasks share its ``created_at``), so a node gets its tasks in one assignment."""
    each = SETTLE_MIN_PLACEMENTS
    web, db = (make_group(name, instances=each, cpus=0.01, mem=1) for name in ("web", "db"))
    node = make_node("n1", cpus=64.0, mem=1e6, port_range=(20000, 29999))
    await store.commit([node_put(node), alive_put(node.name, 0.0, 30)])
    leadership = Leadership(store, cache, "me", lease_ttl=5)
    leader = Leader(store, cache, leadership, registry_repair_interval=3600)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(lambda: leadership.is_leader, 10, "leading")
        await store.commit([Put(keys.group_key(web.group_key.key), encode(web))])
        await asyncio.sleep(0.1)  # the client sends its second document (not a wait for a state)
        await store.commit([Put(keys.group_key(db.group_key.key), encode(db))])
        await wait_until_async(lambda: len(cache.state.tasks) == 2 * each, 10, "all placed")
        assert len({task.created_at for task in cache.state.tasks.values()}) == 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_full_pass_in_a_child_spaces_the_registry_repairs(
    store: MemoryStore, cache: StateCache
) -> None:
    """The registry's repair (a full pass) comes at most every ten full passes' time
    (``repair_due``). A full pass in a child counts: else, at 50,000 tasks, the repair
    interval of a small cluster's passes made every pass of a deploy a full one, in a child."""
    web = make_group("web", instances=SETTLE_MIN_PLACEMENTS)
    await commit_groups_and_live_node(store, [web], make_node("n1", cpus=1000.0, mem=1e7))
    leader, metrics = make_leader(store, cache, fork_passes=True)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(
            lambda: metrics.passes.labels("child", "all")._value.get() == 1, 20, "a child pass"
        )
        assert leader._full_took > 0
    finally:
        running.cancel()


async def test_a_pass_in_a_child_keeps_its_scope_and_repairs_only_when_due(
    store: MemoryStore, cache: StateCache
) -> None:
    """A pass worth a child (a group scaled up by ``CHILD_MIN_PLACEMENTS``) looks, there too,
    at the groups that changed only: it compares the registry with the leader's view,
    not with what etcd holds, so an entry written there by hand (none of the leader's) stays
    until the next repair, which is an hour away here; its own tasks are registered. (In a
    child a full pass had looked at every task of a 50,000-task deploy each time it
    registered some that started.)"""
    node = make_node("n1", cpus=1000.0, mem=1e7)
    await store.commit([node_put(node), alive_put(node.name, 0.0, 30)])
    leader, metrics = make_leader(store, cache, fork_passes=True)
    running = asyncio.create_task(leader.run())
    try:
        # The term's first pass is a repair (of an empty registry): then none is due.
        await wait_until_async(lambda: leader._last_repair > -math.inf, 10, "the first repair")
        repaired_at = leader._last_repair
        # A new group changes the set of groups, which every pass is decided on (a full
        # pass): the group is there first, and scaled up.
        web = make_group("web", instances=1)
        await store.commit([Put(keys.group_key(web.group_key.key), encode(web))])
        await wait_until_async(lambda: cache.state.tasks_of(web.group_key.key), 10, "placed")
        stray = registry.container_key(web.group_key, "no-such-task")
        await store.commit([Put(stray, b'{"host": "198.18.0.9"}')])
        await wait_until_async(lambda: stray in cache.state.registry, 10, "the stray entry seen")
        wanted = 1 + SETTLE_MIN_PLACEMENTS
        bigger = web.model_copy(update={"spec": web.spec.model_copy(update={"instances": wanted})})
        await store.commit([Put(keys.group_key(web.group_key.key), encode(bigger))])
        await wait_until_async(
            lambda: metrics.passes.labels("child", "changed")._value.get() == 1,
            20,
            "a scoped pass in a child",
        )
        await wait_until_async(
            lambda: len(cache.state.tasks_of(web.group_key.key)) == wanted, 10, "all placed"
        )
        task = next(iter(cache.state.tasks_of(web.group_key.key)))
        await report_running(store, task)
        key = registry.container_key(task.group_key, task.id)
        await wait_until_async(lambda: key in cache.state.registry, 10, "the task registered")
        assert stray in cache.state.registry
        assert metrics.passes.labels("child", "all")._value.get() == 0
        assert leader._last_repair == repaired_at
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
