"""The agent's loops against an in-memory fake server (httpx.MockTransport) and the sim
driver: registration, re-registration on 404, long-poll, reports through outages, shutdown
without stopping tasks, and the HTTP endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.kit.builders import make_assignment
from tests.kit.fake_server import FakeServer
from tests.kit.wait import wait_until_async
from theseus.agent.agent import Agent
from theseus.agent.config import AgentConfig
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.http import AgentHttpServer, create_app
from theseus.agent.reports import ReportQueue
from theseus.api.agent_client import AsyncServerClient
from theseus.api.schemas import ReportBatch, TaskReport


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
        await wait_until_async(lambda: server.registrations >= 1)
        yield server, agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_runs_stops_and_reports(running_agent: tuple[FakeServer, Agent]) -> None:
    server, agent = running_agent
    await server.set_tasks([make_assignment("t1", ports={}), make_assignment("t2", ports={})])
    await wait_until_async(lambda: server.states("t1") == ["starting", "running"])
    await wait_until_async(lambda: server.states("t2") == ["starting", "running"])
    assert server.reports[-1].container_id == "sim-t2" or server.reports[-1].container_id
    await server.set_tasks(
        [make_assignment("t1", "stop", ports={}), make_assignment("t2", ports={})]
    )
    await wait_until_async(lambda: server.states("t1") == ["starting", "running", "stopped"])
    await server.set_tasks([make_assignment("t2", ports={})])
    await wait_until_async(lambda: "t1" not in agent.runner.slots)


async def test_the_long_poll_asks_for_the_wait_the_server_advises(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    """A big cluster's server advises longer polls (``server.heartbeats.advised_poll_wait``);
    without advice the agent asks for its own ``poll_wait`` again."""
    server, _ = running_agent
    await wait_until_async(lambda: server.poll_waits == [5.0])  # its own, then it waits
    server.poll_wait = 0.05
    await server.set_tasks([make_assignment("t1", ports={})])  # answers the poll at once
    await wait_until_async(lambda: server.poll_waits[-3:] == [0.05] * 3)
    server.poll_wait = None
    await wait_until_async(lambda: server.poll_waits[-1] == 5.0)


async def test_registers_again_when_the_server_forgets_the_node(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    server, _ = running_agent
    await wait_until_async(lambda: server.heartbeats >= 2)
    server.forget_node = True
    await wait_until_async(lambda: server.registrations >= 2)
    beats = server.heartbeats
    await wait_until_async(lambda: server.heartbeats > beats + 2)  # and heartbeats go on


async def test_a_slow_answer_does_not_push_the_next_heartbeat_out(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    """Heartbeats go one interval after the last one was sent, however long its answer took:
    the node's lease (and the fence's count of silence) runs from the sending. Answers that
    take 0.3 s at a pace of 0.5 s: one heartbeat every 0.45-0.5 s (up to a fifth early, at
    random), not every 0.8 s."""
    server, _ = running_agent
    server.heartbeat_pace = 0.5
    await wait_until_async(lambda: server.heartbeats >= 2)  # the agent has heard the pace
    server.heartbeat_answer_delay = 0.3
    first = len(server.heartbeat_arrivals)
    await wait_until_async(lambda: len(server.heartbeat_arrivals) >= first + 5, 10.0)
    arrivals = server.heartbeat_arrivals[first : first + 5]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert 0.38 <= sum(gaps) / len(gaps) <= 0.65, gaps


async def test_reports_survive_a_server_outage_in_order(
    running_agent: tuple[FakeServer, Agent],
) -> None:
    server, _ = running_agent
    server.reports_down = 3
    await server.set_tasks([make_assignment("t1", ports={})])
    await wait_until_async(lambda: server.states("t1") == ["starting", "running"])
    await server.set_tasks([make_assignment("t1", "stop", ports={})])
    await wait_until_async(lambda: server.states("t1") == ["starting", "running", "stopped"])


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
    await server.set_tasks([make_assignment("t1", ports={})])
    await wait_until_async(lambda: server.states("t1") == ["starting", "running"])
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
    runner.apply([make_assignment("t1", ports={})])
    await wait_until_async(lambda: runner.slots["t1"].handle is not None)
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
