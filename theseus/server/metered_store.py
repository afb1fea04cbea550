"""``MeteredStore``: a ``Store`` that times every request it passes on to etcd.

``theseus.server.app`` wraps each of the server's store connections in one, so the cache's
loads, the writer's and the leader's commits, leases and their refreshes all land in
``theseus_etcd_request_duration_seconds{operation}`` (``theseus.server.metrics``), and those
that fail with ``StoreUnavailable`` in ``theseus_etcd_request_failures_total``. A watch is a
stream, not a request: it is passed on untimed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from prometheus_client import Counter, Histogram

from theseus.store.base import Change, Entry, Guard, Op, Store, StoreUnavailable

T = TypeVar("T")

OPERATIONS = (
    "get",
    "load",
    "current_revision",
    "commit",
    "compact_history",
    "grant_lease",
    "refresh_lease",
    "revoke_lease",
)


class MeteredStore:
    """Delegates to ``store``; see the module's docstring."""

    def __init__(self, store: Store, duration: Histogram, failures: Counter) -> None:
        self.inner = store
        # The children, looked up once: ``labels()`` on every call would cost more than
        # the observation itself.
        self._timers = {op: duration.labels(op) for op in OPERATIONS}
        self._failures = {op: failures.labels(op) for op in OPERATIONS}

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        except StoreUnavailable:
            self._failures[operation].inc()
            raise
        finally:
            self._timers[operation].observe(time.perf_counter() - started)

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    def restart_watches(self) -> None:
        self.inner.restart_watches()

    async def get(self, key: str) -> Entry | None:
        return await self._timed("get", lambda: self.inner.get(key))

    async def load(self, start: str, end: str) -> tuple[int, list[Entry]]:
        return await self._timed("load", lambda: self.inner.load(start, end))

    async def current_revision(self) -> int:
        return await self._timed("current_revision", self.inner.current_revision)

    def watch(self, start: str, end: str, start_revision: int) -> AsyncIterator[Change]:
        return self.inner.watch(start, end, start_revision)

    async def commit(
        self, ops: Sequence[Op], guards: Sequence[Guard] = (), *, prompt: bool = False
    ) -> int | None:
        return await self._timed("commit", lambda: self.inner.commit(ops, guards, prompt=prompt))

    async def compact_history(self, revision: int) -> None:
        await self._timed("compact_history", lambda: self.inner.compact_history(revision))

    async def grant_lease(self, ttl: int) -> int:
        return await self._timed("grant_lease", lambda: self.inner.grant_lease(ttl))

    async def refresh_lease(self, lease_id: int) -> bool:
        return await self._timed("refresh_lease", lambda: self.inner.refresh_lease(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._timed("revoke_lease", lambda: self.inner.revoke_lease(lease_id))
