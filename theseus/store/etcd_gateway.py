"""Transactions through etcd's HTTP gateway (``POST /v3/kv/txn``: JSON over kept-alive HTTP/1.1
connections), for the commits a person waits on. ``EtcdStore.commit(..., prompt=True)``
(``theseus.store.etcd``) is its only caller: a person's deploy, scale, node control or
access records (``theseus.server.writes``, ``theseus.server.access_writes``).

Why: while thousands of agents keep the server's event loop busy, a round of it lasts tens of
milliseconds, and a commit through gRPC's asyncio API spans four of them (the call queued,
gRPC's poller thread waking the loop, the answer read, the caller resumed). A request on a
plain asyncio connection spans two: written at once, its answer read in the round after it
arrives (``bench/etcd_calls.py``; BENCHMARKS.md, issue 17's twenty-first session). The
gateway costs etcd twice the CPU of the same small commit through gRPC, and five times for a
plan's 256 keys (the twenty-third session), so the thousands of commits of plans, reports and
heartbeats stay on gRPC.

``GatewayPool`` keeps a few idle connections to one member; ``GatewayError`` says what went
wrong and whether the member seems gone (``member_failed``), as ``etcd_watch.WatchFailed``
does for the watch.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import h11
import orjson

from theseus.store.base import Guard, ModRevisionIs, Op, Put
from theseus.store.etcd_watch import MEMBER_FAILURE_CODES, REQUIRE_LEADER_HEADER, b64

IDLE_KEPT = 4  # idle connections kept per member
READ_SIZE = 1 << 16


class GatewayError(Exception):
    """A transaction through the gateway failed; ``member_failed``: the member seems gone
    (the store then moves to the next one, as for a failed gRPC call)."""

    def __init__(self, message: str, member_failed: bool) -> None:
        super().__init__(message)
        self.member_failed = member_failed


def txn_body(ops: Sequence[Op], guards: Sequence[Guard]) -> bytes:
    """The gateway's JSON for a transaction: every op if every guard holds, else nothing."""
    compare = [
        {
            "key": b64(guard.key.encode()),
            "target": "MOD" if isinstance(guard, ModRevisionIs) else "CREATE",
            "result": "EQUAL",
            ("mod_revision" if isinstance(guard, ModRevisionIs) else "create_revision"): str(
                guard.revision
            ),
        }
        for guard in guards
    ]
    success: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(op, Put):
            put: dict[str, str] = {"key": b64(op.key.encode()), "value": b64(op.value)}
            if op.lease:
                put["lease"] = str(op.lease)
            success.append({"request_put": put})
        else:
            success.append({"request_delete_range": {"key": b64(op.key.encode())}})
    return orjson.dumps({"compare": compare, "success": success})


def txn_outcome(status: int, body: bytes) -> int | None:
    """The revision a transaction's answer gives, or None if one of its guards failed."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(f"etcd's gateway answered {status} with no JSON", True) from exc
    if status != 200 or not isinstance(answer, dict) or "header" not in answer:
        code = answer.get("code", 0) if isinstance(answer, dict) else 0
        message = answer.get("message", "") if isinstance(answer, dict) else ""
        raise GatewayError(
            f"etcd's gateway answered {status}: {message or 'no message'} (code {code})",
            code in MEMBER_FAILURE_CODES,
        )
    # proto3's JSON leaves out a false ``succeeded``: a refused transaction has none.
    if not answer.get("succeeded", False):
        return None
    return int(answer["header"]["revision"])


class _Connection:
    """One kept-alive HTTP/1.1 connection to a member's gateway, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)

    async def post(self, host: str, path: str, body: bytes) -> tuple[int, bytes]:
        headers = [
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            REQUIRE_LEADER_HEADER,
        ]
        http = self.http
        self.writer.write(http.send(h11.Request(method="POST", target=path, headers=headers)))
        self.writer.write(http.send(h11.Data(data=body)))
        self.writer.write(http.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                received = await self.reader.read(READ_SIZE)
                http.receive_data(received)  # b"": the member closed it (h11 then raises)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                http.start_next_cycle()  # raises if the member will not keep it open
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the member closed the connection")

    def abort(self) -> None:
        self.writer.transport.abort()


class GatewayPool:
    """Connections to one member's gateway; ``commit`` takes an idle one or opens one."""

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> None:
        self._host, self._port, self._ssl, self._timeout = host, port, ssl_context, timeout
        self._idle: list[_Connection] = []
        self._closed = False

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard]) -> int | None:
        """``Store.commit`` through the gateway; ``GatewayError`` if it failed (it may have
        been applied all the same if the member answered nothing: callers retry, as they do
        for a gRPC call that timed out)."""
        body = txn_body(ops, guards)
        while True:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else None
            try:
                async with asyncio.timeout(self._timeout):
                    if connection is None:
                        connection = await self._open()
                    status, answer = await connection.post(
                        f"{self._host}:{self._port}", "/v3/kv/txn", body
                    )
            except (OSError, TimeoutError, h11.ProtocolError) as exc:  # SSLError is an OSError
                if connection is not None:
                    connection.abort()
                if reused and not isinstance(exc, TimeoutError):
                    continue  # an idle connection the member had closed: it read nothing
                where = f"{self._host}:{self._port}"
                raise GatewayError(f"etcd's gateway at {where}: {exc!r}", True) from exc
            except BaseException:  # cancelled mid-request: the connection's state is unknown
                if connection is not None:
                    connection.abort()
                raise
            if self._closed or len(self._idle) >= IDLE_KEPT:
                connection.abort()
            else:
                self._idle.append(connection)
            return txn_outcome(status, answer)

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        return _Connection(reader, writer)

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        self._closed = True
        for connection in self._idle:
            connection.abort()
        self._idle.clear()
