"""The agent's loops against an in-memory fake server (httpx.MockTransport) and the sim
driver: registration, re-registration on 404, long-poll, reports through outages, shutdown
without stopping tasks, and the HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from theseus.agent.agent import Agent, AgentConfig
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.http import AgentHttpServer, create_app
from theseus.agent.reports import ReportQueue
from theseus.api.client import AsyncServerClient
from theseus.api.schemas import Assignment, ReportBatch, TaskReport
from theseus.model.spec import GroupSpec


class FakeServer:
    """Just enough of the server's agent API, with switches for failures."""

    def __init__(self) -> None:
        self.cluster_id = "c-1"
        self.registrations = 0
        self.heartbeats = 0
        self.forget_node = False  # next heartbeat answers 404
        self.reports_down = 0  # the next N report posts answer 503
        self.reports: list[TaskReport] = []
        self.index = 1
        self.tasks: list[Assignment] = []
        self.changed = asyncio.Condition()

    async def set_tasks(self, tasks: list[Assignment]) -> None:
        async with self.changed:
            self.tasks = tasks
            self.index += 1
            self.changed.notify_all()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/agent/register":
            self.registrations += 1
            body = json.loads(request.content)
            node = {k: body[k] for k in ("name", "address", "agent_port", "driver", "cpus")}
            node.update(mem=body["mem"], port_range=body["port_range"], status="ready")
            node.update(attributes=body["attributes"], used_cpus=0.0, used_mem=0.0)
            node.update(tasks=0, registered_at=0.0)
            answer = {
                "cluster_id": self.cluster_id,
                "node": node,
                "heartbeat_interval": 0.02,
                "liveness_timeout": 1.0,
            }
            return httpx.Response(200, json=answer)
        if path.endswith("/heartbeat"):
            self.heartbeats += 1
            if self.forget_node:
                self.forget_node = False
                return httpx.Response(404, json={"message": "unknown node"})
            return httpx.Response(200, json={})
        if path.endswith("/assignments"):
            index = int(request.url.params["index"])
            wait = float(request.url.params["wait"])
            async with self.changed:
                if index >= self.index:
                    try:
                        async with asyncio.timeout(wait):
                            await self.changed.wait_for(lambda: self.index > index)
                    except TimeoutError:
                        pass
                body = {
                    "index": self.index,
                    "tasks": [t.model_dump(mode="json") for t in self.tasks],
                }
            return httpx.Response(200, json=body)
        if path.endswith("/reports"):
            if self.reports_down:
                self.reports_down -= 1
                return httpx.Response(503, json={"message": "not the leader yet"})
            self.reports.extend(ReportBatch.model_validate_json(request.content).reports)
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"message": f"no route {path}"})

    def states(self, task_id: str) -> list[str]:
        return [r.state for r in self.reports if r.task_id == task_id]


def assignment(task_id: str, desired: str = "run") -> Assignment:
    spec = GroupSpec.model_validate({"image": "img"})
    return Assignment.model_validate(
        {
            "task_id": task_id,
            "service": "web",
            "labels": [],
            "group": "web/[]",
            "version": spec.version(),
            "desired": desired,
            "spec": spec,
            "host_ports": {},
        }
    )


async def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``check`` until it is truthy; ``TimeoutError`` at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


@pytest.fixture
async def running_agent(tmp_path: Path) -> AsyncIterator[tuple[FakeServer, Agent]]:
    server = FakeServer()
    config = AgentConfig(
        server="http://fake",
        name="n1",
        address="127.0.0.2",
        cpus=2,
        mem=1024,
        driver="sim",
        state_dir=tmp_path,
        serve_http=False,
        handle_signals=False,
        transport=httpx.MockTransport(server.handle),
        poll_wait=5,
    )
    agent = Agent(config, SimDriver())
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: server.registrations >= 1)
        yield server, agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_runs_stops_and_reports(running_agent: tuple[FakeServer, Agent]) -> None:
    server, agent = running_agent
    await server.set_tasks([assignment("t1"), assignment("t2")])
    await until(lambda: server.states("t1") == ["starting", "running"])
    await until(lambda: server.states("t2") == ["starting", "running"])
    assert server.reports[-1].container_id == "sim-t2" or server.reports[-1].container_id
    await server.set_tasks([assignment("t1", "stop"), assignment("t2")])
    await until(lambda: server.states("t1") == ["starting", "running", "stopped"])
    await server.set_tasks([assignment("t2")])
    await until(lambda: "t1" not in agent.runner.slots)


async def test_registers_again_when_the_server_forgets_the_node(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    server, _ = running_agent
    await until(lambda: server.heartbeats >= 2)
    server.forget_node = True
    await until(lambda: server.registrations >= 2)
    beats = server.heartbeats
    await until(lambda: server.heartbeats > beats + 2)  # and heartbeats go on


async def test_reports_survive_a_server_outage_in_order(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    server, _ = running_agent
    server.reports_down = 3
    await server.set_tasks([assignment("t1")])
    await until(lambda: server.states("t1") == ["starting", "running"])
    await server.set_tasks([assignment("t1", "stop")])
    await until(lambda: server.states("t1") == ["starting", "running", "stopped"])


async def test_shutdown_leaves_tasks_running(tmp_path: Path) -> None:
    server = FakeServer()
    driver = SimDriver()
    config = AgentConfig(
        server="http://fake",
        name="n1",
        cpus=1,
        mem=512,
        state_dir=tmp_path,
        serve_http=False,
        handle_signals=False,
        transport=httpx.MockTransport(server.handle),
        poll_wait=5,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Agent(config, driver).run(stop))
    await server.set_tasks([assignment("t1")])
    await until(lambda: server.states("t1") == ["starting", "running"])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [o.task_id for o in await driver.list_tasks()] == ["t1"]


async def test_report_queue_keeps_order_across_failures() -> None:
    queue = ReportQueue()
    sent: list[str] = []
    failures = iter([True, True, False, False, False])

    async def send(batch: ReportBatch) -> None:
        if next(failures, False):
            raise ConnectionError("away")
        sent.extend(r.state for r in batch.reports)

    for state in ("starting", "running", "exited"):
        queue.put(TaskReport(task_id="t", state=state, at=0.0))
    sender = asyncio.create_task(queue.run(send))
    try:
        assert await queue.drained(5.0)
        assert sent == ["starting", "running", "exited"]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def test_http_endpoint_health_and_logs() -> None:
    driver = SimDriver()
    from theseus.agent.drivers.base import Owner
    from theseus.agent.runner import TaskRunner

    owner = Owner("n1", "127.0.0.1", "c-1")
    runner = TaskRunner(driver, owner, ReportQueue())
    runner.apply([assignment("t1")])
    await until(lambda: runner.slots["t1"].handle is not None)
    server_client = AsyncServerClient("http://127.0.0.1:9")  # never called here
    server = AgentHttpServer(create_app(runner, "n1", server_client), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            health = await client.get("/v1/health")
            assert health.json() == {"status": "ok", "node": "n1"}
            logs = await client.get("/v1/tasks/t1/logs", params={"follow": "false"})
            assert logs.status_code == 200
            assert "simulated task t1" in logs.text
            missing = await client.get("/v1/tasks/nope/logs")
            assert missing.status_code == 404
            assert "nope" in missing.json()["message"]
    finally:
        await server.stop()
        await runner.close()
        await server_client.aclose()
