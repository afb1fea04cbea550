"""Noticing that this server was stalled, so that a stall is never blamed on the nodes.

While a server's event loop is held up (a huge request body parsed, the process stopped or
starved of CPU), it answers no heartbeat, and the nodes' liveness leases run out in etcd
although the nodes did nothing wrong. A leader that then declared them lost would replace
every task of the cluster. So the leader holds node losses back for a grace period after any
stall of its own, and, after its election, those of the nodes already gone then (Nomad's
heartbeat grace after a leader election: a new leader cannot know how long the nodes had no
server to renew their leases, e.g. when the only server restarted): long enough for every
live node to heartbeat again (its agent registers again at once on the 404 of a lost lease).

``StallWatch`` ticks on the event loop; a tick that comes much later than asked means the loop
was stalled. ``check`` does the same from any coroutine, so the leader's first pass after a
stall sees it even before the tick does. ``spared_nodes`` is pure. Created by
``theseus.server.app``, read by ``theseus.server.leader``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between ticks
STALL = 1.0  # a tick this late (beyond TICK) means the loop was stalled


class StallWatch:
    def __init__(
        self, tick: float = TICK, stall: float = STALL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tick = tick
        self._stall = stall
        self._clock = clock
        self._last = clock()
        self.last_stall_end: float | None = None  # monotonic time the last stall ended
        self._last_late = 0.0  # how late the last tick came

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            self.check()

    def check(self) -> float | None:
        """Note a stall if the loop has not come round for too long; when the last one ended."""
        now = self._clock()
        late = now - self._last - self._tick
        if late > self._stall:
            self.last_stall_end = now
            log.warning(
                "this server's event loop was stalled for %.1fs: node losses held back", late
            )
        self._last = now
        self._last_late = max(0.0, late)
        return self.last_stall_end

    def last_seen(self) -> float:
        """When the loop last came round (its clock's time of the last tick): read from
        other threads (``theseus.store.lease_thread``)."""
        return self._last

    def lag(self) -> float:
        """How far behind the event loop is: the lateness of its last tick, or of the tick
        due now if that is later (asked from the loop, while it is busy)."""
        overdue = self._clock() - self._last - self._tick
        return max(self._last_late, overdue, 0.0)


def spared_nodes(
    absent: frozenset[str],
    absent_at_election: frozenset[str],
    now: float,
    leading_since: float,
    last_stall_end: float | None,
    grace: float,
) -> frozenset[str]:
    """The nodes not alive (``absent``) whose loss waits (pure): within ``grace`` of a stall of
    this server, every one of them (none could reach it); within ``grace`` of its election,
    those already absent then, whose leases ran out while no leader watched (a restart of the
    only server, say). A node that goes after the election is lost at once: its heartbeats
    had servers to reach, the leader among them."""
    if last_stall_end is not None and now < last_stall_end + grace:
        return absent
    if now < leading_since + grace:
        return absent & absent_at_election
    return frozenset()
