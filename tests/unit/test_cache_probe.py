"""The cache's proof that it follows etcd: current, or at least moving; else out of touch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore, StoreUnavailable


class FakeStore:
    def __init__(self) -> None:
        self.revision = 10
        self.down = False
        self.probes = 0
        self.probed = asyncio.Event()

    async def current_revision(self) -> int:
        self.probes += 1
        self.probed.set()
        if self.down:
            raise StoreUnavailable("down")
        return self.revision


class Probed:
    def __init__(self, store: FakeStore, cache: StateCache) -> None:
        self.store, self.cache = store, cache

        self.task: asyncio.Task[None] | None = None

    async def rounds(self, count: int) -> None:
        """Start the probe if need be, and let it run ``count`` more times. (Our fake answers
        without suspending, so a probe has judged once the next one has asked.)"""
        if self.task is None:
            self.task = asyncio.create_task(self.cache.probe(interval=0.01))
        target = self.store.probes + count + 1
        async with asyncio.timeout(5):
            while self.store.probes < target:
                self.store.probed.clear()
                await self.store.probed.wait()


@pytest.fixture
async def probed() -> AsyncIterator[Probed]:
    store = FakeStore()
    cache = StateCache(cast(EtcdStore, store))
    cache.state.revision = 10
    cache._confirmed_at -= 100  # as if the last proof were long ago
    probed = Probed(store, cache)
    yield probed
    if probed.task is not None:
        probed.task.cancel()
        await asyncio.gather(probed.task, return_exceptions=True)


async def test_a_current_cache_is_in_touch(probed: Probed) -> None:
    await probed.rounds(1)
    assert probed.cache.out_of_touch() is None


async def test_a_cache_behind_but_moving_is_in_touch(probed: Probed) -> None:
    probed.store.revision = 50
    await probed.rounds(1)  # behind, not yet seen moving
    assert probed.cache.out_of_touch() is not None
    for _ in range(3):  # the watch applies changes, slowly, between probes
        probed.cache.state.revision += 1
        await probed.rounds(1)
    assert probed.cache.out_of_touch() is None


async def test_a_stuck_cache_or_lost_etcd_is_out_of_touch(probed: Probed) -> None:
    probed.store.revision = 50  # etcd moved on; the cache stays at 10
    await probed.rounds(3)
    assert probed.cache.out_of_touch() is not None
    probed.store.revision, probed.store.down = 10, True
    await probed.rounds(3)
    assert probed.cache.out_of_touch() is not None


async def test_released_long_polls_answer_at_once_and_new_ones_do_not_wait() -> None:
    cache = StateCache(cast(EtcdStore, None))
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
