"""The cache's proof that it follows etcd: current, or at least moving; else out of touch."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore, StoreUnavailable


class FakeStore:
    def __init__(self) -> None:
        self.revision = 10
        self.down = False

    async def current_revision(self) -> int:
        if self.down:
            raise StoreUnavailable("down")
        return self.revision


async def probed(cache: StateCache, rounds: int = 3) -> None:
    task = asyncio.create_task(cache.probe(interval=0.01))
    await asyncio.sleep(0.01 * rounds + 0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def store_and_cache() -> tuple[FakeStore, StateCache]:
    store = FakeStore()
    cache = StateCache(cast(EtcdStore, store))
    cache.state.revision = 10
    cache._confirmed_at -= 100  # as if the last proof were long ago
    return store, cache


async def test_a_current_cache_is_in_touch(store_and_cache: Any) -> None:
    _, cache = store_and_cache
    await probed(cache)
    assert cache.out_of_touch() is None


async def test_a_cache_behind_but_moving_is_in_touch(store_and_cache: Any) -> None:
    store, cache = store_and_cache
    store.revision = 50
    task = asyncio.create_task(cache.probe(interval=0.01))
    for revision in range(11, 16):  # the watch applies changes, slowly
        await asyncio.sleep(0.012)
        cache.state.revision = revision
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cache.out_of_touch() is None


async def test_a_stuck_cache_or_lost_etcd_is_out_of_touch(store_and_cache: Any) -> None:
    store, cache = store_and_cache
    store.revision = 50  # etcd moved on; the cache stays at 10
    await probed(cache)
    assert cache.out_of_touch() is not None
    store.revision, store.down = 10, True
    await probed(cache)
    assert cache.out_of_touch() is not None
