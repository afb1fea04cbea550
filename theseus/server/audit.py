"""The audit log: one record per write through the API (who, what, the answer's status),
kept in etcd for ``RETENTION`` seconds and readable at ``GET /v1/audit``.

``AuthMiddleware`` (``theseus.server.auth``) notes each write as its answer goes out; the
records are written in the background, in batches, so a write's answer never waits for its
audit record, and a store that is down loses at most the batch in hand (logged). Records hang
on one lease per server, replaced every half retention, so old ones expire on their own
without anyone deleting them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from theseus.security.records import AuditRecord
from theseus.server.auth import Caller
from theseus.store import keys
from theseus.store.base import Put, Store, StoreUnavailable

log = logging.getLogger(__name__)

RETENTION = 3600  # seconds a record is kept (at least; at most twice that)
MAX_QUEUE = 10_000  # records waiting to be written; beyond, the oldest are dropped (logged)
BATCH = 100
AUDIT_END = keys.AUDIT[:-1] + chr(ord(keys.AUDIT[-1]) + 1)


class AuditLog:
    def __init__(self, store: Store, server_tag: str) -> None:
        self._store = store
        self._tag = server_tag
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue()
        self._sequence = itertools.count()
        self._lease: int | None = None
        self._lease_since = 0.0

    def note(self, caller: Caller, method: str, path: str, status: int) -> None:
        if self._queue.qsize() >= MAX_QUEUE:
            self._queue.get_nowait()
            log.warning("audit log: the store is not keeping up; dropped the oldest record")
        self._queue.put_nowait(
            AuditRecord(
                at=time.time(),
                who=f"{caller.kind}:{caller.name}",
                token_id=caller.token_id,
                method=method,
                path=path,
                status=status,
            )
        )

    async def _lease_id(self) -> int:
        now = time.monotonic()
        if self._lease is None or now - self._lease_since > RETENTION / 2:
            self._lease = await self._store.grant_lease(RETENTION)
            self._lease_since = now
        return self._lease

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                lease = await self._lease_id()
                ops = [
                    Put(
                        f"{keys.AUDIT}{int(r.at * 1e9):020d}-{self._tag}-{next(self._sequence)}",
                        r.model_dump_json().encode(),
                        lease,
                    )
                    for r in batch
                ]
                await self._store.commit(ops)
            except StoreUnavailable as exc:
                log.error("audit log: %d records not written: %s", len(batch), exc)

    async def read(self, since: float = 0.0, limit: int = 1000) -> list[AuditRecord]:
        """The newest ``limit`` records at or after ``since`` (unix time), oldest first."""
        start = f"{keys.AUDIT}{int(since * 1e9):020d}"
        _, entries = await self._store.load(start, AUDIT_END)
        records = [AuditRecord.model_validate_json(e.value) for e in entries]
        records.sort(key=lambda r: r.at)
        return records[-limit:]
