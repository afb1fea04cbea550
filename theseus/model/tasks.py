"""Tasks: one running copy of a group's spec on one node.

A task has two records, written by different parties so that they never race:

* ``TaskRecord`` (desired state) is written only by the leader: which spec, which node, which
  host ports, and whether it should run or stop.
* ``TaskStatus`` (observed state) is written by the server from the agent's reports, or by the
  leader when the task's node is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from theseus.model.groups import GroupKey
from theseus.model.spec import GroupSpec


class Desired(StrEnum):
    RUN = "run"
    STOP = "stop"


class TaskState(StrEnum):
    """Observed states. ``pending`` and ``assigned`` are derived (no status written yet)."""

    PENDING = "pending"  # no node yet
    ASSIGNED = "assigned"  # placed on a node, the agent has not reported yet
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"  # the process ended by itself (exit code in the status)
    FAILED = "failed"  # could not be started (driver error in the message)
    STOPPED = "stopped"  # stopped because Theseus asked
    LOST = "lost"  # its node was declared lost

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.EXITED, TaskState.FAILED, TaskState.STOPPED, TaskState.LOST})


class TaskRecord(BaseModel):
    """Desired state of one task (leader-owned)."""

    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    labels: list[str]
    version: str
    spec: GroupSpec
    node: str | None = None
    # A factory, not ``{}``: pydantic deep-copies a mutable default for every record made
    # without it (a fifth of making a record, and a deploy makes one per task).
    host_ports: dict[str, int] = Field(default_factory=dict)
    desired: Desired = Desired.RUN
    stop_reason: str | None = None
    attempt: int = 0  # consecutive quick failures before this task (drives the backoff)
    not_before: float | None = None  # backoff: not placed before this time
    sticky_node: str | None = None  # a sticky group's replacement: the node to restart on
    pending_reason: str | None = None
    created_at: float

    # Kept on the (frozen) record once asked: a reconcile pass asks it of every task several
    # times, and at 50,000 tasks working it out again each time was a fifth of a pass.
    @cached_property
    def group_key(self) -> GroupKey:
        return GroupKey.of(self.service, self.labels)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        # pydantic copies the instance's dict, cached group key included: forget it, so that
        # a copy with another service or labels never answers with the original's.
        copied.__dict__.pop("group_key", None)
        return copied


class TaskStatus(BaseModel):
    """Observed state of one task (from the agent's reports)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    state: TaskState
    exit_code: int | None = None
    oom_killed: bool = False  # the kernel killed it for memory (Docker's State.OOMKilled)
    message: str | None = None
    container_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # The agent's health-check verdict: None without checks or before the first verdict.
    healthy: bool | None = None
    health_message: str | None = None
    was_healthy: bool = False  # it passed its checks at least once (restart backoff)
    updated_at: float
