"""One task's local knowledge on this node (``Slot``), and the errors of asking for a task or a
container this node does not have. Kept by ``theseus.agent.runner``; the agent's HTTP endpoint
turns the errors into 404s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from theseus.agent.decide import Local, Phase, Step
from theseus.agent.drivers.base import ExitNotice

DEFAULT_GRACE = 10.0  # for a container whose assignment we never saw (adopted, then dropped)


class UnknownTask(KeyError):
    """No container of that task on this node (the logs endpoint answers 404)."""


class UnknownContainer(LookupError):
    """The task has no container of that name (the logs endpoint answers 404)."""


def container_problem(task_id: str, container: str, names: list[str]) -> str:
    if not names:
        return f"task {task_id} is not a pod: it has no container {container!r}"
    return f"task {task_id} has no container {container!r} (its containers: {', '.join(names)})"


@dataclass
class Slot:
    """Local knowledge of one task."""

    task_id: str
    phase: Phase = Phase.NEW
    handle: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    message: str | None = None
    reported: str | None = None
    grace: float = DEFAULT_GRACE
    busy: Step | None = None  # the step in flight, if any
    worker: asyncio.Task[None] | None = None
    early_exit: ExitNotice | None = None  # a death noticed while the start was in flight
    changed: int = 0  # runner epoch of the last change (resync ignores newer slots)
    # Health checks: the loop while it runs, the container it probes, the last verdict.
    checker: asyncio.Task[None] | None = None
    checked: str | None = None
    healthy: bool | None = None
    health_message: str | None = None
    kill_reason: str | None = None  # set when the checks ask for a kill
    adopted_at: float | None = None  # wall-clock start of an adopted container, if known
    checks_started: float | None = None  # monotonic start of its first check loop
    end_pod: bool = False  # exited: if it is a pod, its other members still need stopping
    progress_at: float | None = None  # monotonic time of its last pull-progress report
    fenced: str | None = None  # why it must not run here any more (``theseus.agent.fencing``)
    fence_after: str | None = None  # an adopted container's label: its group's setting

    def local(self) -> Local:
        unhealthy, fenced = self.kill_reason is not None, self.fenced is not None
        return Local(self.phase, self.handle is not None, self.reported, unhealthy, fenced)
