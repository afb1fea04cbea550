"""This server's window of recent events: a ring fed by the cache's etcd watch.

``EventFeed`` is the cache's ``ChangeObserver`` (``theseus.store.cache``): for every change it
applies, the feed derives the events (``theseus.server.events.derive``), numbers them
``<revision>-<n>`` and appends them, with their JSON line made once, to a ring of
``capacity`` events, and the notable ones to a second ring of their own, which the keeper that
persists them reads. Readers (the stream route, the callback deliveries, the keeper) each keep
their own position and read from a ring; nothing is
queued per reader, so a slow one costs memory nowhere and slows no one. One that falls out of
the window, or asks for a position from before it, is told so (``Gap``) rather than skipped
ahead silently.

The window starts where this server's cache started (or last reloaded: the changes in between
went unseen, so the window starts again there).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from theseus.api.events import STREAM, Event
from theseus.model.state import ClusterState
from theseus.server.events import metrics
from theseus.server.events.derive import NOTABLE, WATCHED, Derived, derive
from theseus.store.signals import Pulse

log = logging.getLogger(__name__)

CAPACITY = 10_000
NOTABLE_CAPACITY = 10_000


class Item:
    """One event of the window. Its ``Event`` and JSON line are made when first read, then
    kept for every other reader: most events of a big deploy are read by nobody (no stream
    client, no callback for them), and deriving must stay cheap on the cache's event loop."""

    __slots__ = ("position", "derived", "time", "_event", "_line")

    def __init__(self, position: tuple[int, int], derived: Derived, time: float) -> None:
        self.position = position  # (index, n): the event's place in the history
        self.derived = derived
        self.time = time
        self._event: Event | None = None
        self._line: bytes | None = None

    @property
    def topic(self) -> str:
        return self.derived.topic

    @property
    def service(self) -> str | None:
        return self.derived.service

    @property
    def type(self) -> str:
        return self.derived.type

    @property
    def id(self) -> str:
        return f"{self.position[0]}-{self.position[1]}"

    def _fields(self) -> dict[str, object]:
        d = self.derived
        return {
            "id": self.id,
            "index": self.position[0],
            "time": self.time,
            "topic": d.topic,
            "type": d.type,
            "key": d.key,
            "service": d.service,
            "message": d.message,
            "payload": d.payload,
        }

    @property
    def event(self) -> Event:
        if self._event is None:
            self._event = Event.model_validate(self._fields())
        return self._event

    @property
    def line(self) -> bytes:
        """``Event``'s JSON, made straight from the fields (a quarter of the cost)."""
        if self._line is None:
            self._line = json.dumps(self._fields(), separators=(",", ":"), default=str).encode()
        return self._line


@dataclass(frozen=True)
class Gap:
    """What a reader asked for is no longer (or not yet) in this server's window: events
    after ``index`` are complete from here on."""

    index: int


