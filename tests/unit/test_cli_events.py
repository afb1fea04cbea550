"""``theseus events`` and ``theseus event-subscription`` against a fake server."""

from __future__ import annotations

import json

import httpx

from tests.kit.cli import invoke

EVENT = {
    "id": "41-0",
    "index": 41,
    "time": 1_700_000_000.0,
    "topic": "task",
    "type": "TaskExited",
    "key": "web.1",
    "service": "web",
    "message": "task web.1 was killed for memory (OOM) with code 137",
    "payload": {"exit_code": 137, "oom_killed": True},
}


def test_events_prints_them_and_asks_for_what_was_given() -> None:
    asked: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, content=json.dumps(EVENT) + "\n")

    result = invoke(handler, "events", "--since", "10m", "--topic", "task", "--service", "web")
    assert result.exit_code == 0, result.output
    assert "TaskExited" in result.output and "killed for memory (OOM)" in result.output
    params = asked[0].params
    assert params.get_list("topic") == ["task"] and params.get_list("service") == ["web"]
    assert params["follow"] == "false" and float(params["since"]) > 1_700_000_000
    as_json = invoke(handler, "events", "--json")
    assert json.loads(as_json.output.splitlines()[0])["id"] == "41-0"


def test_unknown_topics_and_bad_urls_are_refused_before_any_call() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no call expected")

    result = invoke(handler, "events", "--topic", "weather")
    assert result.exit_code == 2 and "weather" in result.output
    result = invoke(handler, "event-subscription", "add", "ftp://example.org/x")
    assert result.exit_code == 1 and "url:" in result.output
