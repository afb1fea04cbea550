"""``theseus.store.etcd_gateway``: a transaction's JSON, the answer's reading, and a kept-alive
connection the member closed while it was idle. Against a real etcd, the store contract runs
every commit check through it too (``tests/kit/store_contract.py``, prompt commits, plain and
over TLS)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import orjson
import pytest

from theseus.store.base import CreateRevisionIs, Delete, ModRevisionIs, Put
from theseus.store.etcd_gateway import GatewayError, GatewayPool, txn_body, txn_outcome


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_transaction_says_its_guards_and_ops_as_the_gateway_reads_them() -> None:
    body = orjson.loads(
        txn_body(
            [Put("/k/a", b"v", lease=7), Put("/k/b", b"w"), Delete("/k/c")],
            [ModRevisionIs("/k/a", 0), CreateRevisionIs("/leader", 12)],
        )
    )
    assert body["compare"] == [
        {"key": b64("/k/a"), "target": "MOD", "result": "EQUAL", "mod_revision": "0"},
        {"key": b64("/leader"), "target": "CREATE", "result": "EQUAL", "create_revision": "12"},
    ]
    assert body["success"] == [
        {"request_put": {"key": b64("/k/a"), "value": b64("v"), "lease": "7"}},
        {"request_put": {"key": b64("/k/b"), "value": b64("w")}},
        {"request_delete_range": {"key": b64("/k/c")}},
    ]


def test_an_answer_gives_the_revision_or_none_when_a_guard_failed() -> None:
    applied = {"header": {"revision": "42"}, "succeeded": True}
    assert txn_outcome(200, orjson.dumps(applied)) == 42
    # proto3's JSON leaves a false ``succeeded`` out.
    assert txn_outcome(200, orjson.dumps({"header": {"revision": "42"}})) is None


@pytest.mark.parametrize(
    ("status", "code", "member_failed"),
    [(503, 14, True), (504, 4, True), (400, 3, False), (404, 5, False)],
)
def test_an_error_says_whether_the_member_seems_gone(
    status: int, code: int, member_failed: bool
) -> None:
    answer = orjson.dumps({"error": "x", "code": code, "message": "etcdserver: something"})
    with pytest.raises(GatewayError) as raised:
        txn_outcome(status, answer)
    assert raised.value.member_failed is member_failed
    assert "etcdserver: something" in str(raised.value) and f"code {code}" in str(raised.value)


ANSWER = b'{"header":{"revision":"%d"},"succeeded":true}'


@pytest.fixture
async def one_answer_per_connection() -> AsyncIterator[tuple[int, list[int]]]:
    """A stand-in for a member's gateway that answers one request on each connection, then
    closes it, as a member does with a connection idle for too long; its port, and how many
    requests it answered."""
    answered: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        answered.append(length)
        body = ANSWER % len(answered)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, answered
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_the_member_closed_while_idle_is_replaced_not_failed(
    one_answer_per_connection: tuple[int, list[int]],
) -> None:
    port, answered = one_answer_per_connection
    pool = GatewayPool("127.0.0.1", port, None, timeout=2)
    try:
        assert await pool.commit([Put("/k", b"1")], []) == 1
        # The kept connection is closed by now: the next commit goes on a new one, once.
        assert await pool.commit([Put("/k", b"2")], []) == 2
        assert len(answered) == 2
    finally:
        pool.close()


async def test_a_member_that_does_not_answer_is_a_member_failure() -> None:
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    pool = GatewayPool("127.0.0.1", port, None, timeout=0.3)
    try:
        with pytest.raises(GatewayError) as raised:
            await pool.commit([Put("/k", b"1")], [])
        assert raised.value.member_failed
    finally:
        pool.close()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
