"""The task runner against an in-memory driver: starts, stops, exits, adoption, reports."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.builders import make_assignment
from tests.kit.fake_driver import FakeDriver
from tests.kit.runner import drain, settled
from tests.kit.wait import wait_until_async
from theseus.agent.decide import Phase
from theseus.agent.drivers.base import (
    ExitNotice,
    Observed,
    Owner,
)
from theseus.agent.launch import launch_of
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.agent.slots import UnknownTask


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def runner(driver: FakeDriver) -> TaskRunner:
    return TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue())


async def test_starts_assigned_tasks_and_reports_starting_then_running(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([make_assignment("t1"), make_assignment("t2")])
    await settled(runner)
    assert sorted(drain(runner)) == sorted(
        [("t1", "starting"), ("t1", "running"), ("t2", "starting"), ("t2", "running")]
    )
    runner.apply(
        [make_assignment("t1"), make_assignment("t2")]
    )  # the same list again: nothing to do
    await settled(runner)
    assert drain(runner) == []
    assert sorted(c for c in driver.calls if c[0] == "start") == [("start", "t1"), ("start", "t2")]


async def test_launch_carries_labels_env_and_shared_container_ports(runner: TaskRunner) -> None:
    launch = launch_of(make_assignment("t1"), runner.owner)
    assert launch.labels["theseus.cluster"] == "cluster-1"
    assert launch.labels["theseus.node"] == "n1"
    assert launch.labels["theseus.task"] == "t1"
    assert [(p.container_port, p.host_port) for p in launch.ports] == [(5000, 31001), (5000, 31002)]
    assert launch.environment["PORT_API"] == "31001"
    assert "THESEUS_DISCOVERY" not in launch.environment  # no driver address given


async def test_started_tasks_get_the_drivers_discovery_address(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([make_assignment("t1")])
    await settled(runner)
    environment = driver.launches["t1"].environment
    assert environment["THESEUS_DISCOVERY"] == "unix:///run/theseus/agent.sock"


async def test_stop_reports_stopped_and_removes(runner: TaskRunner, driver: FakeDriver) -> None:
    runner.apply([make_assignment("t1")])
    await settled(runner)
    drain(runner)
    runner.apply([make_assignment("t1", "stop")])
    await settled(runner)
    assert drain(runner) == [("t1", "stopped")]
    assert driver.calls[-2:] == [("stop", "c-t1"), ("remove", "c-t1")]
    runner.apply([])
    await settled(runner)
    assert runner.slots == {}
    assert drain(runner) == []


async def test_exit_is_reported_never_restarted_and_kept_until_unassigned(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([make_assignment("t1")])
    await settled(runner)
    drain(runner)
    runner.observe_exit(driver.die("t1", 137))
    assert runner.reports._pending[-1].exit_code == 137  # reported synchronously: no delay
    await settled(runner)
    assert drain(runner) == [("t1", "exited")]
    runner.apply([make_assignment("t1")])
    await settled(runner)
    assert [c for c in driver.calls if c[0] == "start"] == [("start", "t1")]
    assert "c-t1" in driver.containers  # logs stay readable
    runner.apply([])
    await settled(runner)
    assert "c-t1" not in driver.containers
    assert drain(runner) == []


async def test_exit_during_start_is_not_lost(runner: TaskRunner, driver: FakeDriver) -> None:
    driver.gate = asyncio.Event()
    runner.apply([make_assignment("t1")])
    await wait_until_async(lambda: bool(driver.calls))
    runner.observe_exit(ExitNotice("t1", "c-t1", 1))
    driver.gate.set()
    await settled(runner)
    assert drain(runner) == [("t1", "starting"), ("t1", "running"), ("t1", "exited")]


async def test_failed_start_reports_the_driver_message_once(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    driver.fail_start = "image 'img' is not present on node n1"
    runner.apply([make_assignment("t1")])
    await settled(runner)
    reports = list(runner.reports._pending)
    assert [(r.state, r.message) for r in reports] == [
        ("starting", None),
        ("failed", "image 'img' is not present on node n1"),
    ]
    drain(runner)
    runner.apply([make_assignment("t1")])
    await settled(runner)
    assert drain(runner) == []


async def test_adoption_keeps_running_containers_and_discards_foreign_ones(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    driver.containers = {
        "c-keep": Observed("keep", "c-keep", True),
        "c-old": Observed("old", "c-old", True),
        "c-dead": Observed("dead", "c-dead", False, 3),
    }
    await runner.resync()
    await settled(runner)
    assert drain(runner) == []  # nothing is decided before the first assignment list
    runner.apply([make_assignment("keep"), make_assignment("dead")])
    await settled(runner)
    assert sorted(drain(runner)) == [("dead", "exited"), ("keep", "running")]
    assert not [c for c in driver.calls if c[0] == "start"]
    assert set(driver.containers) == {"c-keep", "c-dead"}
    assert runner.slots["keep"].handle == "c-keep"


async def test_unassigned_stop_is_confirmed_without_a_container(runner: TaskRunner) -> None:
    runner.apply([make_assignment("t1", "stop")])
    await settled(runner)
    assert drain(runner) == [("t1", "stopped")]


async def test_resync_finds_a_missed_exit_and_a_vanished_container(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([make_assignment("t1"), make_assignment("t2")])
    await settled(runner)
    drain(runner)
    driver.die("t1", 2)  # no notice: the event was missed
    del driver.containers["c-t2"]  # removed behind our back
    await runner.resync()
    await settled(runner)
    assert sorted(drain(runner)) == [("t1", "exited"), ("t2", "exited")]
    assert runner.slots["t1"].exit_code == 2
    assert runner.slots["t2"].phase is Phase.EXITED


async def test_logs_of_unknown_task_raise(runner: TaskRunner) -> None:
    with pytest.raises(UnknownTask):
        runner.logs("nope", False, None)


async def test_many_starts_run_concurrently(runner: TaskRunner, driver: FakeDriver) -> None:
    driver.gate = asyncio.Event()
    runner.apply([make_assignment(f"t{i}") for i in range(50)])
    await wait_until_async(lambda: len(driver.calls) == 50)  # all 50 starts in flight at once
    driver.gate.set()
    await settled(runner)
    assert sum(1 for _, s in drain(runner) if s == "running") == 50


async def test_an_unknown_container_starting_asks_for_a_resync_at_once(
    runner: TaskRunner,
) -> None:
    runner.apply([make_assignment("t1")])
    await settled(runner)
    own = runner.slots["t1"].handle
    assert own is not None
    runner.observe_exit(ExitNotice("t1", own, None, started=True))  # our own start
    assert not runner.resync_soon.is_set()
    # Started by a previous agent killed mid-start: not known here.
    runner.observe_exit(ExitNotice("t9", "c-elsewhere", None, started=True))
    assert runner.resync_soon.is_set()


async def test_a_pull_in_progress_is_reported_as_starting_at_most_every_two_seconds(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    driver.progress = ["pulling r.example/app:1", "pulling r.example/app:1: 1.0 of 2.0 MB"]
    runner.apply([make_assignment("t1")])
    await settled(runner)
    reports = list(runner.reports._pending)
    assert [(r.state, r.message) for r in reports] == [
        ("starting", None),
        ("starting", "pulling r.example/app:1"),  # the second came within 2 s: not sent
        ("running", None),
    ]
