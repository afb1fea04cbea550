"""What every ``Store`` must do, as checks run against both implementations: the in-memory
store in the unit tests (``tests/unit/test_memory_store.py``) and a real etcd in the
integration tests (``tests/integration/test_store.py``). ``MemoryStore`` stands in for etcd in
unit tests only as far as these checks prove it behaves the same.

Each check takes a connected store and a key prefix of its own (the etcd one is shared).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest

from theseus.store.base import (
    Change,
    CreateRevisionIs,
    Delete,
    Guard,
    HistoryCompacted,
    ModRevisionIs,
    Op,
    Put,
    Store,
    StoreUnavailable,
)
from theseus.store.commit import TxnTooLarge
from theseus.store.limits import MAX_TXN_OPS

Check = Callable[[Store, str], Awaitable[None]]


async def guarded_commits_apply_atomically_or_not_at_all(store: Store, p: str) -> None:
    unwritten = [ModRevisionIs(f"{p}a", 0)]
    first = await store.commit([Put(f"{p}a", b"1"), Put(f"{p}b", b"1")], unwritten)
    assert first is not None
    stale = await store.commit([Put(f"{p}a", b"2"), Delete(f"{p}b")], unwritten)
    assert stale is None
    a, b = await store.get(f"{p}a"), await store.get(f"{p}b")
    assert a is not None and a.value == b"1"
    assert b is not None  # nothing of the refused commit applied
    ok = await store.commit([Put(f"{p}a", b"3")], [CreateRevisionIs(f"{p}a", a.create_revision)])
    assert ok is not None and ok > first


async def revisions_count_transactions_and_keys_remember_theirs(store: Store, p: str) -> None:
    created = await store.commit([Put(f"{p}k", b"1")])
    assert created is not None
    changed = await store.commit([Put(f"{p}k", b"2"), Put(f"{p}other", b"x")])
    assert changed == created + 1  # one revision per transaction, however many keys
    entry = await store.get(f"{p}k")
    assert entry is not None
    assert (entry.create_revision, entry.mod_revision, entry.lease) == (created, changed, 0)
    revision, entries = await store.load(p, p + "\x7f")
    assert revision == await store.current_revision() and revision >= changed
    assert [e.key for e in entries] == [f"{p}k", f"{p}other"]  # in key order
    # Deleting what does not exist changes nothing, and moves no revision.
    assert await store.commit([Delete(f"{p}never")]) == revision


async def watches_replay_a_range_from_a_revision(store: Store, p: str) -> None:
    start = await store.commit([Put(f"{p}w/x", b"1")])
    assert start is not None
    await store.commit([Put(f"{p}w/y", b"2"), Put(f"{p}z", b"outside")])
    await store.commit([Delete(f"{p}w/x")])
    seen: list[Change] = []
    async with asyncio.timeout(10):
        async for change in store.watch(f"{p}w/", f"{p}w0", start):
            seen.append(change)
            if len(seen) == 3:
                break
    assert [(c.key, c.value) for c in seen] == [
        (f"{p}w/x", b"1"),
        (f"{p}w/y", b"2"),
        (f"{p}w/x", None),
    ]
    assert seen[0].revision == start and seen[2].revision == start + 2
    # A deletion carries its key and revision only, as etcd's events do.
    assert (seen[2].create_revision, seen[2].lease) == (0, 0)


async def leases_take_their_keys_with_them(store: Store, p: str) -> None:
    lease = await store.grant_lease(30)
    put = await store.commit([Put(f"{p}alive", b"1", lease=lease), Put(f"{p}kept", b"1")])
    assert put is not None
    entry = await store.get(f"{p}alive")
    assert entry is not None and entry.lease == lease
    assert await store.refresh_lease(lease) is True
    await store.revoke_lease(lease)
    assert await store.get(f"{p}alive") is None
    assert await store.get(f"{p}kept") is not None
    assert await store.refresh_lease(lease) is False
    with pytest.raises(StoreUnavailable):  # a put on a lease that is gone is refused
        await store.commit([Put(f"{p}late", b"1", lease=lease)])


async def transactions_beyond_the_limit_are_refused_before_anything_is_written(
    store: Store, p: str
) -> None:
    ops = [Put(f"{p}many/{i}", b"1") for i in range(MAX_TXN_OPS + 1)]
    with pytest.raises(TxnTooLarge):
        await store.commit(ops)
    guards = [ModRevisionIs(f"{p}many/{i}", 0) for i in range(MAX_TXN_OPS + 1)]
    with pytest.raises(TxnTooLarge):
        await store.commit([Put(f"{p}one", b"1")], guards)
    assert await store.get(f"{p}many/0") is None
    assert await store.commit(ops[:MAX_TXN_OPS], guards[:MAX_TXN_OPS]) is not None


class PromptCommits:
    """A store whose every commit is a prompt one (``Store.commit``): the checks run again
    through it, so that both ways a store commits keep the contract."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(
        self, ops: Sequence[Op], guards: Sequence[Guard] = (), *, prompt: bool = False
    ) -> int | None:
        return await self.inner.commit(ops, guards, prompt=True)


def committing_promptly(check: Check) -> Check:
    async def prompt_check(store: Store, p: str) -> None:
        await check(cast(Store, PromptCommits(store)), p)

    prompt_check.__name__ = f"{check.__name__}_committing_promptly"
    return prompt_check


_EACH_WAY: list[Check] = [
    guarded_commits_apply_atomically_or_not_at_all,
    revisions_count_transactions_and_keys_remember_theirs,
    leases_take_their_keys_with_them,
    transactions_beyond_the_limit_are_refused_before_anything_is_written,
]


async def compaction_forgets_the_history_before_a_revision(store: Store, p: str) -> None:
    first = await store.commit([Put(f"{p}c", b"1")])
    second = await store.commit([Put(f"{p}c", b"2")])
    assert first is not None and second is not None
    await store.compact_history(second)
    await store.compact_history(second)  # compacted that far already: no error
    await store.compact_history(first)  # nor further back
    entry = await store.get(f"{p}c")
    assert entry is not None and entry.value == b"2"  # the current values stay
    async with asyncio.timeout(10):
        async for change in store.watch(f"{p}c", f"{p}d", second):  # the revision itself stays
            assert (change.key, change.value, change.revision) == (f"{p}c", b"2", second)
            break
        with pytest.raises(HistoryCompacted):
            async for _ in store.watch(f"{p}c", f"{p}d", first):
                pass


CHECKS: list[Check] = [
    *_EACH_WAY,
    watches_replay_a_range_from_a_revision,
    compaction_forgets_the_history_before_a_revision,
    *(committing_promptly(check) for check in _EACH_WAY),
]
