"""Notable events kept in etcd for an hour, so that ``theseus events --since 10m`` still
answers after every server restarted; and the reading of that history.

Only the leader writes (``EventKeeper.run`` does nothing on the others): every ``FLUSH``
seconds, the notable events (``theseus.server.events.derive.NOTABLE``) its feed gained since
the last batch (read from the feed's ring of notable events, which a deploy's routine events
do not push out) go into one key, ``/theseus/events/<index>-<n>`` (the last event's
position), attached to a lease of ``RETENTION`` seconds: one write per flush however many
events, none while nothing notable happens. A new leader resumes after the newest batch in
etcd, so batches do not repeat (and readers drop repeated ids anyway). At most
``MAX_EVENTS`` are kept: the oldest batches are deleted beyond.

Routine events (placements, starts, registry changes) are not kept, and audit events are not
written again: ``history`` derives them from the audit log's own records (``theseus.server.audit``),
with the same ids the stream gave them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable

from pydantic import TypeAdapter, ValidationError

from theseus.api.events import Event
from theseus.model.state import ClusterState
from theseus.server.events.derive import derive
from theseus.server.events.feed import AFTER_ALL, EventFeed, Gap
from theseus.store import keys
from theseus.store.base import Delete, Put, Store, StoreUnavailable

log = logging.getLogger(__name__)

RETENTION = 3600
FLUSH = 1.0
MAX_EVENTS = 10_000
PER_KEY = 500  # notable events in one key: about 150 kB, far under etcd's request limit
KEYS_PER_FLUSH = 10
EVENTS_END = keys.prefix_end(keys.EVENTS)
AUDIT_END = keys.prefix_end(keys.AUDIT)
_EVENTS = TypeAdapter(list[Event])


def batch_key(position: tuple[int, int]) -> str:
    return f"{keys.EVENTS}{position[0]:020d}-{position[1]:06d}"


def batch_position(key: str) -> tuple[int, int] | None:
    index, _, n = key.removeprefix(keys.EVENTS).partition("-")
    return (int(index), int(n)) if index.isdigit() and n.isdigit() else None


class EventKeeper:
    def __init__(self, store: Store, feed: EventFeed, is_leader: Callable[[], bool]) -> None:
        self._store = store
        self._feed = feed
        self._is_leader = is_leader
        self._cursor: tuple[int, int] | None = None  # None: not leading (read it at the start)
        self._batches: deque[tuple[str, int]] = deque()  # kept keys and their event counts
        self._lease: int | None = None
        self._lease_since = 0.0

    async def run(self, interval: float = FLUSH) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self._is_leader():
                self._cursor = None
                continue
            try:
                await self.flush()
            except StoreUnavailable as exc:
                log.warning("notable events not kept this time: %s", exc)
            except Exception:  # supplemental: never let it stop for good
                log.exception("keeping notable events failed")
                self._cursor = None

    async def flush(self) -> None:
        """Keep what the feed gained: a key of at most ``PER_KEY`` notable events at a
        time (a value well under etcd's request limit), a few keys per flush at most."""
        for _ in range(KEYS_PER_FLUSH):
            if not await self._flush_one():
                return

    async def _flush_one(self) -> bool:
        """One key's worth; True if there may be more."""
        if self._cursor is None:
            self._cursor = await self._resume()
        # Only notable events, at most a key's worth: the rest next time.
        got = self._feed.read_notable(self._cursor, limit=PER_KEY)
        if isinstance(got, Gap):
            log.warning("notable events after %s were dropped before they were kept", self._cursor)
            self._cursor = (got.index, AFTER_ALL)
            return True
        if not got:
            return False
        notable = [item.event for item in got]
        last = got[-1].position
        key = batch_key(last)
        ops: list[Put | Delete] = [Put(key, _EVENTS.dump_json(notable), await self._lease_id())]
        self._batches.append((key, len(notable)))
        kept = sum(count for _, count in self._batches)
        while len(self._batches) > 1 and kept > MAX_EVENTS:
            old, count = self._batches.popleft()
            kept -= count
            ops.append(Delete(old))
        await self._store.commit(ops)
        self._cursor = last
        return True

    async def _resume(self) -> tuple[int, int]:
        """After the newest batch in etcd, or the start of this server's window."""
        _, entries = await self._store.load(keys.EVENTS, EVENTS_END)
        self._batches.clear()
        for entry in entries:
            try:
                count = len(json.loads(entry.value))
            except ValueError:
                count = 0
            self._batches.append((entry.key, count))
        positions = [p for e in entries if (p := batch_position(e.key)) is not None]
        newest = max(positions, default=(0, AFTER_ALL))
        return max(newest, (self._feed.notable_start, AFTER_ALL))

    async def _lease_id(self) -> int:
        now = time.monotonic()
        if self._lease is None or now - self._lease_since > RETENTION / 2:
            self._lease = await self._store.grant_lease(RETENTION)
            self._lease_since = now
        return self._lease


async def history(store: Store, since: float, before: int) -> list[Event]:
    """The kept events (notable ones and audits) at or after unix time ``since`` whose index
    is at most ``before`` (the start of the window, which has the rest), oldest first."""
    _, batches = await store.load(keys.EVENTS, EVENTS_END)
    events: dict[str, Event] = {}
    for entry in batches:
        try:
            for event in _EVENTS.validate_json(entry.value):
                if event.time >= since and event.index <= before:
                    events[event.id] = event
        except ValidationError:
            log.error("ignoring an unreadable batch of events at %s", entry.key)
    start = f"{keys.AUDIT}{int(max(since, 0) * 1e9):020d}"
    _, audits = await store.load(start, AUDIT_END)
    audits.sort(key=lambda e: (e.mod_revision, e.key))
    empty = ClusterState(revision=0)
    n, revision = 0, -1
    for entry in audits:
        n = n + 1 if entry.mod_revision == revision else 0
        revision = entry.mod_revision
        if revision > before:
            continue
        for d in derive(entry.key, None, None, entry.value, empty):
            if d.time is not None and d.time >= since:
                events[f"{revision}-{n}"] = Event(
                    id=f"{revision}-{n}",
                    index=revision,
                    time=d.time,
                    topic=d.topic,
                    type=d.type,
                    key=d.key,
                    service=d.service,
                    message=d.message,
                    payload=d.payload,
                )
    return sorted(events.values(), key=lambda e: _position(e.id))


def _position(event_id: str) -> tuple[int, int]:
    index, _, n = event_id.partition("-")
    return (int(index), int(n)) if index.isdigit() and n.isdigit() else (0, 0)
