"""The agent's outbox of task reports: a FIFO queue and the one sender that drains it.

The task runner calls ``ReportQueue.put`` for every state change; the agent runs
``ReportQueue.run`` with a function that posts one ``ReportBatch``. Everything queued when the
sender wakes goes out as one batch, at once (no batching delay: an exit must reach the server
within milliseconds). A failed post is retried, with capped exponential backoff, with the same
reports at the head of the queue, so no report is lost and each task's reports stay in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from theseus.agent.backoff import BACKOFF_FIRST, BACKOFF_MAX
from theseus.api.schemas import ReportBatch, TaskReport

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # one POST stays small even after a long outage

Send = Callable[[ReportBatch], Awaitable[None]]


class ReportQueue:
    def __init__(self) -> None:
        self._pending: deque[TaskReport] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, report: TaskReport) -> None:
        self._pending.append(report)
        self._idle.clear()
        self._wake.set()

    async def run(self, send: Send) -> None:
        """Send forever; returns only when cancelled (unsent reports stay queued)."""
        delay = BACKOFF_FIRST
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending[i] for i in range(min(len(self._pending), MAX_BATCH))]
            try:
                await send(ReportBatch(reports=batch))
            except Exception as exc:  # the server is away or failing: keep them, retry
                log.warning(
                    "could not send %d reports (%s); retrying in %.1fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            for _ in batch:
                self._pending.popleft()

    async def drained(self, timeout: float) -> bool:
        """Wait until everything queued was sent (or ``timeout``); for a tidy shutdown."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
