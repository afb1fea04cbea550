"""The cache's etcd watch, read through etcd's HTTP gateway (``POST /v3/watch``, the same
watch as gRPC's, as lines of JSON) on a plain asyncio connection. ``EtcdStore.watch``
(``theseus.store.etcd``) is its only caller; the server's cache follows etcd through it.

Why not gRPC: read with gRPC's asyncio API, every watch message costs the event loop two or
three of its rounds (the read is queued, gRPC's poller thread wakes the loop, the reading task
resumes, then the consumer). While thousands of agents keep the loop busy a round takes tens
of milliseconds, so the watch was read at a few dozen messages a second; etcd then held up to
31,909 events for it at 5,000 nodes, and every write that waits to read itself back (a
deploy, a scale) waited seconds. Read by a thread with gRPC's blocking API it kept up too,
but at the price of two more threads (gRPC's and the reader) taking the GIL from the loop at
every message. Here one read takes whatever the socket holds, however many messages that is,
in one round and on the loop's own thread (BENCHMARKS.md, issue 17's seventh session).

``read_changes`` is the reading (HTTP by h11, then JSON lines); ``open_watch`` connects and
asks. Errors: ``HistoryCompacted``, ``WatchFailed`` (``member_failed`` when another member
may do better).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from binascii import a2b_base64
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import h11
import orjson

from theseus.store.base import Change, HistoryCompacted

READ_SIZE = 1 << 20  # bytes taken from the connection at most per read
KEEPALIVE_IDLE, KEEPALIVE_GAP, KEEPALIVE_PROBES = 5, 2, 3  # seconds, seconds, probes
# gRPC codes (as the gateway reports them) after which another member may do better:
# UNAVAILABLE (member down, or without a leader) and DEADLINE_EXCEEDED.
MEMBER_FAILURE_CODES = (14, 4)
# etcd's "require leader" (the gateway passes Grpc-Metadata-* headers on as gRPC metadata): a
# member without a raft leader refuses a request at once, and cancels a stream.
REQUIRE_LEADER_HEADER = ("Grpc-Metadata-hasleader", "true")


class WatchFailed(Exception):
    """The watch could not be opened or broke; ``member_failed``: the member seems gone."""

    def __init__(self, message: str, member_failed: bool) -> None:
        super().__init__(message)
        self.member_failed = member_failed


def b64(data: bytes) -> str:
    """``data`` as the gateway's JSON carries bytes (keys, values)."""
    return base64.b64encode(data).decode()


