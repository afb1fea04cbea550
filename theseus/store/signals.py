"""Wake-ups. ``KeyedSignal`` wakes the waiters of one key (a node, a service) and no one else.
``theseus.store.cache.StateCache`` holds one for nodes (the agents' assignment long-polls) and
one for services (the registry's watches): with one shared "something changed" event, 1,000
agents would all wake on each of a big deploy's changes.

``Pulse`` wakes whoever waits for the next change, and costs nothing when no one waits. The
cache fires one or two at each change it applies and the event feed one: an
``asyncio.Event`` (and its deque of waiters) replaced at each fire, as they did, was up to
435,000 of them made for nothing during a 50,000-task deploy (145,000 changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class KeyedSignal:
    """Wake the waiters of one key (a node, a service) without waking anyone else's."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, keys: Iterable[str], timeout: float) -> None:
        events = [self._event(key) for key in keys]
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def fire(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def fire_all(self) -> None:
        for key in list(self._events):
            self.fire(key)

    def _event(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event


class Pulse:
    """The next change: ``next()`` is the event that the next ``fire()`` sets. It is made
    when someone first asks for it, so a fire that no one waits for makes nothing."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def next(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()
