"""What to do next for each task: a pure function of (desired state, local state).

The task runner calls ``next_step`` every time something about a task may have changed (a new
assignment list, an exit notice, a resync) and performs the returned step in the task's own
serialized worker, then asks again, until the answer is ``None``. Because the decision reads
only the current desired and local state, missed or duplicated hints cannot leave a task in a
wrong state: it is level-triggered.

Rules (running tasks outlive their agent: a restarted agent adopts them, never restarts them):

* desired ``run``, nothing local → start it;
* desired ``stop``, container running → graceful stop, report ``stopped``, remove;
* desired ``run``, container exited by itself → keep it (its logs stay readable), never
  restart it: the server creates a replacement task;
* desired ``stop``, container exited by itself (the server marks every dead task so) → keep
  it still, for ``theseus logs``, as long as the server keeps the task's record (a short
  history per group, ``theseus.reconciler.reconcile``: ``collect``); the record's removal
  drops it from the list, which removes the container (below). One that never ran (a
  failed start's leftover) or was stopped on request is removed at once;
* desired ``run``, container running but its health checks failed too often → kill it and
  report it exited (``theseus.agent.health``): the server replaces it like any dead task;
* desired ``run``, but the node is fenced for it (no server reached for its group's
  ``stop_after_server_loss_seconds``, ``theseus.agent.fencing``) → stop it if it runs, never
  start it, and report it exited with why: it ends for good here, as a dead task does;
* a task no longer in the list at all → stop it if it runs and remove it, without a report;
* every local state the server has not heard of yet is reported (adoption, exits, failures).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

DesiredState = Literal["run", "stop"] | None  # None: the task is not assigned to us any more
ReportState = Literal["starting", "running", "exited", "failed", "stopped"]  # TaskReport.state


class Phase(StrEnum):
    NEW = "new"  # known from the assignment list only: nothing started yet
    STARTING = "starting"  # a start is in flight (only inside the task's worker)
    RUNNING = "running"
    EXITED = "exited"  # ended by itself (or was found dead)
    FAILED = "failed"  # could not be started
    STOPPED = "stopped"  # stopped because the server asked


class Step(StrEnum):
    START = "start"
    STOP = "stop"  # stop gracefully, report "stopped", remove the container
    REMOVE = "remove"  # desired stop, container already dead: remove it
    KILL = "kill"  # health checks failed too often: stop it, report "exited" with why
    FENCE = "fence"  # no server reached for too long: stop it (or never start it), "exited"
    REPORT = "report"  # tell the server the current phase
    DISCARD = "discard"  # not ours any more: stop if running, remove, forget; no report
    FORGET = "forget"  # not ours any more and nothing left locally
    # Chosen by the runner, never by next_step: a pod whose member exited stops its other
    # members (a pod ends whole), once the exit has been reported.
    END_POD = "end-pod"


# The report that describes each phase (NEW has none).
PHASE_REPORT: dict[Phase, ReportState] = {
    Phase.STARTING: "starting",
    Phase.RUNNING: "running",
    Phase.EXITED: "exited",
    Phase.FAILED: "failed",
    Phase.STOPPED: "stopped",
}


@dataclass(frozen=True)
class Local:
    """What the runner knows about one task on this node."""

    phase: Phase
    has_container: bool = False
    reported: str | None = None  # the last state sent to the server for this task
    unhealthy: bool = False  # its health checks asked for it to be killed
    fenced: bool = False  # no server reached for its group's setting: it must not run here


def next_step(desired: DesiredState, local: Local) -> Step | None:
    """The one next step for a task, or ``None`` when it is where it should be."""
    phase = local.phase
    if desired is None:
        return Step.DISCARD if local.has_container else Step.FORGET
    if desired == "run":
        if local.fenced and phase in (Phase.NEW, Phase.RUNNING):
            return Step.FENCE
        if phase is Phase.NEW:
            return Step.START
        if phase is Phase.RUNNING and local.unhealthy and local.has_container:
            return Step.KILL
    elif phase in (Phase.NEW, Phase.STARTING, Phase.RUNNING):
        # NEW: never started here; the server still needs a terminal report ("stopped").
        return Step.STOP
    # Here the phase is never NEW (both branches above return for it).
    if local.reported != PHASE_REPORT[phase]:
        return Step.REPORT  # before any removal: an exit must be heard before it is cleaned
    if desired == "stop" and local.has_container and phase is not Phase.EXITED:
        return Step.REMOVE
    return None


def plan(desired: Mapping[str, DesiredState], local: Mapping[str, Local]) -> dict[str, Step]:
    """``next_step`` for every task known on either side; tasks with nothing to do are left
    out. Tasks in ``desired`` but not in ``local`` are ``Phase.NEW``."""
    steps: dict[str, Step] = {}
    for task_id in desired.keys() | local.keys():
        step = next_step(desired.get(task_id), local.get(task_id, Local(Phase.NEW)))
        if step is not None:
            steps[task_id] = step
    return steps
