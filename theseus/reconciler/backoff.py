"""Restart backoff: how long a replacement waits after its predecessor died (pure).

A task that ran at least ``HEALTHY_RUN_SECONDS`` and then exited resets the count: it is
replaced at once. A task that failed to start or died sooner counts as a quick failure, and so
does one with health checks that never passed them, however long it ran (Marathon counts
health-check kills as failures too): a version that never becomes healthy backs off instead
of being restarted every grace period.
The first quick failure is also replaced at once (so that a single kill heals in well under
a second); from the second consecutive one on, the delay is
``backoff_seconds * backoff_factor ** (n - 2)``, capped at ``max_launch_delay_seconds``.
These are Marathon's field names; Marathon's default factor is 1.15, Theseus's is 2.
"""

from __future__ import annotations

from theseus.model.spec import GroupSpec
from theseus.model.tasks import TaskRecord, TaskState, TaskStatus

HEALTHY_RUN_SECONDS = 10.0


def delay_for(spec: GroupSpec, attempt: int) -> float:
    if attempt <= 1:
        return 0.0
    delay = spec.backoff_seconds * spec.backoff_factor ** (attempt - 2)
    return float(min(delay, spec.max_launch_delay_seconds))


def successor_attempt(task: TaskRecord, state: TaskState, status: TaskStatus | None) -> int:
    """The replacement's attempt number: 0 after a healthy run or a node loss."""
    if state is TaskState.LOST:
        return 0
    if status is not None and status.state is TaskState.EXITED and status.started_at is not None:
        if task.spec.has_health_checks and not status.was_healthy:
            return task.attempt + 1
        ended = status.finished_at if status.finished_at is not None else status.updated_at
        if ended - status.started_at >= HEALTHY_RUN_SECONDS:
            return 0
    return task.attempt + 1


def successor_not_before(
    spec: GroupSpec, attempt: int, status: TaskStatus | None, now: float
) -> float | None:
    delay = delay_for(spec, attempt)
    if delay <= 0:
        return None
    ended = status.finished_at if status is not None and status.finished_at else now
    return ended + delay
