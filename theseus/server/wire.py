"""JSON answers of the hot read routes, put together from memoised pieces.

At 10,000 tasks the answers that list tasks cost more to build than anything else the API
does: a pydantic model per task, validated and serialised, is about 0.1 ms, and an agent's
assignment list is rebuilt each time one of its tasks changes (a deploy wakes every node's
long-poll about once per task it gets). Records are frozen and the cache replaces them when
they change, so each piece of JSON is kept with the objects it was made from and reused while
they are the same objects (identity, not equality: that check is free).

* ``tasks_json``: ``GET /v1/tasks`` (``TaskList``); a task's entry also depends on its status,
  its node's address and its derived state.
* ``assignments_json``: ``GET /v1/agent/{node}/assignments`` (``AssignmentList``); a spec's
  JSON, without its defaults, is kept once for all the tasks that share the spec object (a
  group's version).
* ``group_json``: one entry of ``GET /v1/groups`` (``GroupList``: ``groups_body`` puts the
  entries together), memoised per group on the cache's ``group_index`` (the revision of the
  last change to the group's tasks or statuses) and ``alive_index`` (the last change to the
  set of live nodes).

``assignments_json`` and ``group_json`` run on the event loop (the groups' route gives the
loop a turn every few milliseconds between two groups). ``tasks_json`` runs in worker
threads, over a snapshot of the state (``ClusterState.copy``: the cache goes on changing its
own), because at 50,000 tasks one answer took 0.6-2.8 s and held the loop, every heartbeat
with it, that long (``theseus.server.routes.tasks``); it takes its memo's lock, so two such
reads never change the memo at once. Entries of records that are gone are dropped once the
memo has grown to twice what the cluster holds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from theseus.model.groups import GroupRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskRecord, TaskStatus
from theseus.server.group_tally import Tally
from theseus.server.views import group_info, task_entry


def _dumps(value: Any) -> str:
    # orjson, not json.dumps: at 5,000 nodes the assignments' pieces made with json.dumps were
    # 1.7 % of the server's CPU during a deploy (py-spy), and orjson is ten times faster. Its
    # JSON is json.dumps's, compact, except that it writes non-ASCII text as UTF-8 instead of
    # \u escapes, as FastAPI's own answers do.
    return orjson.dumps(value).decode()


def _assignment(task: TaskRecord, was_healthy: bool, spec_text: str) -> str:
    """``Assignment``'s JSON, around ``spec_text``, the task's spec already encoded."""
    rest = _dumps(
        {
            "task_id": task.id,
            "service": task.service,
            "labels": list(task.labels),
            "group": task.group_key.key,
            "version": task.version,
            "desired": task.desired.value,
            "host_ports": dict(task.host_ports),
            "attempt": task.attempt,
            "was_healthy": was_healthy,
        }
    )
    return f'{{"spec":{spec_text},{rest[1:]}'


class _TaskPiece(NamedTuple):
    """A task's ``TaskInfo`` JSON and what it was made from."""

    task: TaskRecord
    status: TaskStatus | None
    address: str | None  # its node's
    derived: str  # its derived state (``ClusterState.task_state``)
    text: str


class _AssignmentPiece(NamedTuple):
    task: TaskRecord
    was_healthy: bool
    text: str


class _SpecPiece(NamedTuple):
    spec: GroupSpec
    text: str


class _GroupPiece(NamedTuple):
    group: GroupRecord
    changed: int  # the cache's ``group_index`` of the group when made
    alive_index: int
    text: str


