"""How an agent's report of a task changes the task's observed status (pure): its state, the
times it started and finished, its health verdict, and whether it changed at all. Called by
``theseus.server.writes`` for every report it records."""

from __future__ import annotations

from theseus.api.schemas import TaskReport
from theseus.model.tasks import TaskState, TaskStatus


def next_status(previous: TaskStatus | None, report: TaskReport) -> TaskStatus:
    """The task's status once ``report`` is taken in.

    Validated as it is built: with pydantic 2.14 that is cheaper than ``model_construct``
    (the whole call 7.3 against 11.2 µs; it was the other way round with older pydantic),
    and a deploy of 50,000 tasks brings about 100,000 reports."""
    state = TaskState(report.state)
    started_at = previous.started_at if previous else None
    if state is TaskState.RUNNING and started_at is None:
        started_at = report.at
    healthy, health_message = report.healthy, report.health_message
    if previous is not None and _verdict_pending(previous, report):
        # A restarted agent re-reports a running task before its checks ran again: keep the
        # verdict, so that the task does not leave the registry for that moment.
        healthy, health_message = previous.healthy, previous.health_message
    return TaskStatus(
        task_id=report.task_id,
        state=state,
        exit_code=report.exit_code,
        oom_killed=report.oom_killed,
        message=report.message,
        container_id=report.container_id or (previous.container_id if previous else None),
        started_at=started_at,
        finished_at=report.at if state.terminal else None,
        healthy=healthy,
        health_message=health_message,
        was_healthy=healthy is True or (previous is not None and previous.was_healthy),
        updated_at=previous.updated_at if previous and previous.state is state else report.at,
    )


def changes(previous: TaskStatus | None, status: TaskStatus) -> bool:
    """Whether ``status`` differs from ``previous``. Their fields compared as the records'
    dicts hold them (a status has nothing else there): pydantic's ``==`` takes ten times as
    long when they differ, which is what most reports bring."""
    return previous is None or status.__dict__ != previous.__dict__


def _verdict_pending(previous: TaskStatus, report: TaskReport) -> bool:
    """The same container still runs, and the report has no health verdict (yet)."""
    return (
        report.healthy is None
        and report.health_message is None
        and previous.state is TaskState.RUNNING
        and report.state == "running"
        and previous.container_id is not None
        and previous.container_id == report.container_id
    )
