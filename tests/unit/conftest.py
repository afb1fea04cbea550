"""Fixtures of the unit tests: an in-memory store and a cache that follows it, for what is
built on the store (writers, leadership, the leader) without an etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from theseus.store.cache import StateCache
from theseus.store.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def cache(store: MemoryStore) -> AsyncIterator[StateCache]:
    """A ``StateCache`` following ``store`` (loaded once this fixture returns)."""
    cache = StateCache(store)
    following = asyncio.create_task(cache.run(), name="cache")
    await cache.wait_ready()
    yield cache
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
