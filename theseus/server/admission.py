"""Admission of registrations: how many a server takes on at once, and when the rest should
come back.

Thousands of agents registering at once (a cluster's first start, every agent after a server
restart) would each cost an etcd lease, a write and a wait for the watch, all on the one event
loop that also answers the heartbeats keeping the registered nodes alive. Taken all at once
they starve those heartbeats, the nodes' leases run out, the nodes register again: a collapse
the server makes for itself. So a server registers a bounded number of nodes at a time; the
next ones wait in line (a coroutine waiting costs the loop nothing), a few seconds at most.
Those that would wait longer, and all of them while the loop lags, get ``429 Too Many
Requests`` with a ``Retry-After``: the time this server needs for those in line, at the rate
it has been finishing them (the agents add jitter of their own). Heartbeats, reports and
assignment polls are never refused here: they keep the registered nodes alive and their tasks
running.

``Admission`` is created by ``theseus.server.app`` and used by the registration route
(``theseus.server.routes.agent``); ``retry_after`` is its pure decision.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

MAX_REGISTERING = 32  # registrations in progress on one server at a time
MAX_WAITING = 2_000  # registrations waiting for a place; more are turned away at once
QUEUE_WAIT = 5.0  # seconds a registration may wait for a place (less than agents' timeout)
LAGGING = 0.5  # seconds of event loop lag above which no registration is taken on
RETRY_MIN = 1  # seconds
RETRY_MAX = 30  # past this a waiting agent is better told the truth by its next try
LAG_RETRY_MAX = 5  # seconds: after a refusal for a lagging loop
WINDOW = 5.0  # seconds of history behind the rate
ASSUMED_RATE = 20.0  # registrations per second, until this server has measured its own


class Overloaded(Exception):
    """The registration was not taken on: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


def retry_after(waiting: int, finished_per_second: float) -> int:
    """When a registration turned away should come back: once those waiting now are done at
    the rate this server finishes them (at least a second, at most ``RETRY_MAX``)."""
    rate = finished_per_second if finished_per_second > 0 else ASSUMED_RATE
    return max(RETRY_MIN, min(RETRY_MAX, math.ceil(waiting / rate)))


class _Rate:
    """Events per second over the last ``WINDOW`` seconds, counted over the span they took
    (a burst of 32 in a tenth of a second is not 6 a second)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._times: deque[float] = deque()

    def add(self) -> None:
        self._times.append(self._clock())

    def per_second(self) -> float:
        now = self._clock()
        while self._times and self._times[0] < now - WINDOW:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0  # not measured
        return len(self._times) / max(now - self._times[0], 1.0)


class Admission:
    def __init__(
        self,
        loop_lag: Callable[[], float],
        limit: int = MAX_REGISTERING,
        lagging: float = LAGGING,
        max_waiting: int = MAX_WAITING,
        queue_wait: float = QUEUE_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop_lag = loop_lag  # how late the event loop's last tick was (StallWatch)
        self._limit = limit
        self._lagging = lagging
        self._max_waiting = max_waiting
        self._queue_wait = queue_wait
        self.in_progress = 0
        self.waiting = 0
        self._places: asyncio.Semaphore | None = None  # made on the serving loop
        self._finished = _Rate(clock)

    @asynccontextmanager
    async def registration(self) -> AsyncIterator[None]:
        """Hold one of the registration places for the ``async with`` block, after a wait
        in line of ``queue_wait`` seconds at most; or raise ``Overloaded``."""
        lag = self._loop_lag()
        if lag > self._lagging:
            # A lag passes in seconds: come back soon, not after the whole line's time.
            after = max(RETRY_MIN, min(LAG_RETRY_MAX, math.ceil(2 * lag)))
            raise Overloaded(
                after, f"this server's event loop is {lag:.1f}s behind: register again in {after}s"
            )
        if self.waiting >= self._max_waiting:
            self._refuse(f"{self.waiting} registrations are waiting on this server")
        if self._places is None:
            self._places = asyncio.Semaphore(self._limit)
        self.waiting += 1
        try:
            async with asyncio.timeout(self._queue_wait):
                await self._places.acquire()
        except TimeoutError:
            self._refuse(f"{self.waiting} registrations are waiting on this server")
        finally:
            self.waiting -= 1
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1
            self._places.release()
            self._finished.add()

    def _refuse(self, reason: str) -> NoReturn:
        after = retry_after(self.waiting + self.in_progress, self._finished.per_second())
        raise Overloaded(after, f"{reason}: register again in {after}s")
