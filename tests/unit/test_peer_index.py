"""The index an agent's report asks of the server it goes to (``theseus.api.peer_index``):
the highest that the *other* servers answered, so that a server whose view is behind theirs
decides the report only once it has caught up, and an agent that stays with one server never
waits for that server's own writes."""

from __future__ import annotations

import httpx

from theseus.api.agent_client import AsyncServerClient
from theseus.api.peer_index import PeerIndexes
from theseus.api.schemas import INDEX_HEADER, ReportBatch, TaskReport


def test_a_server_is_asked_for_the_highest_index_the_others_answered() -> None:
    indexes = PeerIndexes()
    assert indexes.asked_of("a") is None
    indexes.answered("a", 12)
    indexes.answered("a", 9)  # a late answer with an older view changes nothing
    indexes.answered("b", 0)  # an answer without an index
    assert indexes.asked_of("a") is None  # its own writes are in its view already
    assert indexes.asked_of("b") == 12
    indexes.answered("c", 20)
    assert (indexes.asked_of("a"), indexes.asked_of("b"), indexes.asked_of("c")) == (20, 20, 12)
    indexes.forget()
    assert indexes.asked_of("b") is None


async def test_a_report_that_fails_over_asks_the_next_server_for_what_the_first_wrote() -> None:
    sent: list[tuple[str, str | None]] = []
    answers = {
        "a": [(200, "12"), (503, None)],  # writes at 12, then loses etcd
        "b": [(200, "10"), (200, "14")],  # its view is behind a's write at first
    }

    def server(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        sent.append((host, request.headers.get(INDEX_HEADER)))
        status, index = answers[host].pop(0)
        headers = {} if index is None else {INDEX_HEADER: index}
        return httpx.Response(status, json={"accepted": 1, "written": 1}, headers=headers)

    client = AsyncServerClient(["http://a", "http://b"], transport=httpx.MockTransport(server))
    batch = ReportBatch(reports=[TaskReport(task_id="t", state="running", at=1.0)])
    try:
        for _ in range(3):
            await client.report("n1", batch)
    finally:
        await client.aclose()
    assert sent == [("a", None), ("a", None), ("b", "12"), ("b", "12")]
