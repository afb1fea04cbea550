"""How the server folds an agent's health verdicts into a task's status (``next_status``)."""

from __future__ import annotations

from typing import Any

from theseus.api.schemas import TaskReport
from theseus.model.tasks import TaskStatus
from theseus.server.reports import next_status


def report(state: str = "running", **fields: Any) -> TaskReport:
    return TaskReport(task_id="t1", state=state, container_id="c1", at=10.0, **fields)  # type: ignore[arg-type]


def fold(*reports: TaskReport) -> TaskStatus:
    status: TaskStatus | None = None
    for each in reports:
        status = next_status(status, each)
    assert status is not None
    return status


def test_verdicts_are_taken_as_reported() -> None:
    status = fold(report("starting"), report(), report(healthy=True))
    assert (status.healthy, status.health_message) == (True, None)
    status = fold(report(), report(healthy=True), report(healthy=False, health_message="HTTP 404"))
    assert (status.healthy, status.health_message) == (False, "HTTP 404")


def test_a_grace_period_message_replaces_nothing_but_is_kept() -> None:
    status = fold(report("starting"), report(), report(health_message="connection refused"))
    assert (status.healthy, status.health_message) == (None, "connection refused")


def test_a_restarted_agents_first_report_keeps_the_verdict() -> None:
    status = fold(report(), report(healthy=True), report())  # re-reported, no verdict yet
    assert status.healthy is True
    status = fold(report(), report(healthy=False, health_message="HTTP 500"), report())
    assert (status.healthy, status.health_message) == (False, "HTTP 500")


def test_a_new_container_or_an_exit_does_not_inherit_the_verdict() -> None:
    other = TaskReport(task_id="t1", state="running", container_id="c2", at=11.0)
    assert fold(report(healthy=True), other).healthy is None
    exited = fold(report(healthy=True), report("exited", exit_code=0))
    assert exited.healthy is None


def test_having_passed_once_is_remembered_to_the_end() -> None:
    passed = fold(report(healthy=True), report(healthy=False), report("exited", exit_code=143))
    assert passed.was_healthy is True
    never = fold(report(), report(healthy=False), report("exited", exit_code=143))
    assert never.was_healthy is False
