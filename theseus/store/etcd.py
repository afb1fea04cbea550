"""``EtcdStore``: the ``Store`` (``theseus.store.base``) of a real etcd cluster, a thin asyncio
adapter over the etcd v3 client (aetcd), and the only module that imports it.

It offers guarded transactions (``commit``), a consistent range load, a range watch resumable
by revision, and leases. Callers: ``theseus.store.cache``, ``theseus.store.leadership`` and
the server's writers, through the ``Store`` protocol.

Several members: the store talks to one member at a time. When that member fails (its calls
raise "unavailable" or time out), the store drops the connection and the next call connects to
the next member that answers; the calls in flight raise ``StoreUnavailable`` and their callers
retry as they do for any outage. Watches resume from their last revision on the new member
(the cache does that), and the shared lease keep-alive stream re-opens there. With a single
endpoint the connection is kept and gRPC reconnects to it by itself.

TLS: given ``tls`` (``theseus.store.etcd_tls.EtcdTls``), every member is reached over TLS with
that client certificate (``https://`` endpoints require it); failover, watches and leases are
the same over either channel.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aetcd

from theseus.store.base import (
    Change,
    Entry,
    Guard,
    ModRevisionIs,
    Op,
    Put,
    StoreUnavailable,
)
from theseus.store.commit import Txn, TxnTooLarge, fits
from theseus.store.etcd_gateway import GatewayError, GatewayPool
from theseus.store.etcd_tls import Endpoint, EtcdTls, make_client, parse_endpoint
from theseus.store.etcd_watch import WatchFailed, open_watch

log = logging.getLogger(__name__)

# gRPC's default 4 MiB receive limit is too small for etcd's watch responses when a watch
# catches up after falling behind (etcd batches the backlog into one message): the stream
# then fails on every resume and the cache stops following etcd. Allow much larger messages.
CHANNEL_OPTIONS = {
    "grpc.max_receive_message_length": 512 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    # gRPC backs off up to 2 minutes between reconnects to a member that went away; a
    # restarted member should be used again within a second.
    "grpc.max_reconnect_backoff_ms": 1000,
}
# Sent with every call and stream: a member without a raft leader refuses it at once (and
# cancels such streams when it loses its leader) rather than leaving it hanging.
REQUIRE_LEADER = (("hasleader", "true"),)
# Lease keep-alive streams per connection, used in turn (``refresh_lease``).
KEEPALIVE_STREAMS = 32
# How long a member may take to elect a new raft leader before we try another member.
ELECTION_WAIT = 3.0
# gRPC codes after which another member may do better: UNAVAILABLE (member down, or without
# a leader) and DEADLINE_EXCEEDED (member too slow or cut off).
_MEMBER_FAILURES = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError)


def _entry(kv: Any) -> Entry:
    return Entry(
        key=kv.key.decode(),
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        lease=kv.lease,
    )


class EtcdStore:
    """A connection to an etcd cluster, to one member at a time.

    ``connect`` tries ``endpoints`` in order; after a member failure the next call tries them
    again, starting with the one after the failed member. ``tls``: reach every member over
    TLS with this client certificate (``EtcdTlsError`` at once for an ``https://`` endpoint
    without it, or a plain ``http://`` one with it).
    """

    def __init__(
        self, endpoints: Sequence[str], timeout: int = 5, tls: EtcdTls | None = None
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self._endpoints = list(endpoints)
        self._tls = tls
        self._addresses = [parse_endpoint(endpoint, tls) for endpoint in endpoints]
        self._timeout = timeout
        self._client: aetcd.Client | None = None
        self._member = 0  # the endpoint of _client, or the first to try on the next connect
        self._member_id = 0  # etcd's id of that member
        self._failed_member_id = 0  # etcd's id of the last member we left because it failed
        self._connecting = asyncio.Lock()
        self._keepers: list[_LeaseKeeper] = []  # of _client, KEEPALIVE_STREAMS of them
        self._next_keeper = 0
        self._retired: dict[aetcd.Client, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = None  # the watch's TLS, made at its first use
        self._watch_transports: set[asyncio.WriteTransport] = set()  # open watches' connections
        self._gateway: GatewayPool | None = None  # prompt commits' connections, of _client
        self._gateway_client: aetcd.Client | None = None

    @property
    def endpoint(self) -> str:
        """The member this store talks to (or will try first)."""
        return self._endpoints[self._member]

    async def connect(self) -> None:
        await self._session()

    async def _session(self) -> aetcd.Client:
        """The current connection, connecting to the first member that answers if none."""
        client = self._client
        if client is not None:
            return client
        async with self._connecting:  # one connect at a time; the others wait and share it
            if self._client is None:
                self._client = await self._connect_any()
            return self._client

    async def _connect_any(self) -> aetcd.Client:
        errors: list[str] = []
        count = len(self._endpoints)
        for step in range(count):
            index = (self._member + step) % count
            endpoint = self._endpoints[index]
            client = make_client(self._addresses[index], self._tls, self._timeout, CHANNEL_OPTIONS)
            try:
                await client.connect()
                status = await self._leader_known(client, several=count > 1)
            except Exception as exc:  # aetcd or gRPC errors: try the next member
                errors.append(f"{endpoint}: {exc.__class__.__name__}: {exc}")
                await client.close()
                continue
            # etcd's "require leader": a member without a raft leader (an election under way,
            # or cut off) refuses requests at once instead of holding them until they time
            # out, and cancels streams, so that a watch never goes silent on it. aetcd sends
            # ``client.metadata`` with every call, but opened its watcher without it.
            client.metadata = REQUIRE_LEADER
            client._watcher._metadata = REQUIRE_LEADER
            if count > 1:
                log.info("connected to etcd member %s", endpoint)
            self._member = index
            self._member_id = int(status.header.member_id)
            # The failed member may come back and lead again: never hold it against it.
            self._failed_member_id = 0
            return client
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def _leader_known(self, client: aetcd.Client, several: bool) -> Any:
        """The member's status, once it has a raft leader other than the member that just
        failed. When the lost member was the leader, the others take a second or two to notice
        and elect another; a request sent meanwhile may be dropped and hang until it times
        out, so the callers wait here instead, for a bounded time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ELECTION_WAIT
        while True:
            status = await client.maintenancestub.Status(
                aetcd.rpc.StatusRequest(), timeout=self._timeout
            )
            # One member alone is its own leader; of several, one cut off has none.
            if not several or status.leader not in (0, self._failed_member_id):
                return status
            if loop.time() >= deadline:
                if status.leader != 0:
                    # The member we left still leads after a whole election timeout: it was
                    # only slow, or it restarted and was elected again. Use it.
                    return status
                raise aetcd.ConnectionFailedError("member has no raft leader")
            await asyncio.sleep(0.1)

    def _unavailable(
        self, client: aetcd.Client, exc: BaseException, member_failed: bool | None = None
    ) -> StoreUnavailable:
        """The error a failed call raises; if the failure says that the member is gone (or
        ``member_failed``), the store also moves on to the next member."""
        if member_failed is None:
            member_failed = _is_member_failure(exc)
        if member_failed and client is self._client and len(self._endpoints) > 1:
            log.warning(
                "etcd member %s failed (%s: %s); moving to the next member",
                self.endpoint,
                exc.__class__.__name__,
                exc,
            )
            self._client = None
            self._member = (self._member + 1) % len(self._endpoints)
            self._failed_member_id = self._member_id
            self._close_keepers()
            self._close_gateway()
            self._cut_watches()
            self._retire(client)
        if isinstance(exc, StoreUnavailable):
            return StoreUnavailable(str(exc))
        if isinstance(exc, aetcd.ClientError):
            return StoreUnavailable(str(exc))
        return StoreUnavailable(f"{exc.__class__.__name__}: {exc}")

    def restart_watches(self) -> None:
        """See ``Store.restart_watches``. A member's watch can stand still while its other
        calls answer (a stream wedged somewhere behind its HTTP gateway; the connection
        itself lives, so TCP keep-alives do not end it): the store leaves that member, and
        with a single one starts the watches again on it."""
        client = self._client
        if client is not None and len(self._endpoints) > 1:
            self._unavailable(client, StoreUnavailable("its watches went silent"), True)
        else:
            self._cut_watches()

    def _cut_watches(self) -> None:
        """End the watches on the member we leave: they resume on the next one (a member cut
        off from us may never say a word on them again)."""
        for transport in list(self._watch_transports):
            transport.abort()
        self._watch_transports.clear()

    def _retire(self, client: aetcd.Client) -> None:
        """Close a connection that is no longer used, a little later: calls still in flight
        on a member that is only slow may yet complete (a dead member's fail at once)."""
        loop = asyncio.get_running_loop()
        self._retired[client] = loop.call_later(self._timeout, self._close_retired, client)

    def _close_retired(self, client: aetcd.Client) -> None:
        self._retired.pop(client, None)
        task = asyncio.create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        self._close_keepers()
        self._close_gateway()
        for client, handle in list(self._retired.items()):
            handle.cancel()
            self._close_retired(client)
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, key: str) -> Entry | None:
        client = await self._session()
        try:
            result = await client.get(key.encode())
        except aetcd.ClientError as exc:
            raise self._unavailable(client, exc) from exc
        return None if result is None else _entry(result)

    async def load(self, start: str, end: str) -> tuple[int, list[Entry]]:
        """All keys in ``[start, end)`` and the revision they were read at."""
        client = await self._session()
        try:
            result = await client.get_range(start.encode(), end.encode())
        except aetcd.ClientError as exc:
            raise self._unavailable(client, exc) from exc
        entries = [_entry(kv) for kv in result]
        return int(result.header.revision), entries

    async def current_revision(self) -> int:
        client = await self._session()
        try:
            result = await client.get_prefix(b"\x00never\x00")
        except aetcd.ClientError as exc:
            raise self._unavailable(client, exc) from exc
        return int(result.header.revision)

    async def watch(self, start: str, end: str, start_revision: int) -> AsyncIterator[Change]:
        """Every change to a key in ``[start, end)`` from ``start_revision`` on, in order.

        Raises ``HistoryCompacted`` or ``StoreUnavailable`` (also when the store moves to
        another member: its watches there are cut), or simply ends when etcd ends it; the
        caller resumes from the last revision it saw plus one (or reloads after compaction).
        Read through the current member's HTTP gateway, not gRPC: ``theseus.store.etcd_watch``
        says why.
        """
        client = await self._session()
        endpoint = self._addresses[self._member]
        watching = open_watch(
            endpoint.host,
            endpoint.port,
            self._ssl_of(endpoint),
            start,
            end,
            start_revision,
            self._timeout,
            self._watch_transports,
        )
        try:
            async for changes in watching:
                for change in changes:
                    yield change
        except WatchFailed as exc:
            raise self._unavailable(client, exc, member_failed=exc.member_failed) from exc
        finally:
            await watching.aclose()

    async def commit(
        self, ops: Sequence[Op], guards: Sequence[Guard] = (), *, prompt: bool = False
    ) -> int | None:
        """Apply ``ops`` atomically if every guard holds; the new revision, or None if a guard
        failed. Callers keep ``ops`` and ``guards`` each within ``MAX_TXN_OPS``
        (``theseus.store.commit`` packs larger writes). ``prompt``: through the member's HTTP
        gateway, which takes half the rounds of a busy event loop (``etcd_gateway`` says why
        only then)."""
        size = Txn(ops).size
        if not fits(len(ops), len(guards), size):
            # etcd would refuse it as an invalid request; say so before sending, as
            # ``MemoryStore`` does, rather than let it pass for an outage to retry.
            raise TxnTooLarge(f"{len(ops)} ops, {len(guards)} guards, {size} bytes")
        client = await self._session()
        if prompt:
            try:
                return await self._gateway_of(client).commit(ops, guards)
            except GatewayError as exc:
                raise self._unavailable(client, exc, member_failed=exc.member_failed) from exc
        tx = client.transactions
        compare = []
        for guard in guards:
            if isinstance(guard, ModRevisionIs):
                compare.append(tx.mod(guard.key.encode()) == guard.revision)
            else:
                compare.append(tx.create(guard.key.encode()) == guard.revision)
        # aetcd's transaction() drops the response header, whose revision callers need to
        # wait for their own write (read-your-writes); so build the request ourselves, in
        # place (a plan's transaction of 1,024 puts: 0.4 ms, against 2.7 ms through aetcd's
        # operation objects, on the event loop: a 50,000-task deploy's plan is 50 of them).
        request = aetcd.rpc.TxnRequest(compare=[c.build_message() for c in compare])
        add = request.success.add
        for op in ops:
            if isinstance(op, Put):
                put = add().request_put
                put.key, put.value = op.key.encode(), op.value
                if op.lease:
                    put.lease = op.lease
            else:
                add().request_delete_range.key = op.key.encode()
        try:
            response = await client.kvstub.Txn(
                request, timeout=self._timeout, metadata=client.metadata
            )
        except Exception as exc:  # grpc errors are not wrapped when we call the stub directly
            raise self._unavailable(client, exc) from exc
        if not response.succeeded:
            return None
        return int(response.header.revision)

    def _ssl_of(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        """The TLS of the watch's and the gateway's plain asyncio connections to ``endpoint``
        (made at their first use)."""
        if not endpoint.secure:
            return None
        if self._ssl is None:
            assert self._tls is not None  # parse_endpoint saw to it
            self._ssl = self._tls.ssl_context()
        return self._ssl

    def _gateway_of(self, client: aetcd.Client) -> GatewayPool:
        """The current member's gateway connections (``client``: the current connection)."""
        if self._gateway is None or self._gateway_client is not client:
            self._close_gateway()
            endpoint = self._addresses[self._member]
            self._gateway = GatewayPool(
                endpoint.host, endpoint.port, self._ssl_of(endpoint), self._timeout
            )
            self._gateway_client = client
        return self._gateway

    def _close_gateway(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    async def compact_history(self, revision: int) -> None:
        client = await self._session()
        try:
            await client.compact(revision)
        except aetcd.ClientError as exc:
            if "compacted" not in str(exc):  # else compacted that far already: done
                raise self._unavailable(client, exc) from exc

    async def grant_lease(self, ttl: int) -> int:
        client = await self._session()
        try:
            lease = await client.lease(ttl)
        except aetcd.ClientError as exc:
            raise self._unavailable(client, exc) from exc
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> bool:
        """Keep a lease alive; False if it has already expired.

        Refreshes share a few long-lived LeaseKeepAlive streams of this connection, taken in
        turn (aetcd opens a new stream per refresh, which at a thousand heartbeats a second
        is most of the server's work; on one stream, writes go one at a time, each taking
        two or three rounds of a busy event loop, and 5,000 nodes' heartbeats queued for
        seconds). etcd answers on each in order, one answer per request. Leases belong to
        the cluster, so after a move to another member the streams re-open there."""
        client = await self._session()
        if not self._keepers or self._keepers[0].client is not client:
            self._close_keepers()
            self._keepers = [_LeaseKeeper(client, self._timeout) for _ in range(KEEPALIVE_STREAMS)]
        self._next_keeper = (self._next_keeper + 1) % len(self._keepers)
        try:
            return await self._keepers[self._next_keeper].refresh(lease_id)
        except StoreUnavailable as exc:
            # The stream broke or etcd did not answer in time: both mean the member failed.
            raise self._unavailable(client, exc, member_failed=True) from exc

    def _close_keepers(self) -> None:
        for keeper in self._keepers:
            keeper.close()
        self._keepers = []

    async def revoke_lease(self, lease_id: int) -> None:
        client = await self._session()
        try:
            await client.revoke_lease(lease_id)
        except aetcd.ClientError as exc:
            raise self._unavailable(client, exc) from exc


def _is_member_failure(exc: BaseException) -> bool:
    if isinstance(exc, (*_MEMBER_FAILURES, aetcd.WatchTimeoutError)):
        return True
    if isinstance(exc, aetcd.rpc.AioRpcError):
        codes = (aetcd.rpc.StatusCode.UNAVAILABLE, aetcd.rpc.StatusCode.DEADLINE_EXCEEDED)
        return exc.code() in codes
    return False


class _LeaseKeeper:
    """One bidirectional LeaseKeepAlive stream shared by every refresh of a connection.

    Requests are written in order and etcd answers each in order, so the answers are matched
    to waiting refreshes first-in first-out per lease id. If the stream breaks, every waiting
    refresh fails with ``StoreUnavailable`` and the next refresh opens a new stream.
    """

    def __init__(self, client: aetcd.Client, timeout: int) -> None:
        self.client = client
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
                    self._call = self.client.leasestub.LeaseKeepAlive(metadata=REQUIRE_LEADER)
                    self._reader = asyncio.create_task(self._read(self._call))
                self._waiting[lease_id].append(future)
                await self._call.write(aetcd.rpc.LeaseKeepAliveRequest(ID=lease_id))
            except Exception as exc:  # grpc errors: the stream is gone
                self._fail(self._call, exc)
                raise StoreUnavailable(f"lease keep-alive stream: {exc}") from exc
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that coincides with the answer, and a keep-alive loop must stop when told to.
            async with asyncio.timeout(self._timeout):
                return await future
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
