"""Each group's counts of tasks (active, running, up to date, pending, stopping, failing),
kept up to date change by change instead of counted again over every task at each read.

``GET /v1/groups`` shows these counts for every group, and ``theseus deploy`` asks for it
every half second while it follows a rollout. Counted from the tasks at each read, one
answer at 50,000 tasks cost the server about 57 ms of CPU during a deploy, when every group
changes between two reads (bench/scale.py, BENCHMARKS.md, issue 17's ninth session).

``task_part`` is what one task adds to its group's ``Tally`` (pure); ``tally_of`` counts a
group from its tasks; ``GroupTallies`` keeps every group's tally as the cache applies changes
(a ``theseus.store.cache.ChangeObserver``, installed by ``theseus.server.app``): a task, its
status or its node's liveness changes, and its old part is taken out and the new one put in;
a group record changes (a new version: its tasks' "up to date" may all change) or the cache
reloads, and the group, or every group, is counted again. ``theseus.server.views.group_info``
turns a tally into the group's view; tests/unit/test_group_tally.py checks that the tallies
kept change by change are the ones counted from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from theseus.model.groups import GroupRecord
from theseus.model.state import ClusterState, derive_state
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.store import keys

# A group whose replacement tasks have failed this many times in a row is "failing".
FAILING_ATTEMPTS = 2


class Part(NamedTuple):
    """What one task adds to its group's counts."""

    active: int
    running: int
    running_current: int
    pending: int
    stopping: int
    failing: int
    blocked: int  # pending, with a reason, and not waiting for a backoff: waiting for room
    reason: str | None  # why it is pending, if it is


NOTHING = Part(0, 0, 0, 0, 0, 0, 0, None)


@dataclass
class Tally:
    """A group's counts; ``reasons``: each pending task's reason, by task id."""

    active: int = 0
    running: int = 0
    running_current: int = 0
    pending: int = 0
    stopping: int = 0
    failing: int = 0
    blocked: int = 0
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, task_id: str, part: Part, sign: int = 1) -> None:
        self.active += sign * part.active
        self.running += sign * part.running
        self.running_current += sign * part.running_current
        self.pending += sign * part.pending
        self.stopping += sign * part.stopping
        self.failing += sign * part.failing
        self.blocked += sign * part.blocked
        if part.reason is not None:
            if sign > 0:
                self.reasons[task_id] = part.reason
            else:
                self.reasons.pop(task_id, None)

    def pending_reason(self) -> str | None:
        """One pending task's reason (the lowest task id's, so that every server says the
        same)."""
        return self.reasons[min(self.reasons)] if self.reasons else None


def task_part(
    task: TaskRecord, status: TaskStatus | None, node_up: bool, group_version: str | None
) -> Part:
    """What ``task`` adds to its group's counts, given its status, whether its node is alive
    (or spared) and its group's current version (None: the group is gone)."""
    observed = derive_state(task, status, node_up)
    if task.desired is not Desired.RUN:
        return NOTHING if observed.terminal else NOTHING._replace(stopping=1)
    current = task.version == group_version
    running = observed is TaskState.RUNNING
    # With health checks, a task is up to date (and its group converged) once healthy.
    ready = running and (
        not task.spec.has_health_checks or (status is not None and status.healthy is True)
    )
    placed = task.node is not None
    reason = task.pending_reason if not placed and task.pending_reason else None
    # Positional: this runs twice for each change the cache applies to a task or a status.
    return Part(
        1,  # active
        running,
        current and ready,  # running_current
        not placed,  # pending
        0,  # stopping
        current and task.attempt >= FAILING_ATTEMPTS,  # failing
        reason is not None and task.not_before is None,  # blocked
        reason,
    )


def _part(state: ClusterState, task: TaskRecord, status: TaskStatus | None) -> Part:
    group = state.groups.get(task.group_key.key)
    return task_part(task, status, _up(state, task.node), group.version if group else None)


