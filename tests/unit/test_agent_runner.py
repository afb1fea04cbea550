"""The task runner against an in-memory driver: starts, stops, exits, adoption, reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from theseus.agent.decide import Phase
from theseus.agent.drivers.base import (
    DriverError,
    ExitCallback,
    ExitNotice,
    Launch,
    Observed,
    Owner,
)
from theseus.agent.launch import launch_of
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner, UnknownTask
from theseus.api.schemas import Assignment, TaskReport
from theseus.model.spec import GroupSpec


class FakeDriver:
    """Containers as dict entries; every call recorded; starts can be made to fail."""

    name = "fake"
    discovery: str | None = "unix:///run/theseus/agent.sock"

    def __init__(self) -> None:
        self.containers: dict[str, Observed] = {}  # handle -> state
        self.calls: list[tuple[str, str]] = []
        self.fail_start: str | None = None
        self.launches: dict[str, Launch] = {}
        self.gate: asyncio.Event | None = None  # when set, starts wait for it

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_tasks(self) -> list[Observed]:
        return list(self.containers.values())

    async def start(self, launch: Launch) -> str:
        self.calls.append(("start", launch.task_id))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_start:
            raise DriverError(self.fail_start)
        handle = f"c-{launch.task_id}"
        self.launches[launch.task_id] = launch
        self.containers[handle] = Observed(launch.task_id, handle, True)
        return handle

    async def stop(self, handle: str, grace: float) -> int | None:
        self.calls.append(("stop", handle))
        seen = self.containers[handle]
        self.containers[handle] = Observed(seen.task_id, handle, False, 0)
        return 0

    async def remove(self, handle: str) -> None:
        self.calls.append(("remove", handle))
        self.containers.pop(handle, None)

    async def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        yield f"log of {handle}{'' if container is None else '/' + container}\n".encode()

    def die(self, task_id: str, code: int) -> ExitNotice:
        handle = f"c-{task_id}"
        self.containers[handle] = Observed(task_id, handle, False, code)
        return ExitNotice(task_id, handle, code)


def assignment(task_id: str, desired: str = "run", **spec: Any) -> Assignment:
    fields: dict[str, Any] = {"image": "img", "ports": {"api": 5000, "alt": 5000}}
    fields.update(spec)
    group_spec = GroupSpec.model_validate(fields)
    return Assignment.model_validate(
        {
            "task_id": task_id,
            "service": "web",
            "labels": [],
            "group": "web/[]",
            "version": group_spec.version(),
            "desired": desired,
            "spec": group_spec,
            "host_ports": {"api": 31001, "alt": 31002},
        }
    )


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def runner(driver: FakeDriver) -> TaskRunner:
    return TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue())


def drain(runner: TaskRunner) -> list[tuple[str, str]]:
    reports: list[TaskReport] = list(runner.reports._pending)
    runner.reports._pending.clear()
    return [(r.task_id, r.state) for r in reports]


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Let the loop run until ``check`` holds; ``TimeoutError`` at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0)


async def settled(runner: TaskRunner) -> None:
    """Wait until no task has a worker (every decision acted upon)."""
    await until(lambda: all(s.worker is None for s in runner.slots.values()))


async def test_starts_assigned_tasks_and_reports_starting_then_running(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([assignment("t1"), assignment("t2")])
    await settled(runner)
    assert sorted(drain(runner)) == sorted(
        [("t1", "starting"), ("t1", "running"), ("t2", "starting"), ("t2", "running")]
    )
    runner.apply([assignment("t1"), assignment("t2")])  # the same list again: nothing to do
    await settled(runner)
    assert drain(runner) == []
    assert sorted(c for c in driver.calls if c[0] == "start") == [("start", "t1"), ("start", "t2")]


async def test_launch_carries_labels_env_and_shared_container_ports(runner: TaskRunner) -> None:
    launch = launch_of(assignment("t1"), runner.owner)
    assert launch.labels["theseus.cluster"] == "cluster-1"
    assert launch.labels["theseus.node"] == "n1"
    assert launch.labels["theseus.task"] == "t1"
    assert [(p.container_port, p.host_port) for p in launch.ports] == [(5000, 31001), (5000, 31002)]
    assert launch.environment["PORT_API"] == "31001"
    assert "THESEUS_DISCOVERY" not in launch.environment  # no driver address given


async def test_started_tasks_get_the_drivers_discovery_address(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([assignment("t1")])
    await settled(runner)
    environment = driver.launches["t1"].environment
    assert environment["THESEUS_DISCOVERY"] == "unix:///run/theseus/agent.sock"


async def test_stop_reports_stopped_and_removes(runner: TaskRunner, driver: FakeDriver) -> None:
    runner.apply([assignment("t1")])
    await settled(runner)
    drain(runner)
    runner.apply([assignment("t1", "stop")])
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
    runner.apply([assignment("t1")])
    await settled(runner)
    drain(runner)
    runner.observe_exit(driver.die("t1", 137))
    assert runner.reports._pending[-1].exit_code == 137  # reported synchronously: no delay
    await settled(runner)
    assert drain(runner) == [("t1", "exited")]
    runner.apply([assignment("t1")])
    await settled(runner)
    assert [c for c in driver.calls if c[0] == "start"] == [("start", "t1")]
    assert "c-t1" in driver.containers  # logs stay readable
    runner.apply([])
    await settled(runner)
    assert "c-t1" not in driver.containers
    assert drain(runner) == []


async def test_exit_during_start_is_not_lost(runner: TaskRunner, driver: FakeDriver) -> None:
    driver.gate = asyncio.Event()
    runner.apply([assignment("t1")])
    await until(lambda: bool(driver.calls))
    runner.observe_exit(ExitNotice("t1", "c-t1", 1))
    driver.gate.set()
    await settled(runner)
    assert drain(runner) == [("t1", "starting"), ("t1", "running"), ("t1", "exited")]


async def test_failed_start_reports_the_driver_message_once(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    driver.fail_start = "image 'img' is not present on node n1"
    runner.apply([assignment("t1")])
    await settled(runner)
    reports = list(runner.reports._pending)
    assert [(r.state, r.message) for r in reports] == [
        ("starting", None),
        ("failed", "image 'img' is not present on node n1"),
    ]
    drain(runner)
    runner.apply([assignment("t1")])
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
    runner.apply([assignment("keep"), assignment("dead")])
    await settled(runner)
    assert sorted(drain(runner)) == [("dead", "exited"), ("keep", "running")]
    assert not [c for c in driver.calls if c[0] == "start"]
    assert set(driver.containers) == {"c-keep", "c-dead"}
    assert runner.slots["keep"].handle == "c-keep"


async def test_unassigned_stop_is_confirmed_without_a_container(runner: TaskRunner) -> None:
    runner.apply([assignment("t1", "stop")])
    await settled(runner)
    assert drain(runner) == [("t1", "stopped")]


async def test_resync_finds_a_missed_exit_and_a_vanished_container(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([assignment("t1"), assignment("t2")])
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
    runner.apply([assignment(f"t{i}") for i in range(50)])
    await until(lambda: len(driver.calls) == 50)  # all 50 starts in flight at once
    driver.gate.set()
    await settled(runner)
    assert sum(1 for _, s in drain(runner) if s == "running") == 50


async def test_an_unknown_container_starting_asks_for_a_resync_at_once(
    runner: TaskRunner,
) -> None:
    runner.apply([assignment("t1")])
    await settled(runner)
    own = runner.slots["t1"].handle
    assert own is not None
    runner.observe_exit(ExitNotice("t1", own, None, started=True))  # our own start
    assert not runner.resync_soon.is_set()
    # Started by a previous agent killed mid-start: not known here.
    runner.observe_exit(ExitNotice("t9", "c-elsewhere", None, started=True))
    assert runner.resync_soon.is_set()
