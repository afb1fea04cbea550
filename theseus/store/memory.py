"""``MemoryStore``: the ``Store`` contract (``theseus.store.base``) kept in memory, for unit
tests of everything built on a store (the cache, the leadership, the writers, the leader).

It honours what those rely on in etcd: one revision per committed transaction that changed
something; create and mod revisions per key; guards that refuse a whole transaction; the
transaction limits of ``theseus.store.limits``; leases that expire on the event loop's clock
(their keys deleted in one revision, as etcd does) unless refreshed; watches that replay a key
range's history from any revision not compacted away, then follow it.

Tests break it on purpose through ``faults`` (calls that fail or hang until healed),
``break_watches`` (the open watches fail, as when etcd moves to another member) and
``compact``. Every call yields to the event loop once before it acts, as a round trip to etcd
would, so concurrent callers interleave as they do against a real store.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from theseus.store.base import (
    Change,
    CreateRevisionIs,
    Delete,
    Entry,
    Guard,
    HistoryCompacted,
    ModRevisionIs,
    Op,
    Put,
    StoreUnavailable,
)
from theseus.store.commit import Txn, TxnTooLarge, fits

CALLS = (
    "get",
    "load",
    "current_revision",
    "watch",
    "commit",
    "compact_history",
    "grant_lease",
    "refresh_lease",
    "revoke_lease",
)


class Faults:
    """Which calls of a ``MemoryStore`` fail (``StoreUnavailable``) or hang, until healed."""

    def __init__(self) -> None:
        self._failing: dict[str, int | None] = {}  # call -> failures left (None: until healed)
        self._hanging: set[str] = set()
        self._healed = asyncio.Event()
        self.hung: Counter[str] = Counter()  # calls waiting in a hang now, by name
        self._hung_changed = asyncio.Event()

    def fail(self, *calls: str, times: int | None = None) -> None:
        """Make ``calls`` raise ``StoreUnavailable`` (the next ``times`` ones, or all)."""
        for call in _known(calls):
            self._failing[call] = times

    def hang(self, *calls: str) -> None:
        """Make ``calls`` wait until ``heal`` (or their caller's cancellation or timeout)."""
        self._hanging.update(_known(calls))

    def heal(self) -> None:
        self._failing.clear()
        self._hanging.clear()
        self._healed.set()
        self._healed = asyncio.Event()

    async def wait_hanging(self, call: str, count: int = 1) -> None:
        """Until ``count`` calls of ``call`` wait in a hang."""
        while self.hung[call] < count:
            await self._hung_changed.wait()

    async def enter(self, call: str) -> None:
        if call in self._hanging:
            self._hung_change(call, 1)
            try:
                while call in self._hanging:
                    await self._healed.wait()
            finally:
                self._hung_change(call, -1)
        if call in self._failing:
            left = self._failing[call]
            if left is not None:
                if left <= 1:
                    del self._failing[call]
                else:
                    self._failing[call] = left - 1
            raise StoreUnavailable(f"{call}: the store is unavailable (injected)")

    def _hung_change(self, call: str, step: int) -> None:
        self.hung[call] += step
        self._hung_changed.set()
        self._hung_changed = asyncio.Event()


def _known(calls: Sequence[str]) -> Sequence[str]:
    unknown = [c for c in calls if c not in CALLS]
    if unknown:
        raise ValueError(f"unknown store calls {unknown}; known: {', '.join(CALLS)}")
    return calls


@dataclass
class _Lease:
    ttl: int
    expiry: asyncio.TimerHandle | None = None
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    def __init__(self) -> None:
        self.faults = Faults()
        self.calls: Counter[str] = Counter()  # calls made, by name (hanging and failed ones too)
        self._called = asyncio.Event()
        self.revision = 0
        self.refused = 0  # transactions refused by a guard, for tests to assert on
        self.prompt_commits = 0  # commits a person waits on (``Store.commit``: prompt)
        self._data: dict[str, Entry] = {}
        self._history: list[Change] = []
        self._history_revisions: list[int] = []  # bisect index over _history
        self._compacted = 0  # history up to this revision is gone
        self._changed = asyncio.Event()
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(7001)
        self._watch_generation = 0  # bumped by break_watches
        self.watch_restarts = 0  # asked for by a cache whose watch stood still

    # -- the Store protocol -------------------------------------------------------------------

    async def connect(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        await asyncio.sleep(0)

    async def get(self, key: str) -> Entry | None:
        await self._call("get")
        return self._data.get(key)

    async def load(self, start: str, end: str) -> tuple[int, list[Entry]]:
        await self._call("load")
        return self.revision, [self._data[k] for k in sorted(self._data) if start <= k < end]

    async def current_revision(self) -> int:
        await self._call("current_revision")
        return self.revision

    async def watch(self, start: str, end: str, start_revision: int) -> AsyncIterator[Change]:
        await self._call("watch")
        generation = self._watch_generation
        following = start_revision
        while True:
            if following <= self._compacted:
                raise HistoryCompacted(f"revision {following} is compacted")
            changed = self._changed
            position = bisect.bisect_left(self._history_revisions, following)
            for change in self._history[position:]:
                following = change.revision + 1
                if start <= change.key < end:
                    yield change
                if generation != self._watch_generation:
                    break
            if generation != self._watch_generation:
                raise StoreUnavailable("watch broken (injected)")
            if following > self.revision:
                await changed.wait()

    async def commit(
        self, ops: Sequence[Op], guards: Sequence[Guard] = (), *, prompt: bool = False
    ) -> int | None:
        self.prompt_commits += prompt
        size = Txn(ops).size
        if not fits(len(ops), len(guards), size):
            raise TxnTooLarge(f"{len(ops)} ops, {len(guards)} guards, {size} bytes")
        await self._call("commit")
        if not all(self._holds(guard) for guard in guards):
            self.refused += 1
            return None
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise StoreUnavailable(f"lease {op.lease} not found")
        return self._apply(ops)

    async def grant_lease(self, ttl: int) -> int:
        await self._call("grant_lease")
        lease_id = next(self._lease_ids)
        lease = self._leases[lease_id] = _Lease(ttl)
        self._schedule_expiry(lease_id, lease)
        return lease_id

    async def refresh_lease(self, lease_id: int) -> bool:
        await self._call("refresh_lease")
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        self._schedule_expiry(lease_id, lease)
        return True

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call("revoke_lease")
        self._end_lease(lease_id)

    # -- what tests do to it ------------------------------------------------------------------

    async def wait_calls(self, call: str, count: int) -> None:
        """Until ``call`` has been made ``count`` times in all."""
        while self.calls[call] < count:
            await self._called.wait()

    def restart_watches(self) -> None:
        self.watch_restarts += 1
        self.break_watches()

    def break_watches(self) -> None:
        """Every open watch fails with ``StoreUnavailable`` (its caller resumes it)."""
        self._watch_generation += 1
        self._wake()

    def compact(self, revision: int | None = None) -> None:
        """Forget the history up to ``revision`` (default: all of it)."""
        self._compacted = self.revision if revision is None else revision
        position = bisect.bisect_right(self._history_revisions, self._compacted)
        del self._history[:position]
        del self._history_revisions[:position]

    async def compact_history(self, revision: int) -> None:
        await self._call("compact_history")
        if revision - 1 > self._compacted:  # etcd keeps ``revision`` itself
            self.compact(revision - 1)

    def expire_lease(self, lease_id: int) -> None:
        """End a lease now, as its TTL running out would."""
        self._end_lease(lease_id)

    def value(self, key: str) -> bytes | None:
        """A key's value, read without a round trip (for assertions)."""
        entry = self._data.get(key)
        return entry.value if entry else None

    # -- inside -------------------------------------------------------------------------------

    async def _call(self, name: str) -> None:
        self.calls[name] += 1
        self._called.set()
        self._called = asyncio.Event()
        await asyncio.sleep(0)  # a round trip: let other callers in
        await self.faults.enter(name)

    def _holds(self, guard: Guard) -> bool:
        entry = self._data.get(guard.key)
        if isinstance(guard, ModRevisionIs):
            return (entry.mod_revision if entry else 0) == guard.revision
        assert isinstance(guard, CreateRevisionIs)
        return (entry.create_revision if entry else 0) == guard.revision

    def _apply(self, ops: Sequence[Op]) -> int:
        revision = self.revision + 1
        changes: list[Change] = []
        for op in ops:
            old = self._data.get(op.key)
            if old is not None and old.lease in self._leases:
                self._leases[old.lease].keys.discard(op.key)
            if isinstance(op, Put):
                lease = op.lease or 0
                created = old.create_revision if old is not None else revision
                self._data[op.key] = Entry(
                    key=op.key,
                    value=op.value,
                    create_revision=created,
                    mod_revision=revision,
                    lease=lease,
                )
                if lease:
                    self._leases[lease].keys.add(op.key)
                changes.append(
                    Change(
                        key=op.key,
                        value=op.value,
                        revision=revision,
                        create_revision=created,
                        lease=lease,
                    )
                )
            elif old is not None:
                del self._data[op.key]
                # As etcd's delete events: the key and the revision, nothing more.
                changes.append(
                    Change(key=op.key, value=None, revision=revision, create_revision=0, lease=0)
                )
        if not changes:
            return self.revision
        self.revision = revision
        self._history.extend(changes)
        self._history_revisions.extend(revision for _ in changes)
        self._wake()
        return revision

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _schedule_expiry(self, lease_id: int, lease: _Lease) -> None:
        if lease.expiry is not None:
            lease.expiry.cancel()
        loop = asyncio.get_running_loop()
        lease.expiry = loop.call_later(lease.ttl, self._end_lease, lease_id)

    def _end_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        if lease.expiry is not None:
            lease.expiry.cancel()
        self._apply([Delete(key) for key in sorted(lease.keys)])
