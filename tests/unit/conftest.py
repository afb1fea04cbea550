"""Fixtures of the unit tests: an in-memory store and a cache that follows it, for what is
built on the store (writers, leadership, the leader) without an etcd; and the root logger put
back after every test (``theseus server``/``agent`` run in-process set their own handler, on a
stream the CLI runner closes, and later tests' records would fail on it)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook = hook
