"""Agents' work waits its turn behind everything else the event loop has to do.

One event loop answers everyone, first come first served: at 5,000 nodes a deploy wakes
thousands of assignment long-polls at once and brings hundreds of report batches a second,
and a user's request, a heartbeat or the cache's next watch event queued behind all of them.
So the CPU-heavy part of an agent's poll answer and report (building the assignment list,
reading and deciding a batch of reports) takes a turn: at most ``PER_TURN`` of them run per
round of the loop, each after giving the loop a round (``asyncio.sleep(0)``), and the rest
wait in a FIFO of their own, parked rather than queued as ready callbacks. What is ready
meanwhile (a user's request, a heartbeat, the cache, the leader) runs between two turns.
Kubernetes's API Priority and Fairness does the same with separate concurrency shares.

Agents lose nothing by it: the work is the same and the server does it at the same rate;
only the order changes. Heartbeats never wait here (a late one could get a node declared lost).
Created by ``theseus.server.app`` (``ServerContext.agent_turns``); taken by
``theseus.server.routes.agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

# Agents' CPU-heavy sections running per round of the event loop. With 4, rounds of a busy
# loop let too few through at 5,000 nodes: in two of four runs agents sent 13,700 report
# batches instead of 10,000 (requests that waited past their timeout, sent again) and the
# deploy took 61 s instead of 47; with 32, 10,010 and 42 s. A round then holds at most some
# 10 ms of them (about 0.3 ms each) ahead of everything else.
PER_TURN = 32


class AgentTurns:
    def __init__(self, per_turn: int = PER_TURN) -> None:
        self._slots = asyncio.Semaphore(per_turn)
        self.waiting = 0  # sections parked for their turn now (``theseus_agent_turns_waiting``)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a slot, give the loop a round, then run the section (which must not
        await: the slot is for CPU, not for waiting on etcd)."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            await asyncio.sleep(0)
            yield
        finally:
            self._slots.release()
