"""The agent's transport (``theseus.api.aiohttp_transport``) against real loopback sockets: an
answer comes back whole, and each way a request can fail is the httpx error that says whether
it may have reached the server (``theseus.api.client.may_have_arrived``): a refused
connection did not, a server that hung up after reading it may have."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from theseus.api.agent_client import AGENT_LIMITS
from theseus.api.aiohttp_transport import aiohttp_transport
from theseus.api.client import may_have_arrived

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            finally:
                writer.close()
                await writer.wait_closed()

        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=aiohttp_transport(AGENT_LIMITS, None), timeout=5.0)


async def test_an_answer_comes_back_whole(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # the connection is kept alive between the two requests
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            body = b'{"ok":true}'
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                b"x-theseus-index: 7\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()

    url = await serve(answer)
    async with client() as http:
        for _ in range(2):
            response = await http.post(f"{url}/v1/x", json={"a": 1}, headers={"X-Test": "yes"})
            assert response.status_code == 201
            assert response.json() == {"ok": True}
            assert response.headers["x-theseus-index"] == "7"
    assert len(seen) == 2
    head, body = seen[0]
    assert head.startswith(b"POST /v1/x HTTP/1.1") and b"x-test: yes" in head.lower()
    assert body == b'{"a":1}'


async def test_a_refused_connection_never_arrived() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://127.0.0.1:{port}/v1/x")
    assert not may_have_arrived(caught.value)


async def test_a_server_that_hangs_up_after_reading_may_have_acted(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # and closes (``serve``)

    url = await serve(hang_up)
    async with client() as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.delete(f"{url}/v1/groups/web")
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert may_have_arrived(caught.value)


async def test_a_server_that_never_answers_is_a_read_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client gives up and closes

    url = await serve(silent)
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.get(f"{url}/v1/x", timeout=0.3)
    assert may_have_arrived(caught.value)
