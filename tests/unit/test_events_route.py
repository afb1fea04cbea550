"""``GET /v1/events`` and ``/v1/event-subscriptions`` on a whole server in-process
(``tests/kit/app.py``): a deploy's events, the formats, the filters, bad parameters."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY

from tests.kit.app import inprocess_api
from tests.kit.wait import wait_until_async


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


async def test_a_deploy_shows_as_events_with_its_audit() -> None:
    async with inprocess_api() as api:
        document = {"deploy": {"web": {"image": "theseus/busybox:latest", "instances": 2}}}
        assert (await api.post("/deploy", json=document)).status_code == 200

        async def placement_failed() -> list[dict[str, object]] | None:
            answer = await api.get("/v1/events", params={"index": 0, "follow": "false"})
            events = _lines(answer.text)
            return events if any(e["type"] == "PlacementFailed" for e in events) else None

        everything = await wait_until_async(placement_failed, 5, "the leader's first pass")
        # Index 0 is before this server's window (it starts where its cache loaded): a reset
        # says so first.
        reset, *events = everything
        assert (reset["topic"], reset["type"]) == ("stream", "reset")
        start = reset["payload"]["start"]  # type: ignore[index]
        types = [e["type"] for e in events]
        assert types.index("GroupCreated") < types.index("PlacementFailed")
        assert {"DeploymentStarted", "ApiWrite"} <= set(types)
        ids = [str(e["id"]) for e in events]
        assert len(ids) == len(set(ids))
        positions = [tuple(map(int, i.split("-"))) for i in ids]
        assert positions == sorted(positions)

        only = await api.get(
            "/v1/events", params={"index": start, "follow": "false", "topic": "scheduling"}
        )
        assert {e["topic"] for e in _lines(only.text)} == {"scheduling"}
        after = await api.get("/v1/events", params={"after": ids[0], "follow": "false"})
        assert [e["id"] for e in _lines(after.text)][:1] == ids[1:2]
        sse = await api.get(
            "/v1/events",
            params={"index": start, "follow": "false", "service": "web"},
            headers={"Accept": "text/event-stream"},
        )
        assert sse.text.startswith(f"id: {ids[0]}\nevent: GroupCreated\ndata: {{")
        assert REGISTRY.get_sample_value("theseus_events_derived_total") >= len(ids)


async def test_bad_parameters_are_422_naming_them() -> None:
    async with inprocess_api() as api:
        answer = await api.get("/v1/events", params={"topic": "weather"})
        assert answer.status_code == 422 and answer.json()["message"].startswith("topic:")
        answer = await api.get("/v1/events", params={"after": "yesterday"})
        assert answer.status_code == 422 and answer.json()["message"].startswith("after:")
        answer = await api.post("/v1/event-subscriptions", json={"url": "file:///etc/passwd"})
        assert answer.status_code == 422
        assert [d["path"] for d in answer.json()["details"]] == ["url"]
        answer = await api.post(
            "/v1/event-subscriptions", json={"url": "http://127.0.0.1:9/", "topics": ["x"]}
        )
        assert answer.status_code == 422
        assert [d["path"] for d in answer.json()["details"]] == ["topics.0"]
        assert (await api.get("/v1/event-subscriptions")).json() == {"subscriptions": []}


async def test_subscriptions_are_added_listed_and_removed() -> None:
    async with inprocess_api() as api:
        answer = await api.post(
            "/v1/event-subscriptions", json={"url": "https://hooks.example/x", "topics": ["node"]}
        )
        assert answer.status_code == 201
        created = answer.json()
        listed = (await api.get("/v1/event-subscriptions")).json()["subscriptions"]
        assert [(s["id"], s["url"], s["topics"]) for s in listed] == [
            (created["id"], "https://hooks.example/x", ["node"])
        ]
        assert (await api.delete(f"/v1/event-subscriptions/{created['id']}")).status_code == 204
        assert (await api.delete(f"/v1/event-subscriptions/{created['id']}")).status_code == 404
