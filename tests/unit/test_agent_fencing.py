"""An agent cut off from every server fences itself: the pure decision (``theseus.agent.
fencing``: which tasks, when, what counts as reaching a server), the runner's fence step (a
fenced task stops and never starts again here) and the agent's loop against a fake server
that stops answering, answers 503 or 403, then answers again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.kit.builders import make_assignment
from tests.kit.fake_driver import FakeDriver
from tests.kit.fake_server import FakeServer
from tests.kit.runner import drain, settled
from tests.kit.wait import wait_until_async
from theseus.agent import fencing
from theseus.agent.agent import Agent
from theseus.agent.config import AgentConfig
from theseus.agent.decide import Local, Phase, Step, next_step
from theseus.agent.drivers.base import Owner
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.model.spec import SpecError, parse_deploy_document
from theseus.server.heartbeats import advised_interval, heartbeat_timing

P = Phase

# --- the spec ---------------------------------------------------------------------------


def test_the_setting_defaults_to_30_seconds_and_takes_never() -> None:
    def setting(value: object) -> object:
        group = {"image": "img", "stop_after_server_loss_seconds": value}
        spec = parse_deploy_document({"deploy": {"web": group}}).deploy["web"]
        return spec.stop_after_server_loss_seconds

    assert setting(None) == 30.0  # null: the default
    assert setting(5) == 5.0
    assert setting("never") == "never"


@pytest.mark.parametrize("value", [0, -1, 0.5, 86_401, "30", "30s", True, float("nan")])
def test_a_bad_setting_is_refused_naming_the_field(value: object) -> None:
    group = {"image": "img", "stop_after_server_loss_seconds": value}
    with pytest.raises(SpecError) as refused:
        parse_deploy_document({"deploy": {"web": group}})
    (error,) = refused.value.errors
    assert error["path"] == "deploy.web.stop_after_server_loss_seconds"
    assert "or 'never'" in error["message"]


def test_the_setting_restarts_nothing() -> None:
    """It only steers the agent: changing it (or adding the key) keeps the version."""
    base = make_assignment("t1").spec
    for value in (5.0, "never"):
        other = base.model_copy(update={"stop_after_server_loss_seconds": value})
        assert other.version() == base.version()


# --- the pure decision ------------------------------------------------------------------


def test_due_once_the_silence_reaches_each_setting() -> None:
    delays = {"a": 5.0, "b": 30.0, "c": None}
    assert fencing.due(104.9, 100.0, delays, 1.0) == []
    assert fencing.due(105.0, 100.0, delays, 1.0) == ["a"]
    assert fencing.due(131.0, 100.0, delays, 1.0) == ["a", "b"]  # never: never
    assert fencing.due(10_000.0, 100.0, {"c": None}, 1.0) == []


def test_never_sooner_than_three_heartbeat_intervals() -> None:
    """A big cluster's agents heartbeat every few seconds, and no server declares the node
    lost before three intervals (its lease): a short setting waits for as long."""
    assert fencing.due(111.9, 100.0, {"a": 5.0}, 4.0) == []
    assert fencing.due(112.0, 100.0, {"a": 5.0}, 4.0) == ["a"]
    assert fencing.next_due(106.0, 100.0, {"a": 5.0}, 4.0) == pytest.approx(6.0)


def test_never_before_the_server_could_declare_the_node_lost() -> None:
    """Whatever interval the server advises, the node's lease lasts at least three of them
    (``theseus.server.heartbeats``), so a fence never comes before the shortest lease the
    server grants for that pace could end."""
    for nodes in (1, 99, 100, 101, 1_000, 5_000, 20_000):
        target = heartbeat_timing(nodes, liveness_timeout=3, max_per_second=100.0)
        for lease_ttl in (3, 4, 10, 30, target.ttl, 3 * target.ttl):
            interval = advised_interval(lease_ttl, target)
            fence_at = fencing.effective(0.0, interval)
            assert fence_at >= min(lease_ttl, target.ttl) - 1e-9, (nodes, lease_ttl)


def test_next_due_says_when_to_look_again() -> None:
    delays = {"a": 5.0, "b": 30.0, "c": None}
    assert fencing.next_due(101.0, 100.0, delays, 1.0) == pytest.approx(4.0)
    assert fencing.next_due(101.0, 100.0, {"b": 30.0}, 1.0) == pytest.approx(29.0)
    assert fencing.next_due(200.0, 100.0, delays, 1.0) == 0.0  # overdue
    assert fencing.next_due(101.0, 100.0, {"c": None}, 1.0) is None
    assert fencing.next_due(101.0, 100.0, {}, 1.0) is None


def test_candidates_are_the_tasks_meant_to_run_here_and_not_over() -> None:
    assigned = {
        "new": make_assignment("new", stop_after_server_loss_seconds=5),
        "up": make_assignment("up"),
        "starting": make_assignment("starting"),
        "never": make_assignment("never", stop_after_server_loss_seconds="never"),
        "fenced": make_assignment("fenced"),
        "exited": make_assignment("exited"),
        "failed": make_assignment("failed"),
        "stopping": make_assignment("stopping", "stop"),
    }
    local = {
        "up": Local(P.RUNNING, True, "running"),
        "starting": Local(P.STARTING, False, "starting"),
        "never": Local(P.RUNNING, True, "running"),
        "fenced": Local(P.RUNNING, True, "running", fenced=True),
        "exited": Local(P.EXITED, True, "exited"),
        "failed": Local(P.FAILED, False, "failed"),
        "stopping": Local(P.RUNNING, True, "running"),
    }
    assert fencing.candidates(assigned, local) == {
        "new": 5.0,
        "up": 30.0,
        "starting": 30.0,
        "never": None,
    }


def test_the_reason_says_why() -> None:
    assert fencing.reason(30.4) == "stopped: no server reached for 30 s (fenced)"


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (Local(P.RUNNING, True, "running", fenced=True), Step.FENCE),
        (Local(P.NEW, fenced=True), Step.FENCE),  # never started once fenced
        (Local(P.RUNNING, True, "running", unhealthy=True, fenced=True), Step.FENCE),
        (Local(P.EXITED, True, "running", fenced=True), Step.REPORT),
        (Local(P.EXITED, True, "exited", fenced=True), None),  # never restarted
        (Local(P.EXITED, False, "exited", fenced=True), None),
    ],
)
def test_next_step_of_a_fenced_task_meant_to_run(local: Local, expected: Step | None) -> None:
    assert next_step("run", local) is expected


def test_the_servers_word_still_goes_for_a_fenced_task() -> None:
    exited = Local(P.EXITED, True, "exited", fenced=True)
    assert next_step("stop", exited) is None  # kept, for its logs, until the record goes
    assert next_step(None, exited) is Step.DISCARD
    assert next_step("stop", Local(P.RUNNING, True, "running", fenced=True)) is Step.STOP


# --- the runner ---------------------------------------------------------------------------


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def runner(driver: FakeDriver) -> TaskRunner:
    return TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue())


async def test_a_fenced_task_stops_reports_why_and_never_starts_again(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([make_assignment("t1"), make_assignment("t2")])
    await settled(runner)
    drain(runner)
    runner.fence(["t1"], fencing.reason(30))
    await settled(runner)
    (report,) = runner.reports._pending
    assert (report.task_id, report.state) == ("t1", "exited")
    assert report.message == "stopped: no server reached for 30 s (fenced)"
    assert ("stop", "c-t1") in driver.calls
    assert "c-t1" in driver.containers  # kept (its logs) until the server says
    drain(runner)
    runner.apply([make_assignment("t1"), make_assignment("t2")])  # a stale list: still "run"
    await settled(runner)
    assert sorted(c for c in driver.calls if c[0] == "start") == [("start", "t1"), ("start", "t2")]
    assert drain(runner) == []
    runner.apply([make_assignment("t2")])  # the server replaced it: the container goes
    await settled(runner)
    assert "c-t1" not in driver.containers
    assert "t1" not in runner.slots
    assert drain(runner) == []


async def test_a_task_fenced_before_it_started_is_never_started(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    driver.gate = asyncio.Event()  # starts hang until the gate opens
    runner.apply([make_assignment("t1"), make_assignment("t2")])
    runner.fence(["t2"], fencing.reason(30))  # before its worker ran
    await wait_until_async(lambda: ("start", "t1") in driver.calls)
    runner.fence(["t1"], fencing.reason(30))  # while its start is in flight
    driver.gate.set()
    await settled(runner)
    assert [c for c in driver.calls if c[0] == "start"] == [("start", "t1")]
    assert ("stop", "c-t1") in driver.calls  # stopped as soon as its start ended
    assert sorted(drain(runner)) == [
        ("t1", "exited"),
        ("t1", "running"),
        ("t1", "starting"),
        ("t2", "exited"),
    ]
    assert runner.slots["t2"].handle is None


# --- the agent against a fake server ---------------------------------------------------------


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[FakeServer, Agent]]:
    server = FakeServer()
    agent = Agent(agent_config(tmp_path, server), SimDriver())
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_until_async(lambda: server.registrations >= 1)
        yield server, agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def deploy_two(server: FakeServer) -> None:
    """``quick`` is fenced after 1 s without a server; ``steady`` never."""
    await server.set_tasks(
        [
            make_assignment("quick", ports={}, stop_after_server_loss_seconds=1),
            make_assignment("steady", ports={}, stop_after_server_loss_seconds="never"),
        ]
    )
    for task_id in ("quick", "steady"):
        await wait_until_async(lambda t=task_id: server.states(t) == ["starting", "running"])


def running_here(agent: Agent) -> set[str]:
    return {t for t, slot in agent.runner.slots.items() if slot.phase is Phase.RUNNING}


@pytest.mark.parametrize("failure", ["cut", 503, 403])
async def test_an_agent_that_reaches_no_server_stops_its_tasks_after_their_setting(
    agent: tuple[FakeServer, Agent], failure: str | int
) -> None:
    """Unreachable, a server cut off from etcd (503) and a refused certificate (403) alike:
    no server vouched for the node, whose tasks the servers replace."""
    server, runner_agent = agent
    await deploy_two(server)
    if failure == "cut":
        server.cut = True
    else:
        server.heartbeat_status = int(failure)
    loop = asyncio.get_running_loop()
    since = loop.time()
    await wait_until_async(lambda: running_here(runner_agent) == {"steady"}, 5.0, "fenced")
    assert loop.time() - since >= 0.9  # not before its setting (less the last beat's age)
    slot = runner_agent.runner.slots["quick"]
    assert slot.phase is Phase.EXITED and slot.fenced
    assert slot.fenced.endswith("(fenced)")
    # The server hears it once it answers again, and no task starts again on its own.
    server.cut, server.heartbeat_status = False, None
    await wait_until_async(lambda: server.states("quick")[-1:] == ["exited"], 5.0, "reported")
    (report,) = [r for r in server.reports if r.task_id == "quick" and r.state == "exited"]
    assert report.message is not None and "no server reached" in report.message
    await server.set_tasks(  # the servers' answer: "quick" was replaced elsewhere
        [make_assignment("steady", ports={}, stop_after_server_loss_seconds="never")]
    )
    await wait_until_async(lambda: "quick" not in runner_agent.runner.slots, 5.0, "removed")
    assert running_here(runner_agent) == {"steady"}


async def test_heartbeats_answered_keep_every_task_running(
    agent: tuple[FakeServer, Agent],
) -> None:
    server, runner_agent = agent
    await deploy_two(server)
    beats = server.heartbeats
    await wait_until_async(lambda: server.heartbeats > beats + 60, 5.0, "1.2 s of heartbeats")
    assert running_here(runner_agent) == {"quick", "steady"}


async def test_an_outage_shorter_than_the_setting_stops_nothing(
    agent: tuple[FakeServer, Agent],
) -> None:
    server, runner_agent = agent
    await server.set_tasks([make_assignment("t1", ports={}, stop_after_server_loss_seconds=2)])
    await wait_until_async(lambda: server.states("t1") == ["starting", "running"])
    server.cut = True
    await asyncio.sleep(0.5)  # an outage of half a second, well under the setting
    server.cut = False
    beats = server.heartbeats
    await wait_until_async(lambda: server.heartbeats > beats + 100, 5.0, "2 s of heartbeats")
    assert running_here(runner_agent) == {"t1"}
    assert server.states("t1") == ["starting", "running"]


# --- an agent restarted during the partition ---------------------------------------------------


def test_adopted_containers_are_fenced_by_their_label() -> None:
    running = Local(P.RUNNING, has_container=True)
    local = {"a": running, "b": running, "c": running, "d": running, "e": Local(P.EXITED)}
    labels = {"a": "8", "b": "never", "c": None, "d": "soon", "e": "8"}
    # No label (an older agent's container) or one that does not parse: left alone.
    assert fencing.adopted_candidates(local, labels) == {"a": 8.0, "b": None}


def agent_config(tmp_path: Path, server: FakeServer) -> AgentConfig:
    return AgentConfig(
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


async def test_an_agent_restarted_while_cut_off_fences_what_it_adopted(tmp_path: Path) -> None:
    """The containers keep running across the agent's restart (the sim driver, shared, plays
    Docker), the network is cut meanwhile: the new agent never reaches a server, so it reads
    each container's setting from its label and stops ``quick`` 1 s after it started."""
    server, driver = FakeServer(), SimDriver()
    first, stop = Agent(agent_config(tmp_path, server), driver), asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    await wait_until_async(lambda: server.registrations >= 1)
    await deploy_two(server)
    stop.set()
    await asyncio.wait_for(running, 5)
    server.cut = True
    second = Agent(agent_config(tmp_path, server), driver)
    loop = asyncio.get_running_loop()
    since = loop.time()
    restarted = asyncio.create_task(second.run(asyncio.Event()))
    try:
        await wait_until_async(lambda: running_here(second) == {"steady"}, 5.0, "fenced")
        assert loop.time() - since >= 0.9  # its setting, counted from the agent's start
        slot = second.runner.slots["quick"]
        assert slot.phase is Phase.EXITED and slot.fenced and slot.fenced.endswith("(fenced)")
        assert server.registrations == 1  # all of it before any server answered
        server.cut = False  # the server hears of it once the network heals
        await wait_until_async(lambda: server.states("quick")[-1:] == ["exited"], 5.0, "reported")
    finally:
        restarted.cancel()
        await asyncio.gather(restarted, return_exceptions=True)


async def test_a_restarted_agent_that_reaches_a_server_fences_nothing(tmp_path: Path) -> None:
    server, driver = FakeServer(), SimDriver()
    first, stop = Agent(agent_config(tmp_path, server), driver), asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    await wait_until_async(lambda: server.registrations >= 1)
    await deploy_two(server)
    stop.set()
    await asyncio.wait_for(running, 5)
    second, stop = Agent(agent_config(tmp_path, server), driver), asyncio.Event()
    restarted = asyncio.create_task(second.run(stop))
    try:
        await wait_until_async(lambda: server.registrations >= 2, 5.0, "registered again")
        beats = server.heartbeats
        await wait_until_async(lambda: server.heartbeats > beats + 60, 5.0, "1.2 s of beats")
        assert running_here(second) == {"quick", "steady"}
    finally:
        stop.set()
        await asyncio.wait_for(restarted, 5)
