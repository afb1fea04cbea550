"""The request body limit (``theseus.server.body_limit``): a body over it is refused with 413
in the usual error shape before anything reads it whole or parses it, whether its length is
declared or it comes in chunks; nothing is applied."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.kit.app import inprocess_api
from theseus.server.body_limit import BodyLimit
from theseus.server.config import ServerConfig

LIMIT = 64 * 1024
SPEC = {"image": "theseus/busybox:latest", "instances": 1, "cpus": 0.1, "mem": 32}


class Reader:
    """An ASGI app that reads its body chunk by chunk and answers how much it got."""

    def __init__(self) -> None:
        self.called = False
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        more = True
        while more:
            message = await receive()
            self.read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


async def chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


def client_of(app: BodyLimit) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    inner = Reader()
    async with client_of(BodyLimit(inner, limit=LIMIT)) as client:
        answer = await client.post("/", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert answer.headers["connection"] == "close"
    assert str(LIMIT) in answer.json()["message"] and answer.json()["details"] == []
    assert "--max-request-bytes" in answer.json()["message"]
    assert not inner.called


async def test_a_chunked_body_is_cut_off_as_soon_as_it_crosses_the_limit() -> None:
    inner = Reader()
    async with client_of(BodyLimit(inner, limit=LIMIT)) as client:
        answer = await client.post("/", content=chunks(10 * LIMIT))
    assert answer.status_code == 413
    assert inner.read <= LIMIT, "the app never got a byte past the limit"


@pytest.mark.parametrize("size", [0, LIMIT])
async def test_a_body_up_to_the_limit_goes_through_whole(size: int) -> None:
    async with client_of(BodyLimit(Reader(), limit=LIMIT)) as client:
        declared = await client.post("/", content=b"x" * size)
    async with client_of(BodyLimit(Reader(), limit=LIMIT)) as client:
        streamed = await client.post("/", content=chunks(size))
    assert (declared.status_code, declared.text) == (200, str(size))
    assert (streamed.status_code, streamed.text) == (200, str(size))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/deploy", {"deploy": {"web": {**SPEC, "environment": {"PAD": "p" * (2 * LIMIT)}}}}),
        ("/v1/groups/web/scale", {"instances": 2, "labels": ["p" * (2 * LIMIT)]}),
    ],
)
async def test_the_server_answers_413_in_its_error_shape_and_applies_nothing(
    path: str, body: dict[str, object]
) -> None:
    async with inprocess_api(ServerConfig(max_request_bytes=LIMIT)) as client:
        assert (await client.post("/deploy", json={"deploy": {"web": SPEC}})).status_code == 200
        before = (await client.get("/v1/groups")).json()
        declared = await client.post(path, json=body)
        streamed = await client.post(
            path,
            content=_streamed(httpx.Request("POST", "/", json=body).content),
            headers={"content-type": "application/json"},
        )
        after = (await client.get("/v1/groups")).json()
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert set(answer.json()) == {"message", "details"}
        assert f"at most {LIMIT} bytes" in answer.json()["message"]
    assert after == before


async def _streamed(content: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(content), 4096):
        yield content[start : start + 4096]
