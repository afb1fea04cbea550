"""Helpers around ``theseus.agent.runner.TaskRunner`` for its unit tests: take the reports it
queued, and wait until every decision has been acted upon."""

from __future__ import annotations

from tests.kit.wait import wait_until_async
from theseus.agent.runner import TaskRunner
from theseus.api.schemas import TaskReport


def drain(runner: TaskRunner) -> list[tuple[str, str]]:
    """The reports queued so far as ``(task id, state)``, taken out of the queue."""
    reports: list[TaskReport] = list(runner.reports._pending)
    runner.reports._pending.clear()
    return [(r.task_id, r.state) for r in reports]


async def settled(runner: TaskRunner) -> None:
    """Wait until no task has a worker (every decision acted upon)."""
    await wait_until_async(
        lambda: all(s.worker is None for s in runner.slots.values()), 2.0, "the runner settled"
    )
