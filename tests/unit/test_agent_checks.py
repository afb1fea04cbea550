"""The runner's health checks with an in-memory driver whose COMMAND checks we control:
verdict reports on transitions only, the kill after too many failures, no leftover loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.kit.builders import make_assignment
from tests.kit.fake_driver import FakeDriver
from tests.kit.wait import wait_until_async
from theseus.agent.checking import HealthLoop, checks_of, http_client
from theseus.agent.drivers.base import Observed, Owner
from theseus.agent.health import Verdict
from theseus.agent.kill_budget import KillBudget
from theseus.agent.probes import ProbeTarget
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.api.schemas import TaskReport
from theseus.model.spec import GroupSpec


class CheckedDriver(FakeDriver):
    """``exec`` answers with ``exit_code`` (per container name, else the default)."""

    def __init__(self) -> None:
        super().__init__()
        self.exit_code = 0
        self.member_codes: dict[str, int] = {}
        self.execs: list[tuple[str, str, str | None]] = []

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        self.execs.append((handle, command, container))
        code = self.member_codes.get(container or "", self.exit_code)
        return code, "" if code == 0 else "no /tmp/ok"


def command_check(**fields: Any) -> dict[str, Any]:
    check: dict[str, Any] = {
        "protocol": "COMMAND",
        "command": "test -f /tmp/ok",
        "interval_seconds": 0.02,
        "timeout_seconds": 0.02,
        "grace_period_seconds": 0,
        "max_consecutive_failures": 3,
    }
    check.update(fields)
    return check


@pytest.fixture
def driver() -> CheckedDriver:
    return CheckedDriver()


@pytest.fixture
async def runner(driver: CheckedDriver) -> AsyncIterator[TaskRunner]:
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue())
    yield runner
    await runner.close()
    assert not runner._checkers  # nothing left running


def reports(runner: TaskRunner) -> list[TaskReport]:
    return list(runner.reports._pending)


def health_reports(runner: TaskRunner) -> list[tuple[str, bool | None, str | None]]:
    return [(r.state, r.healthy, r.health_message) for r in reports(runner)]


async def test_tasks_without_checks_get_no_check_loop(runner: TaskRunner) -> None:
    runner.apply([make_assignment("t1")])
    await wait_until_async(lambda: runner.slots["t1"].reported == "running")
    assert runner.slots["t1"].checker is None and not runner._checkers
    assert checks_of(GroupSpec(image="img")) == []


async def test_transitions_are_reported_once_each(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    runner.apply([make_assignment("t1", health_checks=[command_check(max_consecutive_failures=0)])])
    await wait_until_async(lambda: runner.slots["t1"].healthy is True)
    probes = len(driver.execs)
    await wait_until_async(
        lambda: len(driver.execs) >= probes + 3
    )  # more passes: nothing new to say
    driver.exit_code = 1
    await wait_until_async(lambda: runner.slots["t1"].healthy is False)
    probes = len(driver.execs)
    await wait_until_async(lambda: len(driver.execs) >= probes + 3)
    driver.exit_code = 0
    await wait_until_async(lambda: runner.slots["t1"].healthy is True)
    assert health_reports(runner) == [
        ("starting", None, None),
        ("running", None, None),
        ("running", True, None),
        ("running", False, "exit 1: no /tmp/ok"),
        ("running", True, None),
    ]
    assert driver.execs[0] == ("c-t1", "test -f /tmp/ok", None)


async def test_killed_after_max_consecutive_failures(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    driver.exit_code = 1
    runner.apply([make_assignment("t1", health_checks=[command_check()])])
    await wait_until_async(lambda: runner.slots["t1"].reported == "exited")
    last = reports(runner)[-1]
    assert last.state == "exited" and last.exit_code == 0
    assert last.message == "killed after 3 failed health checks in a row: exit 1: no /tmp/ok"
    assert last.healthy is False
    assert ("stop", "c-t1") in driver.calls
    assert len(driver.execs) == 3
    await wait_until_async(lambda: not runner._checkers)  # the loop ended by itself
    states = [r.state for r in reports(runner)]
    assert states == ["starting", "running", "running", "exited"]  # unknown, unhealthy, killed
    # Not restarted by the agent: the server replaces it; the container stays for its logs.
    assert [c for c in driver.calls if c[0] == "start"] == [("start", "t1")]
    assert runner.slots["t1"].handle == "c-t1"


async def test_grace_period_delays_the_verdict(runner: TaskRunner, driver: CheckedDriver) -> None:
    driver.exit_code = 1
    spec = [command_check(grace_period_seconds=60)]
    runner.apply([make_assignment("t1", health_checks=spec)])
    await wait_until_async(lambda: len(driver.execs) >= 5)
    slot = runner.slots["t1"]
    assert slot.phase == "running" and slot.kill_reason is None
    assert (slot.healthy, slot.health_message) == (None, "exit 1: no /tmp/ok")
    driver.exit_code = 0
    await wait_until_async(lambda: slot.healthy is True)
    driver.exit_code = 1  # the first success ended the grace period
    await wait_until_async(lambda: slot.reported == "exited")


async def test_pod_members_are_checked_in_their_container(driver: CheckedDriver) -> None:
    pod = {
        "ports": {},
        "containers": [
            {"name": "web", "image": "img", "health_checks": [command_check()]},
            {"name": "side", "image": "img", "health_checks": [command_check()]},
        ],
    }
    checks = checks_of(GroupSpec.model_validate(pod))
    assert [member for member, _ in checks] == ["web", "side"]
    driver.member_codes = {"side": 1}
    verdicts: list[Verdict] = []
    kills: list[str] = []
    async with http_client() as http:
        loop = HealthLoop(
            checks,
            ProbeTarget("c-t1", "127.0.0.2", {}, {}),
            driver,
            http,
            time.monotonic(),
            verdicts.append,
            kills.append,
        )
        await asyncio.wait_for(loop.run(), 2.0)  # ends by itself after the kill
    assert verdicts[-1] == Verdict(False, "side: exit 1: no /tmp/ok")
    assert kills == ["killed after 3 failed health checks in a row: side: exit 1: no /tmp/ok"]
    assert {container for _, _, container in driver.execs} == {"web", "side"}


async def test_a_stop_ends_the_checks_before_the_container(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    runner.apply([make_assignment("t1", health_checks=[command_check()])])
    await wait_until_async(lambda: runner.slots["t1"].healthy is True)
    runner.apply([make_assignment("t1", "stop", health_checks=[command_check()])])
    assert runner.slots["t1"].checker is None  # cancelled as the stop was decided
    await wait_until_async(lambda: runner.slots["t1"].reported == "stopped")
    await wait_until_async(lambda: not runner._checkers)
    probes = len(driver.execs)
    await asyncio.sleep(0.1)  # five intervals: no probe of a stopped task
    assert len(driver.execs) == probes


async def test_an_exit_ends_the_checks(runner: TaskRunner, driver: CheckedDriver) -> None:
    runner.apply([make_assignment("t1", health_checks=[command_check()])])
    await wait_until_async(lambda: runner.slots["t1"].healthy is True)
    runner.observe_exit(driver.die("t1", 2))
    assert runner.slots["t1"].checker is None
    await wait_until_async(lambda: not runner._checkers)
    assert reports(runner)[-1].state == "exited"


async def test_an_adopted_task_is_checked_again_with_its_own_start_time(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    # Started 100 s ago with a 60 s grace period: a failure counts at once.
    driver.containers["c-t1"] = Observed("t1", "c-t1", True, started_at=time.time() - 100)
    driver.exit_code = 1
    await runner.resync()
    assert runner.slots["t1"].checker is None  # nothing is checked before the list arrives
    runner.apply([make_assignment("t1", health_checks=[command_check(grace_period_seconds=60)])])
    await wait_until_async(lambda: runner.slots["t1"].reported == "exited")
    assert "killed after 3 failed health checks" in (reports(runner)[-1].message or "")


async def test_an_adopted_task_in_its_grace_period_is_unhealthy_but_not_killed(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    driver.containers["c-t1"] = Observed("t1", "c-t1", True, started_at=time.time())
    driver.exit_code = 1
    await runner.resync()
    runner.apply([make_assignment("t1", health_checks=[command_check(grace_period_seconds=60)])])
    await wait_until_async(lambda: runner.slots["t1"].healthy is False)
    await wait_until_async(lambda: len(driver.execs) >= 5)
    assert runner.slots["t1"].reported == "running"


async def test_an_adopted_task_the_server_saw_healthy_is_killed_within_its_grace_period(
    runner: TaskRunner, driver: CheckedDriver
) -> None:
    """Healthy once, then failing when its agent restarted: the grace period ended at that
    first success, so the new agent counts failures at once (the chaos run waited out the
    grace period here)."""
    driver.containers["c-t1"] = Observed("t1", "c-t1", True, started_at=time.time())
    driver.exit_code = 1
    await runner.resync()
    seen_healthy = make_assignment("t1", health_checks=[command_check(grace_period_seconds=60)])
    runner.apply([seen_healthy.model_copy(update={"was_healthy": True})])
    await wait_until_async(lambda: runner.slots["t1"].reported == "exited")
    assert "killed after 3 failed health checks" in (reports(runner)[-1].message or "")


async def test_close_cancels_the_check_loops(runner: TaskRunner) -> None:
    runner.apply([make_assignment(f"t{i}", health_checks=[command_check()]) for i in range(5)])
    await wait_until_async(lambda: len(runner._checkers) == 5)
    await runner.close()
    assert not runner._checkers


async def test_kills_over_the_budget_wait_and_happen_only_if_still_failing(
    driver: CheckedDriver,
) -> None:
    budget = KillBudget(per_minute=60, burst=1)  # one kill now, the next in a second
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue(), budget)
    try:
        driver.member_codes = {}
        driver.exit_code = 1
        tasks = [make_assignment(f"t{i}", health_checks=[command_check()]) for i in range(2)]
        runner.apply(tasks)
        await wait_until_async(lambda: any(s.reported == "exited" for s in runner.slots.values()))
        survivor = next(s for s in runner.slots.values() if s.reported != "exited")
        # Over budget: still running, reported unhealthy (so out of the registry).
        await wait_until_async(lambda: survivor.healthy is False)
        assert survivor.reported == "running"
        driver.exit_code = 0  # it recovers before its turn comes: it is never killed
        await wait_until_async(lambda: survivor.healthy is True, timeout=5)
        assert survivor.reported == "running"
        assert [c for c in driver.calls if c[0] == "stop"] == [
            ("stop", f"c-{s.task_id}") for s in runner.slots.values() if s is not survivor
        ]
    finally:
        await runner.close()
    assert not runner._checkers


async def test_a_deferred_kill_happens_when_the_budget_allows_if_still_failing(
    driver: CheckedDriver,
) -> None:
    budget = KillBudget(per_minute=120, burst=1)  # the next kill half a second later
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue(), budget)
    try:
        driver.exit_code = 1
        runner.apply([make_assignment(f"t{i}", health_checks=[command_check()]) for i in range(2)])
        await wait_until_async(lambda: any(s.reported == "exited" for s in runner.slots.values()))
        first = time.monotonic()
        await wait_until_async(
            lambda: all(s.reported == "exited" for s in runner.slots.values()), 5
        )
        assert time.monotonic() - first >= 0.4  # not both at once
        messages = {r.message for r in reports(runner) if r.state == "exited"}
        assert messages == {"killed after 3 failed health checks in a row: exit 1: no /tmp/ok"}
    finally:
        await runner.close()
    assert not runner._checkers


async def test_a_deferred_kill_is_not_held_back_by_a_new_grace_period(
    driver: CheckedDriver,
) -> None:
    """Both tasks passed once, within a long grace period, then fail: the one over budget
    is killed when the budget allows, not at the end of its grace period."""
    budget = KillBudget(per_minute=120, burst=1)
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue(), budget)
    try:
        spec = [command_check(grace_period_seconds=60)]
        runner.apply([make_assignment(f"t{i}", health_checks=spec) for i in range(2)])
        await wait_until_async(lambda: all(s.healthy is True for s in runner.slots.values()))
        driver.exit_code = 1
        await wait_until_async(
            lambda: all(s.reported == "exited" for s in runner.slots.values()), 5
        )
    finally:
        await runner.close()
    assert not runner._checkers


async def test_a_deferred_check_restart_never_fires_after_close(driver: CheckedDriver) -> None:
    budget = KillBudget(per_minute=6000, burst=1)  # the next kill 10 ms later
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue(), budget)
    driver.exit_code = 1
    runner.apply([make_assignment(f"t{i}", health_checks=[command_check()]) for i in range(2)])
    await wait_until_async(lambda: bool(runner._deferred))
    await runner.close()
    execs = len(driver.execs)
    await asyncio.sleep(0.05)  # past the deferral: nothing may run any more
    assert not runner._checkers and not runner._deferred and len(driver.execs) == execs
