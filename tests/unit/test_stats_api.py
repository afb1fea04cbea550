"""The server's side of the task metrics, in-process: a heartbeat's usage shows in the node
list (and a bad one is a 422 naming the field, the lease untouched); the stats routes refuse
unknown tasks and bad parameters; ``theseus top --once`` prints a fake server's figures."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.kit.app import inprocess_api
from tests.kit.cli import invoke
from theseus.cli import top_cmd

REGISTRATION = {
    "name": "n1",
    "address": "127.0.0.2",
    "agent_port": 5051,
    "cpus": 2.0,
    "mem": 1024.0,
    "port_range": [31000, 32000],
    "attributes": {},
    "driver": "docker",
}
USAGE = {"time": 1000.0, "cpu_cores": 0.5, "memory_bytes": 1048576, "tasks": 1}


async def test_heartbeat_usage_reaches_the_node_list() -> None:
    async with inprocess_api() as client:
        assert (await client.post("/v1/agent/register", json=REGISTRATION)).status_code == 200
        (node,) = (await client.get("/v1/nodes")).json()["nodes"]
        assert node["usage"] is None
        # An older agent's heartbeat has no body.
        assert (await client.post("/v1/agent/n1/heartbeat")).status_code == 200
        answer = await client.post("/v1/agent/n1/heartbeat", json={"usage": USAGE})
        assert answer.status_code == 200
        assert (await client.get("/v1/nodes/n1")).json()["usage"] == USAGE
        bad = await client.post(
            "/v1/agent/n1/heartbeat", json={"usage": {**USAGE, "cpu_cores": -1}}
        )
        assert bad.status_code == 422 and "cpu_cores" in bad.text
        assert (await client.get("/v1/nodes/n1")).json()["usage"] == USAGE


async def test_stats_routes_refuse_what_they_cannot_answer() -> None:
    async with inprocess_api() as client:
        missing = await client.get("/v1/tasks/nope/stats")
        assert missing.status_code == 404 and "nope" in missing.text
        bad = await client.get("/v1/tasks/nope/stats", params={"since": "nan"})
        assert bad.status_code == 422 and "since" in bad.text
        bad = await client.get("/v1/tasks/nope/stats", params={"limit": "0"})
        assert bad.status_code == 422 and "limit" in bad.text
        empty = await client.get("/v1/stats")
        assert empty.status_code == 200
        assert empty.json() == {"tasks": [], "unreachable": []}


def test_top_once_prints_each_task_and_member() -> None:
    sample = {"time": 1.0, "cpu_cores": 0.5, "memory_working_set_bytes": 64 << 20}
    listing = {
        "tasks": [
            {
                "task_id": "web.1",
                "service": "web",
                "group": "web:",
                "labels": [],
                "node": "n1",
                "interval": 10.0,
                "samples": [{**sample, "memory_limit_bytes": 128 << 20}],
            },
            {
                "task_id": "pod.1",
                "service": "pod",
                "group": "pod:",
                "labels": [],
                "node": "n2",
                "interval": 10.0,
                "samples": [{**sample, "members": {"app": sample, "side": sample}}],
            },
        ],
        "unreachable": ["n3"],
    }
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=listing)

    result = invoke(handler, "top", "--once")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["web.1"][1:8] == ["web", "n1", "0.50", "-", "64.0", "MiB", "128.0"]
    assert "50.0%" in lines["web.1"]
    assert {"└", "pod.1"} <= set(lines)  # the members' rows start with "└"
    assert "no answer from the agents of n3" in result.output
    assert asked == ["http://fake:5000/v1/stats"]
    only = invoke(handler, "top", "web", "--json")
    assert json.loads(only.output)["tasks"][0]["task_id"] == "web.1"
    assert asked[-1] == "http://fake:5000/v1/stats?service=web"


def test_top_live_refreshes_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --once: a table per refresh, and Ctrl-C ends it quietly."""
    listing = {"tasks": [], "unreachable": []}
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=listing)

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(top_cmd.time, "sleep", sleep)
    result = invoke(handler, "top", "--interval", "3")
    assert result.exit_code == 0, result.output
    assert len(asked) == 2 and sleeps == [3.0, 3.0]
    assert "0 running tasks of the cluster" in result.output
