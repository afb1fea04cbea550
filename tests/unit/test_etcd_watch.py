"""Reading etcd's watch from its HTTP gateway (``theseus.store.etcd_watch.read_changes``), fed
the bytes a member sends: everything that has arrived is handed over in one batch, lines cut
anywhere are put back together, and etcd's errors become the store's. The real gateway is
exercised by the store contract against a real etcd (``tests/integration/test_store.py``)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import h11
import pytest

from theseus.store.base import Change, HistoryCompacted
from theseus.store.etcd_watch import WatchFailed, read_changes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put(key: str, revision: int, value: bytes = b"v", lease: int = 0) -> dict[str, Any]:
    kv: dict[str, Any] = {
        "key": b64(key.encode()),
        "create_revision": str(revision),
        "mod_revision": str(revision),
        "value": b64(value),
    }
    if lease:
        kv["lease"] = str(lease)
    return {"kv": kv}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def events(*events: dict[str, Any]) -> bytes:
    return line({"result": {"header": {"revision": "1"}, "events": list(events)}})


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def answering(*received: bytes, eof: bool = False) -> tuple[asyncio.StreamReader, h11.Connection]:
    """A reader that has received ``received`` and an h11 client that sent its request."""
    reader = asyncio.StreamReader()
    for data in received:
        reader.feed_data(data)
    if eof:
        reader.feed_eof()
    http = h11.Connection(h11.CLIENT)
    http.send(h11.Request(method="POST", target="/v3/watch", headers=[("Host", "etcd")]))
    http.send(h11.EndOfMessage())
    return reader, http


async def batches(reader: asyncio.StreamReader, http: h11.Connection) -> list[list[Change]]:
    return [batch async for batch in read_changes(reader, http)]


async def test_everything_that_arrived_is_one_batch() -> None:
    created = line({"result": {"header": {"revision": "1"}, "created": True}})
    messages = b"".join(chunked(events(put(f"/k/{n}", n + 2))) for n in range(300))
    reader, http = answering(HEAD, chunked(created), messages, b"0\r\n\r\n", eof=True)
    got = await batches(reader, http)
    assert len(got) == 1  # 300 messages, one batch: the loop takes them in one turn
    assert [c.key for c in got[0]] == [f"/k/{n}" for n in range(300)]
    assert [c.revision for c in got[0]] == list(range(2, 302))


async def test_a_line_cut_between_reads_is_put_back_together() -> None:
    deleted = {"type": "DELETE", "kv": put("/k/b", 6)["kv"]}
    whole = events(put("/k/a", 5, b"alpha", lease=7), deleted)
    reader, http = answering(HEAD, chunked(whole[:17]))
    stream = read_changes(reader, http)
    reading = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not reading.done()  # half a line is no change yet
    reader.feed_data(chunked(whole[17:]))
    first = await reading
    assert first == [
        Change(key="/k/a", value=b"alpha", revision=5, create_revision=5, lease=7),
        Change(key="/k/b", value=None, revision=6, create_revision=6, lease=0),
    ]
    reader.feed_data(b"0\r\n\r\n")
    reader.feed_eof()
    assert [batch async for batch in stream] == []


async def test_a_member_without_a_leader_is_a_member_failure() -> None:
    error = line({"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader"}})
    reader, http = answering(HEAD, chunked(events(put("/k/a", 2))), chunked(error))
    stream = read_changes(reader, http)
    assert [c.key for c in await anext(stream)] == ["/k/a"]
    reader.feed_eof()
    with pytest.raises(WatchFailed, match="no leader") as failed:
        await anext(stream)
    assert failed.value.member_failed


async def test_compaction_and_cancellation() -> None:
    compacted = line({"result": {"compact_revision": "40", "canceled": True}})
    reader, http = answering(HEAD, chunked(compacted), eof=True)
    with pytest.raises(HistoryCompacted):
        await batches(reader, http)
    cancelled = line({"result": {"canceled": True, "cancel_reason": "permission denied"}})
    reader, http = answering(HEAD, chunked(cancelled), eof=True)
    with pytest.raises(WatchFailed, match="permission denied") as failed:
        await batches(reader, http)
    assert not failed.value.member_failed


async def test_a_refusal_and_a_dropped_connection() -> None:
    refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    reader, http = answering(refused, eof=True)
    with pytest.raises(WatchFailed, match="HTTP 503") as failed:
        await batches(reader, http)
    assert failed.value.member_failed
    reader, http = answering(HEAD, chunked(events(put("/k/a", 2))), eof=True)
    with pytest.raises(WatchFailed, match="closed before etcd ended it") as failed:
        await batches(reader, http)  # cut mid-answer: the member went, or the store cut it
    assert failed.value.member_failed
    reader, http = answering(b"this is not HTTP\r\n\r\n")
    with pytest.raises(WatchFailed, match="not HTTP"):
        await batches(reader, http)
