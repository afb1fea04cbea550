"""Thin asyncio adapter over the etcd v3 client (aetcd): the only module importing it.

It offers a small vocabulary (``Put``, ``Delete``, compare guards, ``commit``), a consistent
prefix load, a prefix watch resumable by revision, and leases. Everything above it speaks
``str`` keys and ``bytes`` values. Callers: ``theseus.store.cache`` and the server's writers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd

log = logging.getLogger(__name__)

# etcd's default --max-txn-ops; larger plans are split into several transactions.
MAX_TXN_OPS = 128
# gRPC's default 4 MiB receive limit is too small for etcd's watch responses when a watch
# catches up after falling behind (etcd batches the backlog into one message): the stream
# then fails on every resume and the cache stops following etcd. Allow much larger messages.
CHANNEL_OPTIONS = {
    "grpc.max_receive_message_length": 512 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
}


class StoreUnavailable(ConnectionError):
    """etcd did not answer; the caller retries with backoff."""


class HistoryCompacted(RuntimeError):
    """A watch asked for a revision etcd has compacted away: reload and watch again."""


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class ModRevisionIs:
    """Guard: the key was last modified at ``revision`` (0 = the key does not exist)."""

    key: str
    revision: int


@dataclass(frozen=True)
class CreateRevisionIs:
    """Guard: the key was created at ``revision`` (fences a leader to its own election)."""

    key: str
    revision: int


Op = Put | Delete
Guard = ModRevisionIs | CreateRevisionIs


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Change:
    """One watch event: ``value`` is None for a deletion."""

    key: str
    value: bytes | None
    revision: int
    create_revision: int
    lease: int


def _entry(kv: Any) -> Entry:
    return Entry(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision, kv.lease)


class EtcdStore:
    """One connection to an etcd cluster (``endpoints`` are tried in order on connect)."""

    def __init__(self, endpoints: Sequence[str], timeout: int = 5) -> None:
        self._endpoints = list(endpoints)
        self._timeout = timeout
        self._client: aetcd.Client | None = None
        self._keeper: _LeaseKeeper | None = None

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            raise StoreUnavailable("not connected")
        return self._client

    async def connect(self) -> None:
        errors: list[str] = []
        for endpoint in self._endpoints:
            host, _, port = endpoint.removeprefix("http://").partition(":")
            client = aetcd.Client(
                host=host, port=int(port or 2379), timeout=self._timeout, options=CHANNEL_OPTIONS
            )
            try:
                await client.connect()
                await client.status()
            except aetcd.ClientError as exc:
                errors.append(f"{endpoint}: {exc}")
                await client.close()
                continue
            self._client = client
            return
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, key: str) -> Entry | None:
        try:
            result = await self.client.get(key.encode())
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return None if result is None else _entry(result)

    async def load(self, start: str, end: str) -> tuple[int, list[Entry]]:
        """All keys in ``[start, end)`` and the revision they were read at."""
        try:
            result = await self.client.get_range(start.encode(), end.encode())
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc
        entries = [_entry(kv) for kv in result]
        return int(result.header.revision), entries

    async def current_revision(self) -> int:
        try:
            result = await self.client.get_prefix(b"\x00never\x00")
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return int(result.header.revision)

    async def watch(self, start: str, end: str, start_revision: int) -> AsyncIterator[Change]:
        """Every change to a key in ``[start, end)`` from ``start_revision`` on, in order.

        Raises ``HistoryCompacted`` or ``StoreUnavailable``; the caller resumes from the last
        revision it saw plus one (or reloads after compaction).
        """
        try:
            watch = await self.client.watch(
                start.encode(), range_end=end.encode(), start_revision=start_revision
            )
            async for event in watch:
                value = event.kv.value if event.kind == aetcd.EventKind.PUT else None
                yield Change(
                    event.kv.key.decode(),
                    value,
                    event.kv.mod_revision,
                    event.kv.create_revision,
                    event.kv.lease,
                )
        except aetcd.RevisionCompactedError as exc:
            raise HistoryCompacted(str(exc)) from exc
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> int | None:
        """Apply ``ops`` atomically if every guard holds; the new revision, or None if a guard
        failed. Callers keep ``len(ops) + len(guards)`` within ``MAX_TXN_OPS``."""
        tx = self.client.transactions
        compare = []
        for guard in guards:
            if isinstance(guard, ModRevisionIs):
                compare.append(tx.mod(guard.key.encode()) == guard.revision)
            else:
                compare.append(tx.create(guard.key.encode()) == guard.revision)
        success = [
            tx.put(op.key.encode(), op.value, lease=op.lease)
            if isinstance(op, Put)
            else tx.delete(op.key.encode())
            for op in ops
        ]
        # aetcd's transaction() drops the response header, whose revision callers need to
        # wait for their own write (read-your-writes); so build the request ourselves.
        request = aetcd.rpc.TxnRequest(
            compare=[c.build_message() for c in compare],
            success=self.client._ops_to_requests(success),
            failure=[],
        )
        try:
            response = await self.client.kvstub.Txn(
                request, timeout=self._timeout, metadata=self.client.metadata
            )
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except Exception as exc:  # grpc errors are not wrapped when we call the stub directly
            raise StoreUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        if not response.succeeded:
            return None
        return int(response.header.revision)

    async def grant_lease(self, ttl: int) -> int:
        try:
            lease = await self.client.lease(ttl)
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> bool:
        """Keep a lease alive; False if it has already expired.

        Every refresh of this connection shares one long-lived LeaseKeepAlive stream (aetcd
        opens a new stream per refresh, which at a thousand heartbeats a second is most of
        the server's work); etcd answers on it in order, one answer per request."""
        if self._keeper is None:
            self._keeper = _LeaseKeeper(self.client, self._timeout)
        return await self._keeper.refresh(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        try:
            await self.client.revoke_lease(lease_id)
        except aetcd.ClientError as exc:
            raise StoreUnavailable(str(exc)) from exc


class _LeaseKeeper:
    """One bidirectional LeaseKeepAlive stream shared by every refresh of a connection.

    Requests are written in order and etcd answers each in order, so the answers are matched
    to waiting refreshes first-in first-out per lease id. If the stream breaks, every waiting
    refresh fails with ``StoreUnavailable`` and the next refresh opens a new stream.
    """

    def __init__(self, client: aetcd.Client, timeout: int) -> None:
        self._client = client
        self._timeout = timeout
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, deque[asyncio.Future[bool]]] = defaultdict(deque)
        self._lock = asyncio.Lock()

    async def refresh(self, lease_id: int) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        async with self._lock:  # writes on one stream must not interleave
            try:
                if self._call is None:
                    self._call = self._client.leasestub.LeaseKeepAlive(
                        metadata=self._client.metadata
                    )
                    self._reader = asyncio.create_task(self._read(self._call))
                self._waiting[lease_id].append(future)
                await self._call.write(aetcd.rpc.LeaseKeepAliveRequest(ID=lease_id))
            except Exception as exc:  # grpc errors: the stream is gone
                self._fail(self._call, exc)
                raise StoreUnavailable(f"lease keep-alive stream: {exc}") from exc
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError as exc:
            raise StoreUnavailable("lease keep-alive timed out") from exc

    async def _read(self, call: Any) -> None:
        try:
            async for reply in call:
                waiting = self._waiting.get(int(reply.ID))
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(int(reply.TTL) > 0)
            self._fail(call, ConnectionError("stream ended"))
        except Exception as exc:
            self._fail(call, exc)

    def _fail(self, call: Any, exc: BaseException) -> None:
        if call is not self._call:
            return
        self._call = None
        for waiting in self._waiting.values():
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(StoreUnavailable(f"lease keep-alive stream: {exc}"))
        self._waiting.clear()
        if call is not None:
            call.cancel()

    def close(self) -> None:
        self._fail(self._call, ConnectionError("closed"))
        if self._reader is not None:
            self._reader.cancel()
