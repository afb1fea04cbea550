"""The cache applies a backlog of watch events in slices (``theseus.store.cache``'s
``APPLY_SLICE``): the loop runs other work before the backlog is through, and only ever
between two revisions, so a reader never sees half of a transaction."""

from __future__ import annotations

import asyncio

import pytest

from theseus.store import cache as cache_module
from theseus.store import keys
from theseus.store.base import Entry, Put
from theseus.store.cache import StateCache
from theseus.store.memory import MemoryStore

REVISIONS = 50
KEYS_PER_REVISION = 3


class BackloggedStore(MemoryStore):
    """Its first load answers, then ``REVISIONS`` transactions are written before the cache
    can start its watch: the watch begins with them all queued (what a busy server's cache
    meets after a big commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded_at: int | None = None

    async def load(self, start: str, end: str) -> tuple[int, list[Entry]]:
        loaded = await super().load(start, end)
        if self.loaded_at is None:
            self.loaded_at = loaded[0]
            for i in range(REVISIONS):
                ops = [Put(f"{keys.REGISTRY}svc-{i}/{j}", b"{}") for j in range(KEYS_PER_REVISION)]
                await self.commit(ops)
        return loaded


async def test_a_backlog_leaves_the_loop_turns_between_revisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "APPLY_SLICE", 0.0)  # a turn at every revision
    store = BackloggedStore()
    cache = StateCache(store)
    following = asyncio.create_task(cache.run())
    seen: list[tuple[int, int]] = []
    try:
        await asyncio.wait_for(cache.wait_ready(), 5)
        assert store.loaded_at is not None
        start = store.loaded_at
        async with asyncio.timeout(5):
            while cache.revision < start + REVISIONS:
                seen.append((cache.revision, len(cache.state.registry)))
                await asyncio.sleep(0)
    finally:
        following.cancel()
    assert [r for r, _ in seen if start < r < start + REVISIONS], f"no turn mid-backlog: {seen}"
    for revision, registered in seen:  # whole transactions only
        assert registered == KEYS_PER_REVISION * (revision - start), (revision, registered)
