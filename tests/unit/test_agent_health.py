"""The health verdict state machine (pure) on a fake clock: grace, counting, kill, verdicts."""

from __future__ import annotations

from typing import Any

from theseus.agent.decide import Local, Phase, Step, next_step
from theseus.agent.health import CheckState, Outcome, TaskHealth, Verdict
from theseus.model.health import HealthCheck

PASS = Outcome(True)
FAIL = Outcome(False, "HTTP 404 from /health")


def state(started: float = 0.0, **fields: Any) -> CheckState:
    options: dict[str, Any] = {"path": "/health", "grace_period_seconds": 10}
    options.update(fields)
    return CheckState(HealthCheck(**options), started)


def test_failures_in_the_grace_period_are_ignored_but_explained() -> None:
    check = state(started=100.0)
    for now in (100.0, 105.0, 109.9):
        check.record(now, FAIL)
    assert (check.healthy, check.failures, check.must_kill) == (None, 0, False)
    assert check.message == "HTTP 404 from /health"
    assert TaskHealth([check]).verdict() == Verdict(None, "HTTP 404 from /health")


def test_grace_ends_with_its_time() -> None:
    check = state(started=100.0)
    check.record(110.0, FAIL)  # exactly at the end: counted
    assert (check.healthy, check.failures) == (False, 1)


def test_first_success_ends_the_grace_period() -> None:
    check = state(started=0.0)
    check.record(1.0, PASS)
    assert check.healthy is True and check.message is None
    check.record(2.0, FAIL)  # well inside the 10 s: counted, since it passed once
    assert (check.healthy, check.failures) == (False, 1)
    assert TaskHealth([check]).verdict() == Verdict(False, "HTTP 404 from /health")


def test_kill_after_max_consecutive_failures_and_a_success_resets_the_count() -> None:
    check = state(grace_period_seconds=0, max_consecutive_failures=3)
    health = TaskHealth([check])
    check.record(1.0, FAIL)
    check.record(2.0, FAIL)
    assert health.kill_reason() is None
    check.record(3.0, PASS)
    assert check.failures == 0
    for now in (4.0, 5.0):
        check.record(now, FAIL)
    assert health.kill_reason() is None
    check.record(6.0, FAIL)
    assert health.kill_reason() == (
        "killed after 3 failed health checks in a row: HTTP 404 from /health"
    )


def test_zero_max_consecutive_failures_never_kills() -> None:
    check = state(grace_period_seconds=0, max_consecutive_failures=0)
    for now in range(100):
        check.record(float(now), FAIL)
    assert check.failures == 100 and check.healthy is False
    assert TaskHealth([check]).kill_reason() is None


def test_one_failure_is_enough_for_unhealthy() -> None:
    check = state(grace_period_seconds=0, max_consecutive_failures=5)
    check.record(1.0, PASS)
    check.record(2.0, FAIL)
    assert TaskHealth([check]).verdict().healthy is False


def test_several_checks_all_must_pass() -> None:
    a, b = state(grace_period_seconds=0), state(grace_period_seconds=0)
    health = TaskHealth([a, b])
    assert health.verdict() == Verdict(None, None)  # nothing known yet
    a.record(1.0, PASS)
    assert health.verdict().healthy is None  # b still unknown
    b.record(1.0, PASS)
    assert health.verdict() == Verdict(True)
    b.record(2.0, Outcome(False, "connection refused"))
    assert health.verdict() == Verdict(False, "connection refused")


def test_pod_member_messages_name_the_member() -> None:
    member = CheckState(HealthCheck(grace_period_seconds=0), 0.0, container="web")
    member.record(1.0, Outcome(False, "timed out after 1s"))
    assert TaskHealth([member]).verdict() == Verdict(False, "web: timed out after 1s")


def test_a_failure_without_a_message_still_says_something() -> None:
    check = state(grace_period_seconds=0)
    check.record(1.0, Outcome(False))
    assert check.message == "failed"


def test_adopted_tasks_are_not_lenient_in_their_grace_period() -> None:
    check = CheckState(HealthCheck(grace_period_seconds=100), 0.0, lenient=False)
    check.record(1.0, FAIL)
    assert check.healthy is False  # out of the registry at once
    assert check.failures == 0  # but not closer to a kill
    check.record(2.0, PASS)
    assert check.healthy is True


def test_decide_kills_an_unhealthy_running_task_only_while_it_is_meant_to_run() -> None:
    unhealthy = Local(Phase.RUNNING, True, "running", unhealthy=True)
    assert next_step("run", unhealthy) is Step.KILL
    assert next_step("stop", unhealthy) is Step.STOP  # a stop wins: report "stopped"
    assert next_step(None, unhealthy) is Step.DISCARD
    assert next_step("run", Local(Phase.RUNNING, True, "running")) is None
    assert next_step("run", Local(Phase.EXITED, True, "exited", unhealthy=True)) is None
