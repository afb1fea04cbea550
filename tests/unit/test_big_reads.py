"""The reads whose answers grow with the cluster (every task, every node, the metrics' sweep
over the state) are put together in a worker thread over a snapshot, not on the event loop:
at 50,000 tasks each took 0.4-2.8 s, and every heartbeat waited that long
(``theseus.server.routes.tasks``, ``theseus.server.app``). ``GET /v1/groups``, polled during
every deploy and memoised, stays on the loop, and gives it turns between groups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.app import inprocess_api
from tests.kit.wait import wait_until_async
from theseus.server import metrics_state, wire
from theseus.server.routes import groups as group_routes
from theseus.server.routes import tasks as task_routes


def recording(threads: dict[str, int], name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def called(*args: Any, **kwargs: Any) -> Any:
        threads[name] = threading.get_ident()
        return real(*args, **kwargs)

    return called


async def test_big_reads_are_built_beside_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: dict[str, int] = {}
    memo = wire.WireMemo
    monkeypatch.setattr(memo, "tasks_json", recording(threads, "tasks", memo.tasks_json))
    monkeypatch.setattr(memo, "group_json", recording(threads, "groups", memo.group_json))
    monkeypatch.setattr(
        task_routes, "node_info", recording(threads, "nodes", task_routes.node_info)
    )
    figures = metrics_state.state_figures
    monkeypatch.setattr(metrics_state, "state_figures", recording(threads, "metrics", figures))
    deploy = {"deploy": {"web": {"image": "sim", "instances": 2, "cpus": 0.1, "mem": 16}}}
    async with inprocess_api() as api:
        assert (await api.post("/deploy", json=deploy)).status_code == 200
        registered = await api.post(
            "/v1/agent/register",
            json={"name": "n1", "address": "127.0.0.2", "agent_port": 5051, "cpus": 2, "mem": 1024},
        )
        assert registered.status_code == 200, registered.text
        listed: list[Any] = []

        async def two_tasks() -> bool:
            listed[:] = (await api.get("/v1/tasks")).json()["tasks"]
            return len(listed) == 2

        await wait_until_async(two_tasks, 10.0, "the leader's pass to create both tasks", 0.02)
        threads.clear()  # the reads below, from here on
        loop_thread = threading.get_ident()
        tasks = await api.get("/v1/tasks")
        groups = await api.get("/v1/groups")
        nodes = await api.get("/v1/nodes")
        scraped = await api.get("/metrics")
    assert [r.status_code for r in (tasks, groups, nodes, scraped)] == [200, 200, 200, 200]
    assert len(tasks.json()["tasks"]) == 2
    assert [g["service"] for g in groups.json()["groups"]] == ["web"]
    assert [n["name"] for n in nodes.json()["nodes"]] == ["n1"]
    counted = [
        sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "theseus_tasks"
    ]
    assert sum(counted) == 2  # the state's gauges, swept over the snapshot
    assert set(threads) == {"tasks", "groups", "nodes", "metrics"}
    beside = {name: thread for name, thread in threads.items() if name != "groups"}
    assert loop_thread not in beside.values(), threads
    assert threads["groups"] == loop_thread


async def test_the_groups_list_gives_the_loop_turns_between_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``GET /v1/groups`` stays on the loop, but lets it turn between two groups once it has
    held it ``GROUPS_SLICE`` (at 500 groups in a big deploy the whole answer took 0.25-0.4 s),
    and every group is still listed, whole."""
    turns = 0
    seen_at_turn: list[int] = []
    real = wire.WireMemo.group_json

    def noting_the_turn(*args: Any, **kwargs: Any) -> Any:
        seen_at_turn.append(turns)
        return real(*args, **kwargs)

    monkeypatch.setattr(wire.WireMemo, "group_json", noting_the_turn)
    monkeypatch.setattr(group_routes, "GROUPS_SLICE", 0.0)  # a turn between every two groups
    services = {name: {"image": "sim", "instances": 1, "cpus": 0.1, "mem": 16} for name in "abc"}

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async with inprocess_api() as api:
        assert (await api.post("/deploy", json={"deploy": services})).status_code == 200
        counting = asyncio.create_task(count_turns())
        try:
            listed = await api.get("/v1/groups")
        finally:
            counting.cancel()
    assert listed.status_code == 200
    assert sorted(g["service"] for g in listed.json()["groups"]) == ["a", "b", "c"]
    assert len(seen_at_turn) == 3
    assert seen_at_turn[0] < seen_at_turn[1] < seen_at_turn[2], "no turn between two groups"


async def test_the_task_list_comes_in_pages_that_stay_whole_while_tasks_come_and_go() -> None:
    """``GET /v1/tasks?limit=N``: N tasks at most, in the list's order, and ``next`` asks for
    the ones after them; walking the pages gives the whole list once, even when the tasks of
    a page already read are gone (the token is the last task's place, not its presence)."""
    deploy = {
        "deploy": {
            name: {"image": "sim", "instances": 3, "cpus": 0.1, "mem": 16}
            for name in ("api", "web")
        }
    }
    async with inprocess_api() as api:
        # No node: the tasks wait for one, and a removed group's go at once.
        assert (await api.post("/deploy", json=deploy)).status_code == 200

        def listing(count: int) -> Callable[[], Awaitable[list[Any] | None]]:
            async def listed() -> list[Any] | None:
                tasks: list[Any] = (await api.get("/v1/tasks")).json()["tasks"]
                return tasks if len(tasks) == count else None

            return listed

        whole = await wait_until_async(listing(6), 10.0, "the leader's pass to create the tasks")
        assert [t["service"] for t in whole] == ["api"] * 3 + ["web"] * 3
        assert (await api.get("/v1/tasks")).json()["next"] is None
        pages: list[list[str]] = []
        params: dict[str, Any] = {"limit": 2}
        for _ in whole:  # never more pages than tasks
            page = (await api.get("/v1/tasks", params=params)).json()
            pages.append([t["id"] for t in page["tasks"]])
            if page["next"] is None:
                break
            params["after"] = page["next"]
        else:
            pytest.fail(f"the pages never ended: {pages}")
        assert pages == [[t["id"] for t in whole[i : i + 2]] for i in (0, 2, 4)]
        first = (await api.get("/v1/tasks", params={"limit": 3})).json()
        assert [t["id"] for t in first["tasks"]] == [t["id"] for t in whole[:3]]
        assert first["next"]
        # Every task of the page read so far goes: the next page is still what followed it.
        assert (await api.request("DELETE", "/v1/groups/api")).status_code == 200
        await wait_until_async(listing(3), 10.0, "the removed group's tasks to go")
        rest = (await api.get("/v1/tasks", params={"limit": 3, "after": first["next"]})).json()
        assert [t["id"] for t in rest["tasks"]] == [t["id"] for t in whole[3:]]
        assert rest["next"] is None
        for bad, where in ((("limit", "0"),), "query.limit"), ((("after", "%%%"),), "query.after"):
            refused = await api.get("/v1/tasks", params=dict(bad))
            assert refused.status_code == 422
            assert [d["path"] for d in refused.json()["details"]] == [where]