async def open_watch(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    start: str,
    end: str,
    start_revision: int,
    connect_timeout: float,
    open_transports: set[asyncio.WriteTransport],
) -> AsyncGenerator[list[Change], None]:
    """The changes to ``[start, end)`` from ``start_revision`` on, in etcd's order, in
    batches of whatever had arrived. Ends when etcd ends the stream; fails (``WatchFailed``)
    when its connection is aborted: its transport is in ``open_transports`` while it is open,
    so that the store can cut the watches of a member it leaves."""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, limit=READ_SIZE
            )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        raise WatchFailed(f"cannot open a watch on {host}:{port}: {exc!r}", True) from exc
    _keep_alive(writer.get_extra_info("socket"))
    open_transports.add(writer.transport)
    http = h11.Connection(h11.CLIENT)
    body = json.dumps(
        {
            "create_request": {
                "key": b64(start.encode()),
                "range_end": b64(end.encode()),
                "start_revision": start_revision,
            }
        }
    ).encode()
    headers = [
        ("Host", f"{host}:{port}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        REQUIRE_LEADER_HEADER,
    ]
    writer.write(http.send(h11.Request(method="POST", target="/v3/watch", headers=headers)))
    writer.write(http.send(h11.Data(data=body)))
    writer.write(http.send(h11.EndOfMessage()))
    try:
        async for batch in read_changes(reader, http):
            yield batch
    finally:
        # Abort, not close: nothing more is to be said on a watch we leave, and a TLS close
        # would wait for the member's answer (and leave the socket open if the loop ends).
        open_transports.discard(writer.transport)
        writer.transport.abort()


def _keep_alive(sock: socket.socket | None) -> None:
    """TCP keep-alive, so that a member that vanished without a word (its machine lost, the
    network cut) ends the watch after KEEPALIVE_IDLE + KEEPALIVE_PROBES * KEEPALIVE_GAP
    seconds instead of leaving it silent for ever: a watch only ever reads."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_GAP)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


async def read_changes(
    reader: asyncio.StreamReader, http: h11.Connection
) -> AsyncGenerator[list[Change], None]:
    """Read the gateway's answer from ``reader``: each read takes everything buffered, and
    every whole line of it becomes part of one batch."""
    partial: list[bytes] = []  # the start of a line not yet whole
    while True:
        try:
            received = await reader.read(READ_SIZE)
        except OSError as exc:
            raise WatchFailed(f"watch connection lost: {exc!r}", True) from exc
        http.receive_data(received)  # b"" says the connection closed
        try:
            pieces, ended = _pieces(http)
        except WatchFailed as exc:
            if received:
                raise
            # Closed mid-answer: the member went away, or the store cut it (``EtcdStore``).
            raise WatchFailed("the watch's connection closed before etcd ended it", True) from exc
        data = b"".join(pieces)
        if b"\n" not in data:  # a long line (a catch-up) in the making: joined once whole
            partial.append(data)
        else:
            *lines, rest = b"".join([*partial, data]).split(b"\n")
            partial = [rest]
            changes: list[Change] = []
            try:
                for line in lines:
                    if line.strip():
                        changes.extend(_changes(line))
            except (WatchFailed, HistoryCompacted):
                if changes:  # what came before the error is etcd's as much as ever
                    yield changes
                raise
            if changes:
                yield changes
        if ended:
            return


def _pieces(http: h11.Connection) -> tuple[list[bytes], bool]:
    """The body's bytes h11 has parsed so far, and whether the answer (or connection) ended."""
    pieces: list[bytes] = []
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            raise WatchFailed(f"etcd's watch answer is not HTTP: {exc}", False) from exc
        if event is h11.NEED_DATA:
            return pieces, False
        if isinstance(event, h11.Response) and event.status_code != 200:
            member_failed = event.status_code in (502, 503, 504)
            raise WatchFailed(f"etcd refused the watch: HTTP {event.status_code}", member_failed)
        if isinstance(event, h11.Data):
            pieces.append(bytes(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return pieces, True


def _changes(line: bytes) -> Iterable[Change]:
    # orjson and binascii rather than json and base64: a task record's change (943 bytes)
    # took 6.1 µs to read, now 4.8, with ``Change`` a named tuple (bench/watch_parse.py).
    try:
        message: dict[str, Any] = orjson.loads(line)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        raise WatchFailed(f"etcd's watch sent a line that is not JSON: {exc}", False) from exc
    error = message.get("error")
    if error is not None:
        code = error.get("grpc_code", error.get("code"))
        text = error.get("message", "watch error")
        raise WatchFailed(f"etcd watch: {text}", code in MEMBER_FAILURE_CODES)
    result = message.get("result", {})
    if int(result.get("compact_revision", 0)):
        raise HistoryCompacted(f"compacted up to {result['compact_revision']}")
    if result.get("canceled"):
        raise WatchFailed(result.get("cancel_reason") or "etcd cancelled the watch", False)
    return [_change(event) for event in result.get("events", ())]


def _change(event: dict[str, Any]) -> Change:
    kv = event["kv"]
    deleted = event.get("type") == "DELETE"  # PUT, the default, is left out of the JSON
    return Change(
        key=a2b_base64(kv["key"]).decode(),
        value=None if deleted else a2b_base64(kv.get("value", "")),
        revision=int(kv["mod_revision"]),
        create_revision=int(kv.get("create_revision", 0)),
        lease=int(kv.get("lease", 0)),
    )