class _Ring:
    """Events in position order, at most ``capacity`` of them, never half a revision:
    ``start`` is the index after which it holds every event it was given."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[Item] = deque()
        self.positions: deque[tuple[int, int]] = deque()  # bisected by readers
        self.start = 0

    def restart(self, revision: int) -> None:
        self.items.clear()
        self.positions.clear()
        self.start = revision

    def extend(self, items: list[Item]) -> None:
        for item in items:
            self.items.append(item)
            self.positions.append(item.position)
        while len(self.items) > self.capacity:
            dropped = self.items.popleft()
            self.positions.popleft()
            # Everything of the dropped event's revision goes too, so that a window never
            # holds half a revision: a reader resuming "after index N" misses nothing of N+1.
            self.start = max(self.start, dropped.position[0])
        while self.items and self.items[0].position[0] <= self.start:
            self.items.popleft()
            self.positions.popleft()

    def read(self, after: tuple[int, int], last: int, limit: int) -> list[Item] | Gap:
        if after < (self.start, AFTER_ALL):
            return Gap(self.start)
        if after[0] > last and last:
            # From the future (another server further on, or this one reloaded behind it):
            # nothing to serve yet but nothing missed either.
            return []
        first = bisect.bisect_right(self.positions, after)
        end = min(first + limit, len(self.items))
        return [self.items[i] for i in range(first, end)]


class EventFeed:
    prefixes: tuple[str, ...] = WATCHED

    def __init__(
        self,
        state: Callable[[], ClusterState],
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.time,
        notable_capacity: int = NOTABLE_CAPACITY,
    ) -> None:
        self._state = state
        self._clock = clock
        self._window = _Ring(capacity)
        # The notable events again, for the keeper: a deploy's routine events (50,000
        # placements and as many starts at 5,000 nodes) pass through the window faster than
        # the keeper's flushes, and would push the few notable ones out unkept.
        self._notable = _Ring(notable_capacity)
        self.last = 0  # the last revision seen
        self._n = 0  # events so far of revision ``last``
        self._grew = Pulse()
        self.closed = False

    @property
    def start(self) -> int:
        """Every event with an index above this is (or was) in the window."""
        return self._window.start

    @property
    def notable_start(self) -> int:
        """Every notable event with an index above this is (or was) in the notable ring."""
        return self._notable.start

    # --- fed by the cache -----------------------------------------------------------------

    def reloaded(self, revision: int) -> None:
        if self.last and revision > self.last:
            log.warning(
                "event window restarts at %d: changes after %d went unseen", revision, self.last
            )
        self._window.restart(revision)
        self._notable.restart(revision)
        self.last = revision
        self._n = 0
        self._wake()

    def changed(
        self, key: str, revision: int, before: object, after: object, value: bytes | None
    ) -> None:
        if revision != self.last:
            self.last, self._n = revision, 0
        derived = derive(key, before, after, value, self._state())
        if not derived:
            return
        now = self._clock()
        added: list[Item] = []
        for d in derived:
            added.append(Item((revision, self._n), d, d.time if d.time is not None else now))
            self._n += 1
        metrics.EVENTS_DERIVED.inc(len(added))
        self._append(added)

    def _append(self, items: list[Item]) -> None:
        self._window.extend(items)
        notable = [item for item in items if item.type in NOTABLE]
        if notable:
            self._notable.extend(notable)
        self._wake()

    def released(self) -> None:
        """The server is stopping: streams end at once (their clients resume elsewhere)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._grew.fire()

    # --- read by the stream, the deliveries and the keeper -----------------------------------

    def read(self, after: tuple[int, int], limit: int = 1000) -> list[Item] | Gap:
        """The events after position ``after`` (index, n), at most ``limit``: ``(index,
        AFTER_ALL)`` is "after every event of that index"."""
        return self._window.read(after, self.last, limit)

    def read_notable(self, after: tuple[int, int], limit: int = 1000) -> list[Item] | Gap:
        """The same of the notable events only (``derive.NOTABLE``), kept longer."""
        return self._notable.read(after, self.last, limit)

    def items(self) -> list[Item]:
        return list(self._window.items)

    async def wait(self, timeout: float) -> None:
        """Until the window grows (or is restarted), or ``timeout``."""
        grew = self._grew.next()
        try:
            async with asyncio.timeout(timeout):
                await grew.wait()
        except TimeoutError:
            pass


AFTER_ALL = 1 << 62  # an n after every event of a revision: (index, AFTER_ALL) = "after index"


class Selectable(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def service(self) -> str | None: ...


class Selection:
    """Which events a reader wants (an ``Event`` or an ``Item``, which need not be made)."""

    def __init__(self, topics: list[str], services: list[str]) -> None:
        self.topics = frozenset(topics)
        self.services = frozenset(services)

    def wants(self, event: Selectable) -> bool:
        if event.topic == STREAM:
            return True
        if self.topics and event.topic not in self.topics:
            return False
        return not self.services or event.service in self.services


def reset_event(index: int, asked: int, now: float) -> Event:
    return Event(
        id=f"reset-{index}",
        index=index,
        time=now,
        topic=STREAM,
        type="reset",
        message=(
            f"events after index {asked} are no longer in this server's window, which starts "
            f"after index {index}: read the state again; the stream goes on from there"
        ),
        payload={"asked": asked, "start": index},
    )
