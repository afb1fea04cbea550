"""Waiting for a condition with a deadline, in tests: ``wait_until`` for threads and the
processes of a cluster, ``wait_until_async`` inside an event loop.

``wait_until`` is the launcher's own (``theseus/cluster/waiting.py``), so the tests, the
benchmarks and ``theseus up`` wait the same way, and both raise its ``WaitTimeout`` naming what
was awaited and the check's last value. Tests wait on conditions like these, never for a fixed
time; a loop that does more than wait (a sampler, an invariant held over a window) says so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from theseus.api.client import ApiError
from theseus.cluster.waiting import WaitTimeout, wait_until

__all__ = ["WaitTimeout", "unless_unavailable", "wait_until", "wait_until_async"]

T = TypeVar("T")


def unless_unavailable(check: Callable[[], T]) -> Callable[[], T | None]:
    """``check`` with a server's 503 taken as "not yet": a server that cannot vouch for its
    view (just woken from a stall, or during an etcd election) refuses reads until it can, and
    a client asks again, as any would. Any other error still fails the wait."""

    def answered() -> T | None:
        try:
            return check()
        except ApiError as exc:
            if exc.status != 503:
                raise
            return None

    return answered


async def wait_until_async(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    timeout: float = 3.0,
    what: str = "the condition",
    interval: float = 0.0,
) -> T:
    """``wait_until`` for a coroutine: the check (plain, or a coroutine function) runs until
    it returns something truthy, with ``await asyncio.sleep(interval)`` in between. The
    default interval of 0 just lets the other tasks run between two looks: in-memory
    conditions change only then, and a short-lived state is not missed."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(what, timeout, last)
        await asyncio.sleep(min(interval, remaining))
