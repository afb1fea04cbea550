"""A long-poll given up when the agent moves to another server.

The agent waits for its assignments in a long-poll of up to ``poll_wait`` + 10 s (40 s by
default). If the server it waits on is cut off the network, nothing ends that request before
its timeout: no answer, no reset, only silence. Meanwhile the heartbeats, whose timeout is
short, have found that server unreachable and moved to another one (``theseus.api.failover``),
and the new server may well have new assignments for this node: a cut host's tasks, replaced
here. So the agent's heartbeat loop sets an event whenever its server changes, and the poll
in flight on the old server is cancelled and asked again of the new one.

Called by ``theseus.agent.agent`` (the assignment loop); measured by ``bench/partitions.py``
(a cut server held new assignments for 39 s before this).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def unless_moved(
    call: Awaitable[T], moved: asyncio.Event, current: Callable[[], str], asked: str
) -> T | None:
    """``call``'s result, or None once ``moved`` is set while ``current()`` is no longer
    ``asked`` (the server the call went to): the call is then cancelled."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            moved.clear()
            if current() != asked:
                return None
            waiter = asyncio.ensure_future(moved.wait())
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task in done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
