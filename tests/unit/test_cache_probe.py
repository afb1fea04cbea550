"""The cache's proof that it follows the store: current, or at least moving; else out of
touch. Against the in-memory store, with a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.kit.clock import ManualClock
from theseus.store.base import Put
from theseus.store.cache import OUT_OF_TOUCH, WATCH_STUCK_AFTER, StateCache
from theseus.store.memory import MemoryStore


class Probed:
    """A cache whose watch does not run (the tests say what it has applied) and its probe."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.clock = ManualClock(1000.0)
        self.cache = StateCache(store, clock=self.clock)
        self.task: asyncio.Task[None] | None = None

    async def rounds(self, count: int) -> None:
        """Start the probe if need be, and let it judge ``count`` more times (a probe has
        judged once the next one has asked)."""
        if self.task is None:
            self.task = asyncio.create_task(self.cache.probe(interval=0.01))
        target = self.store.calls["current_revision"] + count + 1
        async with asyncio.timeout(5):
            await self.store.wait_calls("current_revision", target)


@pytest.fixture
async def probed(store: MemoryStore) -> AsyncIterator[Probed]:
    for i in range(10):
        await store.commit([Put(f"/theseus/x/{i}", b"1")])
    probed = Probed(store)
    probed.cache.state.revision = 10  # the cache has applied all of it
    probed.clock.now += 100  # as if the last proof were long ago
    yield probed
    if probed.task is not None:
        probed.task.cancel()
        await asyncio.gather(probed.task, return_exceptions=True)


async def etcd_moves_on(store: MemoryStore, revisions: int) -> None:
    for i in range(revisions):
        await store.commit([Put(f"/theseus/y/{i}", b"1")])


async def test_a_current_cache_is_in_touch(probed: Probed) -> None:
    assert probed.cache.out_of_touch() == 100
    await probed.rounds(1)
    assert probed.cache.out_of_touch() is None


async def test_a_cache_behind_but_moving_is_in_touch(probed: Probed) -> None:
    await etcd_moves_on(probed.store, 40)
    await probed.rounds(1)  # behind, not yet seen moving
    assert probed.cache.out_of_touch() is not None
    for _ in range(3):  # the watch applies changes, slowly, between probes
        probed.cache.state.revision += 1
        await probed.rounds(1)
    assert probed.cache.out_of_touch() is None


async def test_a_stuck_cache_or_lost_etcd_is_out_of_touch(probed: Probed) -> None:
    await etcd_moves_on(probed.store, 40)  # etcd moved on; the cache stays at 10
    await probed.rounds(3)
    assert probed.cache.out_of_touch() is not None
    probed.cache.state.revision = probed.store.revision  # caught up, but etcd is gone
    probed.store.faults.fail("current_revision")
    probed.clock.now += 2 * OUT_OF_TOUCH
    await probed.rounds(3)
    assert probed.cache.out_of_touch() is not None


async def test_a_watch_that_stands_still_while_etcd_moves_on_is_restarted(probed: Probed) -> None:
    """A member that answers calls while the watch on it has gone silent: the store is asked
    to restart the watch, on another member when it has several
    (``EtcdStore.restart_watches``)."""
    await etcd_moves_on(probed.store, 5)  # etcd moved on; the cache stays at 10
    await probed.rounds(2)
    assert probed.store.watch_restarts == 0  # not for long yet
    probed.clock.now += WATCH_STUCK_AFTER
    await probed.rounds(1)
    assert probed.store.watch_restarts == 1
    await probed.rounds(2)  # the restarted watch gets its time too
    assert probed.store.watch_restarts == 1


async def test_a_cache_that_moves_or_an_etcd_away_restarts_no_watch(probed: Probed) -> None:
    await etcd_moves_on(probed.store, 40)
    for _ in range(4):  # far behind, but moving: a busy cache
        probed.cache.state.revision += 1
        probed.clock.now += WATCH_STUCK_AFTER
        await probed.rounds(1)
    probed.store.faults.fail("current_revision")
    for _ in range(3):  # etcd does not answer: not the watch's fault
        probed.clock.now += WATCH_STUCK_AFTER
        await probed.rounds(1)
    assert probed.store.watch_restarts == 0


async def test_released_long_polls_answer_at_once_and_new_ones_do_not_wait(
    store: MemoryStore,
) -> None:
    cache = StateCache(store)
    polls = [
        asyncio.ensure_future(cache.wait_node("n1", 0, 60)),
        asyncio.ensure_future(cache.wait_services(["web"], 0, 60)),
    ]
    await asyncio.sleep(0)  # both are waiting now
    assert not any(poll.done() for poll in polls)
    cache.release_waiters()
    async with asyncio.timeout(1):
        await asyncio.gather(*polls)
        await cache.wait_node("n2", 0, 60)  # a poll arriving during the stop


async def test_a_late_probe_is_settled_by_a_proof_asked_on_demand(probed: Probed) -> None:
    # The periodic probe never ran (a busy or stalled loop): the cache looks out of touch,
    # but one read of etcd shows that it has applied everything.
    assert probed.cache.out_of_touch() is not None
    asked = probed.store.calls["current_revision"]
    results = await asyncio.gather(*(probed.cache.confirm() for _ in range(20)))
    assert all(results)
    assert probed.store.calls["current_revision"] == asked + 1  # one proof for all of them
    assert probed.cache.out_of_touch() is None


async def test_a_proof_on_demand_fails_for_a_stuck_cache_or_lost_etcd(probed: Probed) -> None:
    assert await probed.cache.confirm()  # current at 10
    probed.clock.now += 100
    await etcd_moves_on(probed.store, 5)  # etcd moved on; the cache stays at 10
    assert not await probed.cache.confirm(timeout=0.05)
    assert probed.cache.out_of_touch() is not None
    probed.cache.state.revision = probed.store.revision
    probed.store.faults.fail("current_revision")
    assert not await probed.cache.confirm(timeout=0.05)
    assert probed.cache.out_of_touch() is not None


async def test_a_cache_behind_but_moving_is_proved_on_demand(probed: Probed) -> None:
    assert await probed.cache.confirm()  # current at 10
    probed.clock.now += 100
    await etcd_moves_on(probed.store, 40)  # a big deploy: the watch is far behind...

    async def applies_one_later() -> None:
        await asyncio.sleep(0.01)
        probed.cache.state.revision += 1  # ...and moving
        probed.cache._notify()  # as the watch does after applying a change

    moving = asyncio.ensure_future(applies_one_later())
    assert await probed.cache.confirm(timeout=1.0)
    await moving
    assert probed.cache.out_of_touch() is None
