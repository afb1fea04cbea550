"""Leader election through the store: campaign, lease keep-alive, and the fence of a term.

Every server campaigns for ``/theseus/leader`` with a lease; the holder's ``lead`` callback
(the reconcile loop, ``theseus.server.leader``) runs for as long as its ``Term`` lasts. Every
write of a term is guarded by ``term.fence``, the create revision of its leader key, so a
deposed leader's writes are refused by the store even when it does not know yet that it was
deposed (frozen, cut off, its watch behind).

Takeover: the lease lives ``lease_ttl`` seconds (2 by default, etcd's minimum with its default
timings) and is refreshed every third of that, so a leader that dies is replaced about
``lease_ttl`` seconds later: the followers' caches see the leader key vanish when the store
expires the lease, and they campaign at once. A leader that cannot refresh its lease (etcd
moving to another member) keeps trying until the lease would have expired, then steps down.

Called by ``theseus.server.app`` (one per server) through ``theseus.server.leader.Leader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from theseus.store import keys
from theseus.store.base import CreateRevisionIs, Put, Store, StoreUnavailable
from theseus.store.cache import StateCache
from theseus.store.lease_thread import LeaseThread

log = logging.getLogger(__name__)

RETRY_AFTER_OUTAGE = 0.5  # seconds before campaigning again when the store did not answer


@dataclass(frozen=True)
class Term:
    """One term as leader: from the election (``revision``: the create revision of our
    leader key) until the lease has, or may have, expired (``over``)."""

    revision: int
    keepalive: asyncio.Task[None]

    @property
    def fence(self) -> CreateRevisionIs:
        """The guard every write of this term carries."""
        return CreateRevisionIs(keys.LEADER, self.revision)

    @property
    def over(self) -> bool:
        return self.keepalive.done()

    async def ended(self) -> None:
        """Until the term is over."""
        await asyncio.wait([self.keepalive])


Lead = Callable[[Term], Awaitable[None]]


class Leadership:
    def __init__(
        self,
        store: Store,
        cache: StateCache,
        server_id: str,
        lease_ttl: int = 2,
        keepalive_store: Store | None = None,
        lease_thread: LeaseThread | None = None,
    ) -> None:
        self._store = store
        # A connection of its own for the leader lease's keep-alive: etcd answers the
        # refreshes of one keep-alive stream one after the other, each after its pending
        # writes are applied, so behind 1,000 nodes' heartbeats during a big deploy the
        # leader's own refresh waited seconds, past its lease.
        self._keepalive_store = keepalive_store or store
        # Better still, a thread of its own (with its own connection), which a busy loop
        # cannot hold up: ``theseus.store.lease_thread``.
        self._lease_thread = lease_thread
        self._cache = cache
        self.server_id = server_id
        self.lease_ttl = lease_ttl
        self.term: Term | None = None  # while we lead

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    async def run(self, lead: Lead) -> None:
        """Campaign forever; while elected, run ``lead(term)``. ``lead`` returns when it
        steps down (its term over, or a write refused by the fence)."""
        await self._cache.wait_ready()
        while True:
            try:
                await self._campaign_once(lead)
            except StoreUnavailable as exc:
                log.warning("leadership: store unavailable (%s)", exc)
                self.term = None
                await asyncio.sleep(RETRY_AFTER_OUTAGE)

    async def _campaign_once(self, lead: Lead) -> None:
        if self._cache.state.leader is not None:
            # Someone leads: wait for its key to go away (the cache wakes us when the store
            # expires or revokes its lease), re-checking now and then in case the cache lags.
            await self._cache.wait_changed(self.lease_ttl / 2)
            return
        granted = asyncio.get_running_loop().time()  # the lease's TTL runs from about here
        lease = await self._store.grant_lease(self.lease_ttl)
        try:
            revision = await self._store.commit(
                [Put(keys.LEADER, self.server_id.encode(), lease=lease)],
                [CreateRevisionIs(keys.LEADER, 0)],
            )
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(lease)
            raise
        if revision is None:
            await self._store.revoke_lease(lease)
            await self._cache.wait_changed(self.lease_ttl / 2)
            return
        keepalive = asyncio.create_task(self._keep(lease, granted), name="leader-lease")
        self.term = Term(revision, keepalive)
        log.info("%s is now the leader (fence %d)", self.server_id, revision)
        try:
            await lead(self.term)
        finally:
            self.term = None
            keepalive.cancel()
            # Revoked in any case, so that even a keep-alive that failed to stop cannot hold
            # the leadership for a server that no longer leads (refreshing a revoked lease
            # fails, which ends the loop).
            await asyncio.wait([keepalive], timeout=1.0)
            if keepalive.done() and not keepalive.cancelled():
                keepalive.exception()  # retrieved: it ended as intended, or we step down anyway
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(lease)

    async def _keep(self, lease: int, granted: float) -> None:
        thread = self._lease_thread
        if thread is None:
            await self.keep_alive(lease, granted, self._store_on_loop)
        else:
            await thread.run(
                lambda store: self.keep_alive(lease, granted, store, thread.main_loop_silent)
            )

    async def _store_on_loop(self) -> Store:
        return self._keepalive_store

    async def keep_alive(
        self,
        lease: int,
        granted: float,
        store: Callable[[], Awaitable[Store]],
        loop_silent: Callable[[], float | None] = lambda: None,
    ) -> None:
        """Refresh the lease every third of its TTL through ``store``'s connection; returns
        (which ends the term) when the store says it expired, or when it may have: no refresh
        succeeded for a whole TTL; or, on a thread of its own, when the server's event loop
        has been silent for too long (``loop_silent``: its seconds, if so)."""
        loop = asyncio.get_running_loop()  # the thread's own, or the server's: the same clock
        expires = granted + self.lease_ttl
        interval = self.lease_ttl / 3
        while True:
            slept = loop.time()
            await asyncio.sleep(interval)
            sent = loop.time()
            if sent - slept > interval + 0.5:
                # The lease only survives a stall shorter than two thirds of its TTL: say so.
                log.warning("leader keep-alive woke %.1fs late", sent - slept - interval)
            remaining = expires - sent
            if remaining <= 0:
                log.warning("leader lease not refreshed for %ss; stepping down", self.lease_ttl)
                return
            silent = loop_silent()
            if silent is not None:
                log.warning("the server's event loop is stuck (%.0fs): letting the lead go", silent)
                return
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation that coincides
                # with the answer, and this loop must end when leadership does.
                async with asyncio.timeout(remaining):
                    alive = await (await store()).refresh_lease(lease)
            except (StoreUnavailable, TimeoutError) as exc:
                # A timeout has no message: name the exception, not just its text.
                log.warning("leader lease refresh failed (%s); retrying", repr(exc))
                interval = min(0.1, self.lease_ttl / 3)  # etcd moves to another member
                continue
            if not alive:
                log.warning("leader lease expired; stepping down")
                return
            expires = sent + self.lease_ttl  # counted from before etcd saw the refresh
            interval = self.lease_ttl / 3
