"""The agents' hot routes (heartbeat, assignments, reports), served as plain Starlette routes
(``theseus.server.routes.agent``, ``theseus.server.plain_routes``), on a whole in-process
server: they answer what the FastAPI routes answered, a bad input gets the same 422 naming
the field and changes nothing, and ``/openapi.json`` still describes them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.kit.app import inprocess_api, inprocess_server
from tests.kit.wait import wait_until_async
from theseus.model.tasks import TaskRecord
from theseus.server.app import create_app
from theseus.server.client_index import HEADER
from theseus.server.config import ServerConfig
from theseus.server.routes import agent as agent_routes
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.encoding import encode
from theseus.store.memory import MemoryStore

NODE = "n1"
REGISTRATION = {
    "name": NODE,
    "address": "127.0.0.2",
    "agent_port": 1,
    "cpus": 2,
    "mem": 1024,
    "driver": "sim",
}


async def register_with_tasks(api: httpx.AsyncClient, instances: int) -> dict[str, Any]:
    """Register the node, deploy ``instances`` tasks, and wait until they are assigned."""
    assert (await api.post("/v1/agent/register", json=REGISTRATION)).status_code == 200
    document = {"deploy": {"web": {"image": "sim", "instances": instances, "mem": 16}}}
    assert (await api.post("/deploy", json=document)).status_code == 200

    async def assigned() -> dict[str, Any] | None:
        answer = await api.get(f"/v1/agent/{NODE}/assignments", params={"wait": 0})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if len(body["tasks"]) == instances else None

    return await wait_until_async(assigned, 10, "the tasks assigned")


def report(task_id: str, state: str = "running") -> dict[str, Any]:
    return {"task_id": task_id, "state": state, "container_id": "c1", "at": time.time()}


async def test_heartbeats_answer_the_pace_and_keep_the_usage() -> None:
    async with inprocess_api() as api:
        assert (await api.post("/v1/agent/register", json=REGISTRATION)).status_code == 200
        empty = await api.post(f"/v1/agent/{NODE}/heartbeat")  # an older agent's: no body
        assert empty.status_code == 200, empty.text
        assert empty.json()["ok"] is True
        assert empty.json()["liveness_timeout"] > empty.json()["heartbeat_interval"] > 0
        usage = {"time": time.time(), "cpu_cores": 0.5, "memory_bytes": 2**20, "tasks": 0}
        full = await api.post(f"/v1/agent/{NODE}/heartbeat", json={"usage": usage})
        assert full.status_code == 200, full.text
        (node,) = (await api.get("/v1/nodes")).json()["nodes"]
        assert node["usage"]["cpu_cores"] == 0.5
        unknown = await api.post("/v1/agent/n9/heartbeat")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "message": "node 'n9' is not registered (or was declared lost)",
            "details": [],
        }


async def test_a_bad_heartbeat_body_is_a_422_naming_the_field_and_keeps_nothing() -> None:
    async with inprocess_api() as api:
        assert (await api.post("/v1/agent/register", json=REGISTRATION)).status_code == 200
        usage = {"time": time.time(), "cpu_cores": -1, "memory_bytes": 0, "tasks": 0}
        bad = await api.post(f"/v1/agent/{NODE}/heartbeat", json={"usage": usage})
        assert bad.status_code == 422
        assert bad.json()["message"] == "invalid request; nothing was applied"
        assert [d["path"] for d in bad.json()["details"]] == ["usage.cpu_cores"]
        (node,) = (await api.get("/v1/nodes")).json()["nodes"]
        assert node.get("usage") is None
        garbled = await api.post(f"/v1/agent/{NODE}/heartbeat", content=b"{not json")
        assert garbled.status_code == 422
        assert "JSON" in garbled.json()["details"][0]["message"]


async def test_reports_are_recorded_and_a_bad_one_changes_nothing() -> None:
    store = MemoryStore()
    async with inprocess_api(store=store) as api:
        (task,) = (await register_with_tasks(api, 1))["tasks"]
        batch = {"reports": [report(task["task_id"])]}
        answer = await api.post(f"/v1/agent/{NODE}/reports", json=batch)
        assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "written": 1})
        status_key = keys.status_key(task["task_id"])
        written = store.value(status_key)
        assert written is not None and b'"running"' in written
        wrong = {
            "reports": [report(task["task_id"], "exited"), report(task["task_id"], "exploded")]
        }
        refused = await api.post(f"/v1/agent/{NODE}/reports", json=wrong)
        assert refused.status_code == 422
        assert [d["path"] for d in refused.json()["details"]] == ["reports.1.state"]
        assert store.value(status_key) == written  # not even the batch's good first report
        missing = await api.post(f"/v1/agent/{NODE}/reports", content=b"")
        assert missing.status_code == 422


def reports_counted(metrics: str) -> dict[str, float]:
    prefix = "theseus_task_reports_received_total{outcome="
    return {
        line[len(prefix) :].split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(prefix)
    }


async def test_reports_are_counted_by_outcome_and_those_of_unknown_tasks_show() -> None:
    """A report of a task this server's view lacks is dropped (the task is gone, or not seen
    yet): ``theseus_task_reports_received_total`` shows it, where it used to vanish."""
    async with inprocess_api() as api:
        (task,) = (await register_with_tasks(api, 1))["tasks"]
        batch = {"reports": [report(task["task_id"]), report("web-nosuchtask")]}
        answer = await api.post(f"/v1/agent/{NODE}/reports", json=batch)
        assert (answer.status_code, answer.json()) == (200, {"accepted": 2, "written": 1})
        again = await api.post(f"/v1/agent/{NODE}/reports", json={"reports": batch["reports"][:1]})
        assert again.json() == {"accepted": 1, "written": 0}
        counted = reports_counted((await api.get("/metrics")).text)
        assert counted == {"written": 1, "unchanged": 1, "unknown_task": 1, "other_node": 0}


async def test_assignments_wait_for_a_change_after_the_index_given() -> None:
    async with inprocess_api() as api:
        listed = await register_with_tasks(api, 2)
        assert listed["heartbeat_interval"] > 0
        assert listed["poll_wait"] is None  # a small cluster: the agent's own wait
        started = time.monotonic()
        unchanged = await api.get(
            f"/v1/agent/{NODE}/assignments", params={"index": listed["index"], "wait": 0.3}
        )
        assert time.monotonic() - started >= 0.3  # nothing changed: it waited it out
        assert unchanged.json()["tasks"] == listed["tasks"]
        bad = await api.get(f"/v1/agent/{NODE}/assignments", params={"index": "first"})
        assert bad.status_code == 422
        assert [d["path"] for d in bad.json()["details"]] == ["query.index"]


async def test_a_cluster_big_for_its_heartbeat_cap_advises_longer_polls() -> None:
    """One node against a cap of 0.01 heartbeats a second is a big cluster: its polls are
    advised to wait 200 s (``server.heartbeats.advised_poll_wait``)."""
    async with inprocess_api(ServerConfig(max_heartbeats_per_second=0.01)) as api:
        listed = await register_with_tasks(api, 1)
        assert listed["poll_wait"] == 200.0


async def post_and_hang_up(app: Any, path: str, body: bytes) -> int:
    """POST ``body`` to ``app`` as an agent whose client gave up once it had sent it (its
    timeout ran out and it closed the connection): the status the server answered."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"theseus"), (b"content-type", b"application/json")],
        "client": ("127.0.0.2", 40000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    (status,) = statuses
    return status


async def test_a_report_its_agent_gave_up_on_while_it_waited_is_left_undone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An overloaded server still did the work of requests whose agents had timed out, and the
    agents sent them again: the work doubled. A report batch whose agent has hung up by its
    turn is now answered 499 and not written; an agent still there is served as before."""
    monkeypatch.setattr(agent_routes, "ABANDON_CHECK_AFTER", 0.0)  # ask every request
    store = MemoryStore()
    async with inprocess_server(store=store) as (app, api):
        (task,) = (await register_with_tasks(api, 1))["tasks"]
        status_key = keys.status_key(task["task_id"])
        batch = {"reports": [report(task["task_id"])]}
        path = f"/v1/agent/{NODE}/reports"
        assert await post_and_hang_up(app, path, json.dumps(batch).encode()) == 499
        assert store.value(status_key) is None, "an abandoned report was written"
        answer = await api.post(path, json=batch)
        assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "written": 1})
        assert store.value(status_key) is not None
        metrics = (await api.get("/metrics")).text
        assert 'route="/v1/agent/{node}/reports",status="499"} 1.0' in metrics


def test_the_openapi_document_describes_the_hot_routes() -> None:
    paths = create_app(ServerConfig()).openapi()["paths"]
    heartbeat = paths["/v1/agent/{node}/heartbeat"]["post"]
    assert "HeartbeatBody" in str(heartbeat["requestBody"])
    assert "HeartbeatAnswer" in str(heartbeat["responses"]["200"])
    polled = paths["/v1/agent/{node}/assignments"]["get"]
    assert {p["name"] for p in polled["parameters"]} == {"node", "index", "wait"}
    assert "AssignmentList" in str(polled["responses"]["200"])
    reported = paths["/v1/agent/{node}/reports"]["post"]
    assert "ReportBatch" in str(reported["requestBody"])
    assert "ReportAnswer" in str(reported["responses"]["200"])
    assert "/v1/agent/register" in paths  # and the routes FastAPI serves, as before


async def test_a_report_asked_at_an_index_waits_for_the_view_and_carries_its_write() -> None:
    """An agent that moves to another server reports a task that server's view may not have
    yet (it learned it from the first server), asking for the index it was made at
    (``theseus.api.peer_index``). Here the view stands still while a task is made: a report
    of it without an index is dropped as the report of a gone task; with the index it waits
    until the view has the task, and is written. Its answer carries the revision written at:
    what the agent asks of the next server it moves to."""
    store = MemoryStore()
    async with inprocess_api(store=store) as api:
        (first,) = (await register_with_tasks(api, 1))["tasks"]
        encoded = store.value(keys.task_key(first["task_id"])) or b""
        record = TaskRecord.model_validate_json(encoded)
        made_elsewhere = record.model_copy(update={"id": record.id + "x"})
        store.faults.hang("watch")
        store.break_watches()  # the view stops here: its watch comes back into a hang
        await store.faults.wait_hanging("watch")
        made = Put(keys.task_key(made_elsewhere.id), encode(made_elsewhere))
        made_at = await store.commit([made])
        assert made_at is not None
        path = f"/v1/agent/{NODE}/reports"
        batch = {"reports": [report(made_elsewhere.id)]}
        unasked = await api.post(path, json=batch)
        assert unasked.json() == {"accepted": 1, "written": 0}  # a task this view lacks
        asked = asyncio.create_task(api.post(path, json=batch, headers={HEADER: str(made_at)}))
        done, _ = await asyncio.wait([asked], timeout=0.3)
        assert not done, "the report was decided before the view reached its index"
        store.faults.heal()
        answer = await asyncio.wait_for(asked, 5.0)
        assert answer.json() == {"accepted": 1, "written": 1}
        assert store.value(keys.status_key(made_elsewhere.id)) is not None
        assert int(answer.headers[HEADER]) == store.revision  # the statuses' write
