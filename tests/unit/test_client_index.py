"""Reads by index (``theseus.server.client_index``): the header each answer carries, a request
held until the server's view reaches the index it asks for (503 if it does not in time), a
bad header refused with its name, and ``ServerClient`` keeping the highest index it saw."""

from __future__ import annotations

import httpx
import pytest

from tests.kit.app import inprocess_api
from tests.kit.builders import WEB_DOC
from theseus.api.client import ServerClient
from theseus.server import client_index

HEADER = client_index.HEADER


async def test_a_write_carries_its_revision_and_a_read_at_that_index_shows_it() -> None:
    async with inprocess_api() as api:
        wrote = await api.post(
            "/deploy",
            content=WEB_DOC,
            headers={"Content-Type": "application/x-yaml", HEADER: "0"},
        )
        assert wrote.status_code == 200, wrote.text
        index = int(wrote.headers[HEADER])
        assert index > 0
        read = await api.get("/v1/groups", headers={HEADER: str(index)})
        assert [g["service"] for g in read.json()["groups"]] == ["web"]
        assert int(read.headers[HEADER]) >= index  # the view's revision, now past the write


async def test_a_read_at_an_index_the_view_does_not_reach_is_answered_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_index, "INDEX_WAIT", 0.2)
    async with inprocess_api() as api:
        at = int((await api.get("/v1/groups")).headers[HEADER])
        ahead = await api.get("/v1/groups", headers={HEADER: str(at + 1000)})
        assert ahead.status_code == 503
        assert ahead.headers["Retry-After"] == "1"
        assert f"index {at + 1000}" in ahead.json()["message"]
        assert HEADER not in ahead.headers


@pytest.mark.parametrize("value", ["soon", "-1", "1.5"])
async def test_an_index_that_is_not_a_revision_is_refused_by_name(value: str) -> None:
    async with inprocess_api() as api:
        refused = await api.get("/v1/groups", headers={HEADER: value})
        assert refused.status_code == 400
        assert refused.json()["details"][0]["path"] == HEADER


def test_the_client_sends_the_highest_index_it_has_seen() -> None:
    sent: list[str] = []
    answers = iter(["7", "5", "not a number", "9"])

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers[HEADER])
        answer = next(answers)
        return httpx.Response(200, json={"nodes": []}, headers={HEADER: answer})

    with ServerClient("http://theseus", transport=httpx.MockTransport(server)) as client:
        for _ in range(4):
            client.nodes()
        assert sent == ["0", "7", "7", "7"]
        assert client.index == 9
