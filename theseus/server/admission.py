"""Admission of registrations: how many a server takes on at once, and when the rest should
come back.

Thousands of agents registering at once (a cluster's first start, every agent after a server
restart) would each cost an etcd lease, a write and a wait for the watch, all on the one event
loop that also answers the heartbeats keeping the registered nodes alive. Taken all at once
they starve those heartbeats, the nodes' leases run out, the nodes register again: a collapse
the server makes for itself. So a server registers a bounded number of nodes at a time, and
none while its loop is lagging; the others get ``429 Too Many Requests`` with a
``Retry-After`` that spreads them over the time the server needs for them (the agents add
jitter of their own). Heartbeats, reports and assignment polls are never refused here: they
are what keeps the registered nodes alive and their tasks running.

``Admission`` is created by ``theseus.server.app`` and used by the registration route
(``theseus.server.routes.agent``); ``retry_after`` is its pure decision.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MAX_REGISTERING = 32  # registrations in progress on one server at a time
LAGGING = 0.5  # seconds of event loop lag above which no registration is taken on
RETRY_MIN = 1  # seconds
RETRY_MAX = 30  # past this a waiting agent is better told the truth by its next try
WINDOW = 5.0  # seconds of history behind the rates


class Overloaded(Exception):
    """The registration was not taken on: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


def retry_after(refused_per_second: float, finished_per_second: float) -> int:
    """When a refused registration should come back: the refusals of the last moments are
    the demand still waiting, and the registrations finished are what this server carries, so
    the demand is spread over the time it takes (at least a second, at most ``RETRY_MAX``)."""
    carried = max(finished_per_second, 1.0)
    return max(RETRY_MIN, min(RETRY_MAX, math.ceil(refused_per_second * WINDOW / carried)))


class _Rate:
    """Events per second over the last ``WINDOW`` seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._times: deque[float] = deque()

    def add(self) -> None:
        self._times.append(self._clock())

    def per_second(self) -> float:
        horizon = self._clock() - WINDOW
        while self._times and self._times[0] < horizon:
            self._times.popleft()
        return len(self._times) / WINDOW


class Admission:
    def __init__(
        self,
        loop_lag: Callable[[], float],
        limit: int = MAX_REGISTERING,
        lagging: float = LAGGING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop_lag = loop_lag  # how late the event loop's last tick was (StallWatch)
        self._limit = limit
        self._lagging = lagging
        self.in_progress = 0
        self._finished = _Rate(clock)
        self._refused = _Rate(clock)

    @contextmanager
    def registration(self) -> Iterator[None]:
        """Hold one of the registration places for the ``with`` block, or raise
        ``Overloaded`` at once."""
        if self.in_progress >= self._limit:
            self._refuse(f"{self.in_progress} registrations are in progress on this server")
        lag = self._loop_lag()
        if lag > self._lagging:
            self._refuse(f"this server's event loop is {lag:.1f}s behind")
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1
            self._finished.add()

    def _refuse(self, reason: str) -> None:
        self._refused.add()
        after = retry_after(self._refused.per_second(), self._finished.per_second())
        raise Overloaded(after, f"{reason}: register again in {after}s")
