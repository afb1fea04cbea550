"""The leader's deliveries of events to HTTP callbacks (``POST /v1/event-subscriptions``).

Every server runs ``Deliveries.run``; only the leader delivers. For each subscription one
worker reads this server's window (``theseus.server.events.feed``) from the subscription's
cursor and POSTs the events it selects, in order, in batches of at most ``BATCH``
(``theseus.api.events.Delivery``; each event's ``id`` is what the receiver deduplicates on).
A batch that fails (an error, a non-2xx answer, no answer within ``TIMEOUT``) is sent again,
the same batch, after a backoff doubling from ``BACKOFF_MIN`` to ``BACKOFF_MAX``; the cursor
moves only past acknowledged batches, and is written to etcd once a second (all cursors that
moved, one transaction), so a new leader resends at most a second's worth: at least once,
never silently skipped. A cursor that fell out of the window (a receiver down for longer than
the window holds, or a new leader whose window starts later) gets a ``stream``/``reset``
event first.

Each worker waits on its own receiver only, and reads the shared window without a queue:
a slow or dead receiver slows nobody else, and costs no memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from theseus.api.events import Subscription
from theseus.server.events import metrics
from theseus.server.events.feed import AFTER_ALL, EventFeed, Gap, Selection, reset_event
from theseus.server.events.subscriptions import Stored, Subscriptions
from theseus.store.base import StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 100
TIMEOUT = 5.0
BACKOFF_MIN = 0.2
BACKOFF_MAX = 10.0
SYNC = 1.0  # seconds between two reads of the subscriptions and writes of the cursors


class Deliveries:
    def __init__(
        self,
        subscriptions: Subscriptions,
        feed: EventFeed,
        is_leader: Callable[[], bool],
        client: Callable[[], httpx.AsyncClient] = lambda: httpx.AsyncClient(timeout=TIMEOUT),
    ) -> None:
        self._subscriptions = subscriptions
        self._feed = feed
        self._is_leader = is_leader
        self._client_factory = client
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.cursors: dict[str, tuple[int, int]] = {}
        self._moved: set[str] = set()
        self._leading = False

    async def run(self, interval: float = SYNC) -> None:
        try:
            async with self._client_factory() as http:
                while True:
                    try:
                        await self._sync(http)
                    except StoreUnavailable as exc:
                        log.warning("event deliveries: etcd unavailable (%s)", exc)
                    except Exception:  # supplemental: never let it stop for good
                        log.exception("event deliveries failed; trying again")
                    await asyncio.sleep(interval)
        finally:
            await self._stop_all()

    async def _sync(self, http: httpx.AsyncClient) -> None:
        if not self._is_leader():
            if self._leading:
                await self._stop_all()
            return
        if not self._leading:  # a new term: start from the cursors in etcd
            self.cursors = await self._subscriptions.cursors()
            self._moved.clear()
            self._leading = True
        stored = {s.subscription.id: s for s in await self._subscriptions.load()}
        for sub_id in list(self._workers):
            if sub_id not in stored:
                self._workers.pop(sub_id).cancel()
                self.cursors.pop(sub_id, None)
                self._moved.discard(sub_id)
        for sub_id, entry in stored.items():
            worker = self._workers.get(sub_id)
            if worker is not None and worker.done() and not worker.cancelled():
                log.error("delivery to %s stopped: %r; starting again", sub_id, worker.exception())
                worker = None
            if worker is None:
                start = self.cursors.get(sub_id, (entry.created_revision, AFTER_ALL))
                self._workers[sub_id] = asyncio.create_task(
                    self._deliver(http, entry, start), name=f"deliver-{sub_id}"
                )
        moved = {s: self.cursors[s] for s in self._moved if s in self.cursors and s in stored}
        self._moved.clear()
        try:
            await self._subscriptions.save_cursors(moved)
        except StoreUnavailable:
            self._moved |= set(moved)  # again next time
            raise

    async def _stop_all(self) -> None:
        self._leading = False
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _deliver(
        self, http: httpx.AsyncClient, entry: Stored, position: tuple[int, int]
    ) -> None:
        subscription = entry.subscription
        selection = Selection(subscription.topics, subscription.services)
        backoff = BACKOFF_MIN
        while True:
            got = self._feed.read(position, limit=BATCH)
            if isinstance(got, Gap):
                reset = reset_event(got.index, position[0], time.time())
                lines = [reset.model_dump_json().encode()]
                after = (got.index, AFTER_ALL)
            elif got:
                lines = [i.line for i in got if selection.wants(i)]
                after = got[-1].position
            else:
                await self._feed.wait(5.0)
                continue
            if lines and not await self._post(http, subscription, lines):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_MIN
            position = after
            self.cursors[subscription.id] = position
            self._moved.add(subscription.id)

    async def _post(
        self, http: httpx.AsyncClient, subscription: Subscription, lines: list[bytes]
    ) -> bool:
        body = b'{"subscription":"%s","events":[%s]}' % (
            subscription.id.encode(),
            b",".join(lines),
        )
        try:
            response = await http.post(
                subscription.url,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            log.info("callback %s: %s", subscription.id, exc.__class__.__name__)
            metrics.CALLBACK_POSTS.labels("failed").inc()
            return False
        if not response.is_success:
            log.info("callback %s: answered %d", subscription.id, response.status_code)
            metrics.CALLBACK_POSTS.labels("failed").inc()
            return False
        metrics.CALLBACK_POSTS.labels("acknowledged").inc()
        metrics.CALLBACK_EVENTS.inc(len(lines))
        return True
