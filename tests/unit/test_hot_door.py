"""The agents' hot routes through ``theseus.server.hot_door``: every answer the door gives is
the one the whole app gives without it (status, body, the headers that matter), for what
its layers check (body limit, client index, authentication and authorization, errors and
bad input, an exception no handler takes), and it counts each request under the route's
template as the metrics middleware does. Each case is sent twice to one in-process server,
door on and off, as raw ASGI (a TLS peer's certificate is in the scope, as uvicorn puts it)."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi import FastAPI

from tests.kit.app import inprocess_server
from tests.unit.test_agent_routes import NODE, REGISTRATION
from theseus.api.schemas import NodeRegistration
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.records import RevokedCertificate, TokenRecord
from theseus.security.tokens import Scope, new_api_token, secret_hash
from theseus.server.config import ServerConfig
from theseus.server.plain_routes import DescribedApp

LIMIT = 4096
HEADERS_COMPARED = (b"content-type", b"x-theseus-index", b"connection", b"www-authenticate")


class Answer(NamedTuple):
    status: int
    headers: dict[bytes, bytes]  # of HEADERS_COMPARED
    body: Any  # JSON, or the text


async def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    body: Iterable[bytes] = (),
    headers: Iterable[tuple[str, str]] = (),
    query: str = "",
    peer: pki.Identity | None = None,
    declare_length: bool = True,
) -> Answer:
    """One request straight through ASGI, as uvicorn would send it."""
    chunks = list(body)
    sent_headers = [(k.lower().encode(), v.encode()) for k, v in headers]
    if chunks and declare_length:
        sent_headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": sent_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
    }
    if peer is not None:
        scope["extensions"] = {"tls": {"peer": peer}}
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    answered = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    start = messages[0]
    raw = b"".join(m.get("body", b"") for m in messages[1:])
    kept = {k: v for k, v in start["headers"] if k in HEADERS_COMPARED}
    try:
        content: Any = json.loads(raw)
    except ValueError:
        content = raw.decode()
    return Answer(start["status"], kept, content)


async def both(app: DescribedApp, method: str, path: str, **request: Any) -> Answer:
    """The answer with the door; asserts the app without it answers the same."""
    door = app.door
    assert door is not None
    with_door = await call(app, method, path, **request)
    app.door = None
    try:
        without = await call(app, method, path, **request)
    finally:
        app.door = door
    # The index may move between the two: a heartbeat writes (its node in a heard record).
    assert _sans_index(with_door) == _sans_index(without), (
        f"{method} {path}: the door {with_door}, the app {without}"
    )
    assert (b"x-theseus-index" in with_door.headers) == (b"x-theseus-index" in without.headers)
    return with_door


def _sans_index(answer: Answer) -> Answer:
    headers = {k: v for k, v in answer.headers.items() if k != b"x-theseus-index"}
    return answer._replace(headers=headers)


def counted(app: FastAPI, method: str, template: str, status: int) -> float:
    sample = app.state.metrics.registry.get_sample_value(
        "theseus_api_requests_total", {"method": method, "route": template, "status": str(status)}
    )
    return sample or 0.0


@asynccontextmanager
async def server(config: ServerConfig) -> AsyncIterator[DescribedApp]:
    async with inprocess_server(config) as (app, client):
        assert isinstance(app, DescribedApp) and app.door is not None
        assert (await client.post("/v1/agent/register", json=REGISTRATION)).status_code == 200
        yield app


def report_batch(task_id: str = "t-1") -> bytes:
    report = {"task_id": task_id, "state": "running", "container_id": "c", "at": time.time()}
    return json.dumps({"reports": [report]}).encode()


async def test_a_development_clusters_hot_routes_answer_as_the_app_does() -> None:
    async with server(ServerConfig(max_request_bytes=LIMIT)) as app:
        heartbeat = f"/v1/agent/{NODE}/heartbeat"
        ok = await both(app, "POST", heartbeat, body=[b'{"usage": null}'])
        assert ok.status == 200 and ok.body["ok"] is True
        assert int(ok.headers[b"x-theseus-index"]) > 0  # read-your-writes, as every answer
        polled = await both(app, "GET", f"/v1/agent/{NODE}/assignments", query="wait=0&index=0")
        assert polled.status == 200 and polled.body["tasks"] == []
        reported = await both(app, "POST", f"/v1/agent/{NODE}/reports", body=[report_batch()])
        assert reported.status == 200 and reported.body == {"accepted": 1, "written": 0}

        unknown = await both(app, "POST", "/v1/agent/nobody/heartbeat")
        assert unknown.status == 404 and "nobody" in unknown.body["message"]
        bad = await both(
            app,
            "POST",
            heartbeat,
            body=[b'{"usage": {"time": -1, "cpu_cores": 0, "memory_bytes": 0}}'],
        )
        assert bad.status == 422 and bad.body["details"][0]["path"] == "usage.time"
        wait = await both(app, "GET", f"/v1/agent/{NODE}/assignments", query="wait=nan")
        assert wait.status == 422 and wait.body["details"][0]["path"] == "query.wait"

        declared = await both(app, "POST", heartbeat, body=[b" " * (LIMIT + 1)])
        assert declared.status == 413 and declared.headers[b"connection"] == b"close"
        chunked = await both(app, "POST", heartbeat, body=[b" " * 1024] * 5, declare_length=False)
        assert chunked.status == 413 and chunked.headers[b"connection"] == b"close"
        assert "at most 4096 bytes" in chunked.body["message"]
        index = await both(app, "POST", heartbeat, headers=[("X-Theseus-Index", "-1")])
        assert index.status == 400 and index.body["details"][0]["path"] == "X-Theseus-Index"

        # Not the door's: another method, or another path, go through the app's router.
        assert (await call(app, "GET", heartbeat)).status == 405
        assert (await call(app, "POST", f"/v1/agent/{NODE}/heartbeat/x")).status == 404
        assert (await call(app, "POST", "/v1/agent//heartbeat")).status == 404

        # Counted as the metrics middleware counts: by the route's template and status.
        template = "/v1/agent/{node}/heartbeat"
        before = {s: counted(app, "POST", template, s) for s in (200, 413, 422)}
        await call(app, "POST", heartbeat)
        await call(app, "POST", heartbeat, body=[b"[]"])
        await call(app, "POST", heartbeat, body=[b" " * (LIMIT + 1)])
        assert {s: counted(app, "POST", template, s) - before[s] for s in before} == {
            200: 1,
            413: 1,
            422: 1,
        }


async def test_an_exception_no_handler_takes_is_a_500_raised_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with server(ServerConfig()) as app:

        async def broken(node: str) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.ctx.writer, "heartbeat", broken)
        for door in (app.door, None):
            app.door = door
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": f"/v1/agent/{NODE}/heartbeat",
                "headers": [],
                "query_string": b"",
            }
            with pytest.raises(RuntimeError, match="a bug"):
                await app(scope, receive, send)
            assert sent[0]["status"] == 500 and sent[1]["body"] == b"Internal Server Error"


async def test_a_secured_clusters_hot_routes_are_the_nodes_own_agents_only(
    tmp_path: Path,
) -> None:
    ca = pki.create_ca("test")
    files = PkiDir(tmp_path / "pki")
    files.write_ca(ca)
    files.write("server", pki.issue(ca, name="s1", role=pki.Role.SERVER, addresses=[], days=1))
    config = ServerConfig(pki_dir=files.root)

    def agent(name: str) -> pki.Identity:
        now = datetime.datetime.now(datetime.UTC)
        return pki.Identity(name, pki.Role.AGENT, 7, now, now + datetime.timedelta(days=1))

    token = new_api_token()
    record = TokenRecord(
        id=token.id,
        name="ops",
        scopes=[Scope.ADMIN],
        secret_hash=secret_hash(token.secret),
        created_at=0,
    )
    async with inprocess_server(config) as (app, _):
        assert isinstance(app, DescribedApp)
        app.state.ctx.cache.access.tokens[token.id] = record
        await app.state.ctx.writer.register_node(NodeRegistration.model_validate(REGISTRATION))
        heartbeat = f"/v1/agent/{NODE}/heartbeat"

        nobody = await both(app, "POST", heartbeat)
        assert nobody.status == 401 and nobody.headers[b"www-authenticate"].startswith(b"Bearer")
        admin = await both(app, "POST", heartbeat, headers=[("Authorization", f"Bearer {token}")])
        assert admin.status == 403 and "only the agent of node 'n1'" in admin.body["message"]
        other = await both(app, "POST", heartbeat, peer=agent("n2"))
        assert other.status == 403
        mine = await both(app, "POST", heartbeat, peer=agent(NODE))
        assert mine.status == 200, mine
        app.state.ctx.cache.access.revoked["7"] = RevokedCertificate(
            serial="7", node=NODE, revoked_at=0, not_after=time.time() + 3600
        )
        gone = await both(app, "POST", heartbeat, peer=agent(NODE))
        assert gone.status == 401 and "revoked" in gone.body["message"]