def _up(state: ClusterState, node: str | None) -> bool:
    return node is None or node in state.alive or node in state.spared


def tally_of(state: ClusterState, group_id: str, group: GroupRecord | None) -> Tally:
    """The group's counts, from its tasks."""
    tally = Tally()
    version = group.version if group is not None else None
    alive, spared, statuses = state.alive, state.spared, state.statuses
    for task in state.tasks_of(group_id):
        node = task.node
        up = node is None or node in alive or node in spared
        tally.add(task.id, task_part(task, statuses.get(task.id), up, version))
    return tally


class StateHolder(Protocol):
    """What ``GroupTallies`` reads the state from: ``theseus.store.cache.StateCache``."""

    state: ClusterState


class GroupTallies:
    """Every group's tally, kept by the changes a cache applies (its ``ChangeObserver``)."""

    prefixes: tuple[str, ...] = (keys.TASKS, keys.STATUS, keys.GROUPS, keys.ALIVE)

    def __init__(self, cache: StateHolder) -> None:
        self._cache = cache
        self._tallies: dict[str, Tally] = {}

    def of(self, group_id: str) -> Tally:
        tally = self._tallies.get(group_id)
        if tally is None:  # a group without tasks
            tally = self._tallies[group_id] = Tally()
        return tally

    def changed(
        self, key: str, revision: int, before: object, after: object, value: bytes | None
    ) -> None:
        state = self._cache.state
        if key.startswith(keys.TASKS):
            status = state.statuses.get(key.removeprefix(keys.TASKS))
            if isinstance(before, TaskRecord):
                self._move(before, _part(state, before, status), -1)
                if after is None:
                    self._forget_if_gone(state, before.group_key.key)
            if isinstance(after, TaskRecord):
                self._move(after, _part(state, after, status), 1)
        elif key.startswith(keys.STATUS):
            task = state.tasks.get(key.removeprefix(keys.STATUS))
            if task is not None and before is not after:
                old = _part(state, task, before if isinstance(before, TaskStatus) else None)
                new = _part(state, task, after if isinstance(after, TaskStatus) else None)
                if old != new:  # most reports change nothing that is counted
                    self._move(task, old, -1)
                    self._move(task, new, 1)
        elif key.startswith(keys.GROUPS):
            group_id = key.removeprefix(keys.GROUPS)
            self._tallies[group_id] = tally_of(state, group_id, state.groups.get(group_id))
            self._forget_if_gone(state, group_id)
        elif key.startswith(keys.ALIVE) and (before is None) != (after is None):
            node = key.removeprefix(keys.ALIVE)
            if node not in state.spared:  # a spared node's tasks count as up either way
                self._node_moved(state, node, was_up=before is not None)

    def _node_moved(self, state: ClusterState, node: str, was_up: bool) -> None:
        """A node came up or went down: its tasks' parts change from lost to not, or back."""
        for task in state.tasks_on(node):
            status = state.statuses.get(task.id)
            group = state.groups.get(task.group_key.key)
            version = group.version if group else None
            self._move(task, task_part(task, status, was_up, version), -1)
            self._move(task, task_part(task, status, not was_up, version), 1)

    def _move(self, task: TaskRecord, part: Part, sign: int) -> None:
        self.of(task.group_key.key).add(task.id, part, sign)

    def _forget_if_gone(self, state: ClusterState, group_id: str) -> None:
        """A group without a record or tasks keeps no tally (so they do not pile up)."""
        if group_id not in state.groups and not state.tasks_by_group.get(group_id):
            self._tallies.pop(group_id, None)

    def reloaded(self, revision: int) -> None:
        state = self._cache.state
        self._tallies = {
            group_id: tally_of(state, group_id, state.groups.get(group_id))
            for group_id in state.tasks_by_group.keys() | state.groups.keys()
        }

    def released(self) -> None:
        return None