class WireMemo:
    def __init__(self) -> None:
        self._tasks: dict[str, _TaskPiece] = {}
        self._assignments: dict[str, _AssignmentPiece] = {}
        # A spec's JSON, by the group and version of the tasks that carry it: the tasks a pass
        # creates for a group share its spec object, and its JSON was three quarters of each
        # of their assignments' cost (15 of 20 µs).
        self._specs: dict[tuple[str, str], _SpecPiece] = {}
        self._groups: dict[str, _GroupPiece] = {}
        self._tasks_lock = threading.Lock()  # ``tasks_json`` runs in worker threads

    def task_json(self, state: ClusterState, task: TaskRecord) -> str:
        status = state.statuses.get(task.id)
        node = state.nodes.get(task.node) if task.node else None
        address = node.address if node else None
        derived = state.task_state(task).value
        kept = self._tasks.get(task.id)
        if (
            kept is not None
            and kept.task is task
            and kept.status is status
            and kept.address == address
            and kept.derived == derived
        ):
            return kept.text
        text = _dumps(task_entry(state, task))
        self._tasks[task.id] = _TaskPiece(task, status, address, derived, text)
        return text

    def tasks_json(
        self, state: ClusterState, tasks: Iterable[TaskRecord], following: str | None = None
    ) -> str:
        """``GET /v1/tasks``'s answer: ``tasks``, and ``following`` as its ``next``."""
        with self._tasks_lock:
            body = ",".join(self.task_json(state, task) for task in tasks)
            _prune(self._tasks, state.tasks)
        return f'{{"tasks":[{body}],"next":{json.dumps(following)}}}'

    def assignment_json(self, state: ClusterState, task: TaskRecord) -> str:
        # ``was_healthy`` is read fresh but wakes no long-poll when it changes: an agent only
        # needs it when it adopts the task, and then it has just fetched the list.
        status = state.statuses.get(task.id)
        was_healthy = status is not None and status.was_healthy
        kept = self._assignments.get(task.id)
        if kept is not None and kept.task is task and kept.was_healthy == was_healthy:
            return kept.text
        text = _assignment(task, was_healthy, self._spec_json(task))
        self._assignments[task.id] = _AssignmentPiece(task, was_healthy, text)
        return text

    def _spec_json(self, task: TaskRecord) -> str:
        key = (task.group_key.key, task.version)
        kept = self._specs.get(key)
        if kept is not None and kept.spec is task.spec:
            return kept.text
        # Without the fields at their defaults, as etcd holds it (``theseus.store.encoding``):
        # a fifth of the bytes, and an agent reads it in half the time (``bench/record_sizes.py``).
        text = task.spec.model_dump_json(exclude_defaults=True)
        self._specs[key] = _SpecPiece(task.spec, text)
        return text

    def assignments_json(
        self,
        state: ClusterState,
        node: str,
        index: int,
        heartbeat_interval: float | None,
        poll_wait: float | None = None,
    ) -> str:
        body = ",".join(self.assignment_json(state, task) for task in state.tasks_on(node))
        _prune(self._assignments, state.tasks)
        if len(self._specs) > 4 * len(state.groups) + 100:  # versions gone: made again if asked
            self._specs.clear()
        interval, wait = _dumps(heartbeat_interval), _dumps(poll_wait)
        return (
            f'{{"index":{index},"heartbeat_interval":{interval},"poll_wait":{wait},'
            f'"tasks":[{body}]}}'
        )

    def group_json(
        self,
        state: ClusterState,
        group_id: str,
        group: GroupRecord,
        changed: int,
        alive_index: int,
        tally: Tally | None = None,
    ) -> str:
        """One group's entry; ``changed`` is its ``group_index`` revision, read with ``state``
        (no await between: the memo keys the text by it); ``tally``: its counts, kept by the
        cache (``theseus.server.group_tally``)."""
        kept = self._groups.get(group_id)
        if (
            kept is not None
            and kept.group is group
            and kept.changed == changed
            and kept.alive_index == alive_index
        ):
            return kept.text
        text = group_info(state, group_id, group, tally).model_dump_json()
        self._groups[group_id] = _GroupPiece(group, changed, alive_index, text)
        return text

    def prune_groups(self, state: ClusterState) -> None:
        _prune(self._groups, state.groups)


def groups_body(parts: list[str]) -> str:
    """``GroupList``'s JSON around the groups' entries."""
    return f'{{"groups":[{",".join(parts)}]}}'


def _prune(memo: dict[str, Any], present: dict[str, Any]) -> None:
    if len(memo) > 2 * len(present) + 100:
        for key in [k for k in memo if k not in present]:
            del memo[key]
