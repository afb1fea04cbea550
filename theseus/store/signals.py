"""Keyed wake-ups: ``KeyedSignal`` wakes the waiters of one key (a node, a service) and no one
else. ``theseus.store.cache.StateCache`` holds one for nodes (the agents' assignment
long-polls) and one for services (the registry's watches): with one shared "something
changed" event, 1,000 agents would all wake on each of a big deploy's changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class KeyedSignal:
    """Wake the waiters of one key (a node, a service) without waking anyone else's."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, keys: Iterable[str], timeout: float) -> None:
        events = [self._events.setdefault(key, asyncio.Event()) for key in keys]
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
