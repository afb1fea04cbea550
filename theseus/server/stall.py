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
stall sees it even before the tick does. Each tick's lateness is also observed (the server's
``theseus_event_loop_lag_seconds``), and a late one is logged with where the loop was, as its
``theseus.server.loop_sampler.LoopSampler`` saw it. ``spared_nodes`` is pure. Created by
``theseus.server.app``, read by ``theseus.server.leader``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from theseus.server.loop_sampler import LoopSampler, summary

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between ticks
STALL = 1.0  # a tick this late (beyond TICK) means the loop was stalled
SLOW = 0.25  # a tick this late is logged (at INFO), with where the loop was
LAG_TICKS = 5  # ticks behind ``lag``: half a second of a loop that keeps falling behind


class StallWatch:
    def __init__(
        self,
        tick: float = TICK,
        stall: float = STALL,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[float], None] | None = None,
        slow: float = SLOW,
    ) -> None:
        self._tick = tick
        self._stall = stall
        self._slow = slow
        self._clock = clock
        self._observe = observe  # each tick's lateness (a histogram's ``observe``)
        self.sampler: LoopSampler | None = None  # where the loop was while late, if sampled
        self._last = clock()
        self.last_stall_end: float | None = None  # monotonic time the last stall ended
        # How late the last few ticks came: the loop lags when all of them were late.
        self._recent_late: deque[float] = deque([0.0], maxlen=LAG_TICKS)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            self.ticked()

    def ticked(self) -> None:
        """A tick came: note how late (only the ticks' lateness is the loop's lag: a check
        from a pass comes at any time), and any stall."""
        late = self._clock() - self._last - self._tick
        self.check()
        self._recent_late.append(max(0.0, late))
        if self._observe is not None:
            self._observe(max(0.0, late))

    def check(self) -> float | None:
        """Note a stall if the loop has not come round for too long; when the last one ended."""
        now = self._clock()
        late = now - self._last - self._tick
        where = self._where()
        if late > self._stall:
            self.last_stall_end = now
            log.warning(
                "this server's event loop was stalled for %.1fs: node losses held back%s",
                late,
                where,
            )
        elif late > self._slow:
            log.info("this server's event loop came round %.2fs late%s", late, where)
        self._last = now
        return self.last_stall_end

    def stall_end(self) -> float | None:
        """When the last stall ended, one not noted yet (the loop is back, its tick has not
        come round) ending now; unlike ``check``, notes nothing (the ticks' lateness stays the
        loop's lag). For the leader's sweep of lost nodes, which may run first after a
        stall."""
        now = self._clock()
        if now - self._last - self._tick > self._stall:
            return now
        return self.last_stall_end

    def _where(self) -> str:
        """Where the sampler saw the loop since the last look (nothing unless it was late)."""
        if self.sampler is None:
            return ""
        seen = summary(self.sampler.take())
        return f"; it was {seen}" if seen else ""

    def last_seen(self) -> float:
        """When the loop last came round (its clock's time of the last tick): read from
        other threads (``theseus.store.lease_thread``)."""
        return self._last

    def lag(self) -> float:
        """How far behind the event loop keeps falling: the least late of its last few ticks.
        A loop that is busy all along has every tick late; one stall (a SIGSTOP, a huge body
        parsed) makes one late tick, and is no reason to turn away the agents registering
        again just after it (their nodes would be lost past the stall's grace)."""
        return min(self._recent_late)


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
