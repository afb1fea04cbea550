"""The leader lease kept alive from a thread of its own (``theseus.store.lease_thread``): a
server loop blocked for longer than the lease keeps the lead, a loop that stays silent past the
limit lets it go. The thread's connection is a stand-in store that counts refreshes (etcd
itself is the integration tests'), and the main loop is blocked for real (``time.sleep``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from theseus.store.cache import StateCache
from theseus.store.leadership import Leadership
from theseus.store.lease_thread import LeaseThread
from theseus.store.memory import MemoryStore

TTL = 1


class CountingStore:
    """What the thread's connection is asked: refreshes, on which thread."""

    def __init__(self) -> None:
        self.refreshes: list[tuple[float, str]] = []

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def refresh_lease(self, lease_id: int) -> bool:
        self.refreshes.append((time.monotonic(), threading.current_thread().name))
        return True


class MainLoop:
    """The main loop's last tick, as ``StallWatch.last_seen`` gives it."""

    def __init__(self) -> None:
        self.seen = time.monotonic()

    def __call__(self) -> float:
        return self.seen


@pytest.fixture
async def thread() -> AsyncIterator[tuple[LeaseThread, CountingStore, MainLoop]]:
    store = CountingStore()
    main = MainLoop()
    lease_thread = LeaseThread(lambda: store, main, max_loop_silence=2.0)  # type: ignore[arg-type,return-value]
    lease_thread.start()
    yield lease_thread, store, main
    lease_thread.stop()


async def test_a_blocked_server_loop_keeps_the_lead(
    thread: tuple[LeaseThread, CountingStore, MainLoop], store: MemoryStore, cache: StateCache
) -> None:
    lease_thread, counting, main = thread
    leadership = Leadership(store, cache, "me", lease_ttl=TTL, lease_thread=lease_thread)
    granted = asyncio.get_running_loop().time()
    keeping = asyncio.ensure_future(leadership._keep(lease=1, granted=granted))
    await asyncio.sleep(0.1)
    blocked_at = time.monotonic()
    time.sleep(1.5 * TTL)  # noqa: ASYNC251  (the point: this loop does not come round)
    main.seen = time.monotonic()
    during = [t for t, _ in counting.refreshes if t > blocked_at]
    assert len(during) >= 3, counting.refreshes  # every third of the TTL, all the same
    assert {name for _, name in counting.refreshes} == {"leader-lease"}
    assert not keeping.done()
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)


async def test_a_server_loop_silent_past_the_limit_lets_the_lead_go(
    thread: tuple[LeaseThread, CountingStore, MainLoop], store: MemoryStore, cache: StateCache
) -> None:
    lease_thread, counting, main = thread
    leadership = Leadership(store, cache, "me", lease_ttl=TTL, lease_thread=lease_thread)
    main.seen = time.monotonic() - 5.0  # wedged, as far as the thread can tell
    granted = asyncio.get_running_loop().time()
    async with asyncio.timeout(3):
        await leadership._keep(lease=1, granted=granted)  # returns: the term is over
    assert counting.refreshes == []
