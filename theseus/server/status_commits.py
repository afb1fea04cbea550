"""Agents' task statuses, committed together: the report requests that arrive while a commit
is in flight share the next one instead of each taking a transaction of its own.

At 5,000 nodes a deploy brings some 5,000 report requests within seconds, each with a few
statuses. One transaction each cost the server a gRPC call (about 150 µs of its CPU) and etcd
a transaction and a revision (about 200 µs of its CPU; ``bench/etcd_calls.py``), and every
revision is one more step for each server's cache. ``StatusCommits.write`` queues a request's
writes and waits; one flush at a time takes everything queued, packs it into as few
transactions as etcd's limits allow (``theseus.store.commit.pack_ops``), commits them
(``commit_txns``) and answers each waiting request with the revision. On a quiet cluster a
report goes out at once, alone; under load each flush carries what arrived during the one
before.

Flushes never overlap, so two statuses of one task are written in the order they were
decided. A failed commit fails every request of its flush (their agents send them again);
the next flush goes on. A request whose agent hangs up leaves its writes in the flush: the
others' answers do not depend on it.

Created by ``theseus.server.writes.Writer``, one per server; only agents' reports use it
(their writes carry no guards, so any of them may share a transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from theseus.store.base import Put, Store
from theseus.store.commit import PARALLEL_TXNS, commit_txns, pack_ops


class StatusCommits:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queued: list[tuple[Sequence[Put], asyncio.Future[int]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.flushes = 0  # commits made so far (each of one or more transactions)

    async def write(self, puts: Sequence[Put]) -> int:
        """Commit ``puts`` with whatever else is queued; the revision of the flush (its
        last transaction's: at or after the one that holds these writes)."""
        if not puts:
            return 0
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        self._queued.append((puts, answer))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_queued(), name="status commits")
        # Shielded: a request cancelled (its agent hung up) must not cancel the flush.
        return await asyncio.shield(answer)

    async def _flush_queued(self) -> None:
        flush: list[tuple[Sequence[Put], asyncio.Future[int]]] = []
        try:
            while self._queued:
                flush, self._queued = self._queued, []
                puts = [put for writes, _ in flush for put in writes]
                self.flushes += 1
                try:
                    committed = await commit_txns(
                        self._store, pack_ops(puts), parallel=PARALLEL_TXNS
                    )
                except Exception as exc:  # the store failed: so does every request of the flush
                    _answer(flush, error=exc)
                else:
                    _answer(flush, revision=committed.revision)
                flush = []
        finally:
            # Cancelled (the server stops): nobody is left waiting for an answer.
            for _, answer in (*flush, *self._queued):
                answer.cancel()
            self._queued = []
            self._flushing = None


def _answer(
    flush: list[tuple[Sequence[Put], asyncio.Future[int]]],
    revision: int = 0,
    error: Exception | None = None,
) -> None:
    for _, answer in flush:
        if answer.done():
            continue
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(revision)


def _retrieved(answer: asyncio.Future[int]) -> None:
    """An error is retrieved even when its request has gone (no "never retrieved" noise)."""
    if not answer.cancelled():
        answer.exception()
