"""The reconciler: one pure pass from the cluster state to a ``Plan``.

Vocabulary, in the order a pass applies it:

* **lost**: a task on a node that is no longer alive gets a ``lost`` status.
* **dead**: a task meant to run whose state is terminal (exited, failed, lost) is marked
  ``stop`` and leaves a *seed* (attempt number, backoff) for its replacement.
* **scale**: a group with fewer current tasks than ``instances`` gets new tasks (seeds first);
  one with more stops the surplus, least advanced (running but not ready counts as less
  advanced than ready) and youngest first.
* **roll**: a group with tasks of an older spec version, or on a draining node, replaces them
  with Marathon's arithmetic (``minimum_health_capacity``, ``maximum_over_capacity``): an old
  task is stopped only while enough *ready* tasks remain (``ClusterState.task_ready``: a new
  task counts once running and healthy), and new ones start within the capacity bound (so a
  drain starts each replacement before stopping what it replaces).
* **orphan**: a task whose group was removed is stopped, once no running task needs its
  service any more (``theseus.reconciler.dependencies``: dependencies stop last).
* **place**: tasks without a node are placed (``theseus.scheduler``) on schedulable nodes
  (alive, not ineligible or draining), or keep a reason. A group's constraints count its
  tasks on ineligible nodes too (they stay there), not those on draining ones (they are
  being moved off). A sticky group's replacement goes back to the node its predecessor ran
  on while that node is schedulable. A task whose group needs other services waits until
  they have their healthy capacity ready.
* **collect**: finished tasks are deleted, except a short history of those that died on
  their own (for ``theseus ps -a`` and logs).
* **register**: the service registry is brought in line with the tasks as decided above
  (``theseus.reconciler.registry``).

A pass may be **scoped** to some groups (``only``): those whose tasks, statuses or record
changed since the last pass whose plan was committed, and those with tasks still waiting for
a node (``theseus.reconciler.scope`` decides when that is enough). It then decides for those
groups exactly what a pass over everything would: every other group was left with nothing to
do, and nothing it depends on (nodes, their liveness, the set of groups) has changed.

Some groups of a scoped pass may be **light** (``light``: each with the tasks whose status
changed, all still alive): the pass weighs the whole group's counts, but looks task by task
only at those tasks and at the ones it writes (``theseus.reconciler.scope.light_scope``).

``reconcile`` never mutates its input and does no I/O.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from theseus.model.constraints import Operator
from theseus.model.groups import GroupRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.reconciler.backoff import successor_attempt, successor_not_before
from theseus.reconciler.dependencies import Readiness, needed_services
from theseus.reconciler.holdings import StateHoldings
from theseus.reconciler.registry import EncodingMemo, registry_diff
from theseus.scheduler.constraints import field_value, spread_victims
from theseus.scheduler.placement import Placement, Placer, Unplaceable

HISTORY_PER_GROUP = 5
HISTORY_MAX_AGE = 3600.0

# Order in which surplus tasks are stopped: the least advanced first.
_STOP_ORDER = {
    TaskState.PENDING: 0,
    TaskState.ASSIGNED: 1,
    TaskState.STARTING: 2,
    TaskState.RUNNING: 3,
}


@dataclass
class Plan:
    task_puts: dict[str, TaskRecord] = field(default_factory=dict)
    task_deletes: set[str] = field(default_factory=set)
    status_puts: dict[str, TaskStatus] = field(default_factory=dict)
    status_deletes: set[str] = field(default_factory=set)
    registry_puts: dict[str, bytes] = field(default_factory=dict)
    registry_deletes: set[str] = field(default_factory=set)
    wake_at: float | None = None  # the earliest backoff deadline, if any
    # What the next pass needs to know to be scoped (``theseus.reconciler.scope``): the groups
    # left with tasks that wait for a node, and whether tasks of removed groups still run.
    waiting_groups: frozenset[str] = frozenset()
    orphans: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.task_puts
            or self.task_deletes
            or self.status_puts
            or self.status_deletes
            or self.registry_puts
            or self.registry_deletes
        )


@dataclass(frozen=True)
class Seed:
    """What a dead task hands down to its replacement."""

    attempt: int
    not_before: float | None
    node: str | None = None  # sticky groups: restart where the dead task ran


def new_task_id(service: str) -> str:
    # 48 random bits, as uuid4's first 12 hex digits were, without building a UUID: a
    # fifth of the cost, and this is called for every task a deploy creates.
    return f"{service}.{secrets.token_hex(6)}"


def reconcile(
    state: ClusterState,
    now: float,
    new_id: Callable[[str], str] = new_task_id,
    memo: EncodingMemo | None = None,
    only: frozenset[str] | None = None,
    light: Mapping[str, frozenset[str]] | None = None,
) -> Plan:
    """One pass. ``memo`` (kept by the caller between passes) saves re-encoding registry
    entries whose task and node records have not changed; ``only``: the groups a scoped pass
    looks at (None: all); ``light``: those of them it looks at lightly, with their tasks to
    look at."""
    return _Pass(state, now, new_id, memo, only, light or {}).run()


class _Pass:
    def __init__(
        self,
        state: ClusterState,
        now: float,
        new_id: Callable[[str], str],
        memo: EncodingMemo | None,
        only: frozenset[str] | None,
        light: Mapping[str, frozenset[str]],
    ) -> None:
        # Its tasks and statuses change as we decide. An empty scope (nothing changed since
        # the last pass: the leader's tick, a second apart at rest) looks at no task and
        # changes none, so it works on ``state`` itself (a copy: 5 ms at 50,000 tasks).
        self.state = state if only is not None and not only else state.working_copy()
        self.now = now
        self.new_id = new_id
        self.memo = memo
        self.only = only
        self.plan = Plan()
        self.seeds: dict[str, list[Seed]] = defaultdict(list)
        # Task ids per group (of the scope), built once, in the order of ``state.tasks`` (so
        # that a scoped pass meets a group's tasks in the same order as a full one).
        self.by_group: dict[str, list[str]] = defaultdict(list)
        # A light group's tasks this pass looks at one by one: those its scope names, and
        # those it writes (``_put_task``). Only a scoped pass has light groups.
        self.looked: dict[str, set[str]] = {
            group: set(ids) for group, ids in light.items() if only is not None and group in only
        }
        # An empty scope (nothing changed since the last pass: the leader's tick) looks at no
        # task, and at 50,000 tasks this loop alone took 22 ms.
        for task in self.state.tasks.values() if only is None or only else ():
            key = task.group_key.key
            if only is None or key in only:
                self.by_group[key].append(task.id)

    def run(self) -> Plan:
        self._mark_lost()
        self._mark_dead()
        for group_id, group in sorted(self.state.groups.items()):
            if self.only is None or group_id in self.only:
                self._converge_group(group_id, group)
        if self.only is None:
            self._stop_orphans()  # a scoped pass has none to stop (``scope``)
        self._place()
        self._collect()
        if self.only is None:
            diff = registry_diff(self.state, self.memo)
        else:
            diff = registry_diff(self.state, self.memo, self._scoped_tasks_ever())
        self.plan.registry_puts, self.plan.registry_deletes = diff.puts, diff.deletes
        return self.plan

    def _tasks(self) -> list[TaskRecord]:
        """The tasks this pass looks at: every task, or those of the scope's groups (of a
        light group, those it looks at)."""
        if self.only is None:
            return list(self.state.tasks.values())
        tasks = self.state.tasks
        return [tasks[i] for group in self.by_group for i in self._ids(group) if i in tasks]

    def _ids(self, group: str) -> list[str]:
        """The ids of the group's tasks this pass looks at one by one, in the order of
        ``by_group`` (a light group's are fewer)."""
        ids = self.by_group.get(group, [])
        looked = self.looked.get(group)
        return ids if looked is None else [i for i in ids if i in looked]

    def _scoped_tasks_ever(self) -> dict[str, list[str]]:
        """The scope's groups and the ids of every task they held in this pass that it
        looked at, deleted ones included (their registry entries go too)."""
        return {group: self._ids(group) for group in self.only or ()}

    # -- bookkeeping ------------------------------------------------------------------------

    def _put_task(self, task: TaskRecord) -> None:
        group = task.group_key.key
        if task.id not in self.state.tasks:
            self.by_group[group].append(task.id)
        looked = self.looked.get(group)
        if looked is not None:
            looked.add(task.id)
        self.state.tasks[task.id] = task
        self.plan.task_puts[task.id] = task

    def _stop(self, task: TaskRecord, reason: str) -> None:
        self._put_task(task.model_copy(update={"desired": Desired.STOP, "stop_reason": reason}))

    def _running_tasks(self, group_id: str) -> list[TaskRecord]:
        tasks = (self.state.tasks.get(task_id) for task_id in self.by_group.get(group_id, ()))
        return [t for t in tasks if t is not None and t.desired is Desired.RUN]

    # -- passes -----------------------------------------------------------------------------

    def _mark_lost(self) -> None:
        for task in self._tasks():
            if task.node is None or task.node in self.state.alive:
                continue
            if task.node in self.state.spared:
                continue  # its loss is held back (a new leader's, or a stalled one's, grace)
            status = self.state.statuses.get(task.id)
            if status is not None and status.state.terminal:
                continue
            lost = TaskStatus(
                task_id=task.id,
                state=TaskState.LOST,
                message=f"node {task.node} lost",
                container_id=status.container_id if status else None,
                started_at=status.started_at if status else None,
                finished_at=self.now,
                updated_at=self.now,
            )
            self.state.statuses[task.id] = lost
            self.plan.status_puts[task.id] = lost

    def _mark_dead(self) -> None:
        for task in self._tasks():
            if task.desired is not Desired.RUN:
                continue
            state = self.state.task_state(task)
            if not state.terminal:
                continue
            status = self.state.statuses.get(task.id)
            self._stop(task, _describe_death(state, status))
            group = self.state.groups.get(task.group_key.key)
            if group is not None:
                attempt = successor_attempt(task, state, status)
                not_before = successor_not_before(group.spec, attempt, status, self.now)
                # A lost node cannot take it back: the replacement goes anywhere.
                sticky = group.spec.sticky and state is not TaskState.LOST
                node = task.node if sticky else None
                self.seeds[task.group_key.key].append(Seed(attempt, not_before, node))

    def _converge_group(self, group_id: str, group: GroupRecord) -> None:
        tasks = self._running_tasks(group_id)
        # Tasks on a draining node are replaced like those of an older version.
        draining: set[str] = set()
        if self.state.controls:  # no operator's say on any node: none drains
            draining = {t.id for t in tasks if t.node is not None and self.state.draining(t.node)}
        current = [t for t in tasks if t.version == group.version and t.id not in draining]
        old = [t for t in tasks if t.version != group.version or t.id in draining]
        wanted = group.instances
        if not old:
            if len(current) < wanted:
                self._create(group, wanted - len(current))
            elif len(current) > wanted:
                for victim in self._scale_down_victims(group, current, len(current) - wanted):
                    self._stop(victim, f"scaled down to {wanted}")
            return
        self._roll(group, current, old)

    def _roll(self, group: GroupRecord, current: list[TaskRecord], old: list[TaskRecord]) -> None:
        wanted = group.instances
        strategy = group.spec.upgrade_strategy
        min_healthy = math.ceil(wanted * strategy.minimum_health_capacity)
        max_capacity = math.floor(wanted * (1 + strategy.maximum_over_capacity))
        if max_capacity <= min_healthy:
            max_capacity = (
                min_healthy + 1
            )  # Marathon's rule: allow one extra so progress is possible
        # A task counts only once ready (running and, with health checks, healthy): old
        # tasks that are not count for nothing, stop them now; a new one that is not yet
        # ready does not allow stopping an old one.
        remaining_old = []
        for task in old:
            if self.state.task_ready(task):
                remaining_old.append(task)
            else:
                self._stop(task, self._replaced_reason(group, task))
        if len(current) > wanted:
            victims = self._scale_down_victims(group, current, len(current) - wanted)
            for victim in victims:
                self._stop(victim, f"scaled down to {wanted}")
            gone = {victim.id for victim in victims}
            current = [t for t in current if t.id not in gone]
        # Counted once the surplus is stopped: a ready task just scaled down must not let an
        # old one go too.
        healthy = sum(self.state.task_ready(t) for t in current)
        healthy += len(remaining_old)
        can_stop = max(0, healthy - min_healthy)
        for task in sorted(remaining_old, key=lambda t: t.created_at)[:can_stop]:
            self._stop(task, self._replaced_reason(group, task))
            remaining_old.remove(task)
        room = max_capacity - (len(current) + len(remaining_old))
        to_start = min(wanted - len(current), room)
        if to_start > 0:
            self._create(group, to_start)

    def _replaced_reason(self, group: GroupRecord, task: TaskRecord) -> str:
        if task.version != group.version:
            return f"replaced by version {group.version}"
        return f"moved off draining node {task.node}"

    def _create(self, group: GroupRecord, count: int) -> None:
        seeds = self.seeds.get(group.group_key.key, [])
        for _ in range(count):
            seed = seeds.pop(0) if seeds else Seed(0, None)
            task = TaskRecord(
                id=self.new_id(group.service),
                service=group.service,
                labels=list(group.labels),
                version=group.version,
                spec=group.spec,
                attempt=seed.attempt,
                not_before=seed.not_before,
                sticky_node=seed.node,
                created_at=self.now,
            )
            self._put_task(task)

    def _stop_candidates(self, tasks: list[TaskRecord]) -> list[TaskRecord]:
        # A running task that is not ready (its checks have not passed) is less advanced
        # than one that is: it serves no one yet.
        def order(task: TaskRecord) -> tuple[int, bool, float]:
            rank = _STOP_ORDER.get(self.state.task_state(task), 0)
            return (rank, self.state.task_ready(task), -task.created_at)

        return sorted(tasks, key=order)

    def _scale_down_victims(
        self, group: GroupRecord, tasks: list[TaskRecord], count: int
    ) -> list[TaskRecord]:
        """The least advanced and youngest first; with a GROUP_BY constraint, placed tasks
        are taken from the most loaded value first, so the spread stays even (Marathon)."""
        ordered = self._stop_candidates(tasks)
        group_by = next(
            (c for c in group.spec.constraints if c.operator is Operator.GROUP_BY), None
        )
        if group_by is None:
            return ordered[:count]
        unplaced = [t for t in ordered if t.node is None][:count]
        placed = [t for t in ordered if t.node is not None]

        def value_of(task: TaskRecord) -> str | None:
            node = self.state.nodes.get(task.node or "")
            return field_value(node, group_by.field) if node else None

        return unplaced + spread_victims(placed, value_of, count - len(unplaced))

    def _stop_orphans(self) -> None:
        orphans = [
            t
            for t in self.state.tasks.values()
            if t.desired is Desired.RUN and t.group_key.key not in self.state.groups
        ]
        if not orphans:
            return
        self.plan.orphans = True  # stopped below, or kept while a running task needs them
        # Dependencies stop last: a removed service keeps running while a task that needs
        # it still runs (that one is stopped in this pass, or was already asked to stop).
        needed = needed_services(self.state, self.state.tasks.values())
        for task in orphans:
            if task.service not in needed:
                self._stop(task, "group removed")

    def _place(self) -> None:
        waiting = [t for t in self._tasks() if t.desired is Desired.RUN and t.node is None]
        if not waiting:
            # Nothing to place: no books of every node (a pass per registration while 3,000
            # agents join would otherwise build them 3,000 times).
            return
        ready = [n for name, n in self.state.nodes.items() if self.state.schedulable(name)]
        # An ineligible node keeps its tasks: they count for their groups' constraints. A
        # draining node's are being moved off, and counting them could hold the drain forever
        # (their replacements may only fit where they are, e.g. CLUSTER without a value).
        closed = [
            n
            for name, n in self.state.nodes.items()
            if name in self.state.alive
            and not self.state.schedulable(name)
            and not self.state.draining(name)
        ]
        placer = Placer(ready, StateHoldings(self.state), closed)
        readiness = Readiness(self.state)
        refused: list[tuple[TaskRecord, str | None, int, Unplaceable, int]] = []
        for task in sorted(waiting, key=lambda t: (t.created_at, t.id)):
            if task.not_before is not None and task.not_before > self.now:
                self.plan.wake_at = min(self.plan.wake_at or task.not_before, task.not_before)
                reason = f"restart backoff after {task.attempt} quick failures"
                if task.pending_reason != reason:
                    self._put_task(task.model_copy(update={"pending_reason": reason}))
                continue
            waiting_for = readiness.waiting_reason(task)
            if waiting_for is not None:
                if task.pending_reason != waiting_for:
                    self._put_task(task.model_copy(update={"pending_reason": waiting_for}))
                continue
            group = self.state.groups.get(task.group_key.key)
            instances = group.instances if group else task.spec.instances
            sticky = task.sticky_node
            only = sticky if sticky is not None and self.state.schedulable(sticky) else None
            result = placer.place(
                task.id, task.group_key.key, task.spec, only=only, instances=instances
            )
            if isinstance(result, Placement):
                self._settle(task, result)
            else:
                refused.append((task, only, instances, result, placer.placements))
        # A task that fits nowhere says why as the round leaves the nodes, which is what the
        # next pass sees: a reason given before later placements filled a node could name
        # another filter for it, and the next pass would write the task again to say so.
        # (A later placement only fills nodes, so the task still fits nowhere.)
        for task, only, instances, result, placements in refused:
            if placer.placements != placements:
                group_key = task.group_key.key
                again = placer.place(task.id, group_key, task.spec, only=only, instances=instances)
                self._settle(task, again)
            else:
                self._settle(task, result)
        self.plan.waiting_groups = frozenset(
            task.group_key.key
            for task in (self.state.tasks[t.id] for t in waiting)
            if task.node is None
        )

    def _settle(self, task: TaskRecord, result: Placement | Unplaceable) -> None:
        if isinstance(result, Placement):
            update = {"node": result.node, "host_ports": result.host_ports, "pending_reason": None}
            self._put_task(task.model_copy(update=update))
        elif task.pending_reason != result.reason:
            self._put_task(task.model_copy(update={"pending_reason": result.reason}))

    def _collect(self) -> None:
        history: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for task in self._tasks():
            if task.desired is not Desired.STOP:
                continue
            if task.node is None:
                self._delete(task.id)
                continue
            state = self.state.task_state(task)
            if not state.terminal:
                continue
            if state is TaskState.STOPPED or task.group_key.key not in self.state.groups:
                self._delete(task.id)
                continue
            status = self.state.statuses.get(task.id)
            ended = status.finished_at if status and status.finished_at else task.created_at
            history[task.group_key.key].append((ended, task.id))
        for entries in history.values():
            entries.sort(reverse=True)
            for index, (ended, task_id) in enumerate(entries):
                if index >= HISTORY_PER_GROUP or self.now - ended > HISTORY_MAX_AGE:
                    self._delete(task_id)
        if self.only is not None:
            return  # statuses of tasks already gone: only a full pass looks for them
        for task_id in self.state.statuses:
            if task_id not in self.state.tasks:
                self.plan.status_deletes.add(task_id)

    def _delete(self, task_id: str) -> None:
        self.state.tasks.pop(task_id, None)
        self.plan.task_puts.pop(task_id, None)
        self.plan.task_deletes.add(task_id)
        if self.state.statuses.pop(task_id, None) is not None:
            self.plan.status_deletes.add(task_id)
        self.plan.status_puts.pop(task_id, None)


def _describe_death(state: TaskState, status: TaskStatus | None) -> str:
    if state is TaskState.EXITED and status is not None:
        # The agent's word when it has one: e.g. it killed the task for failing its checks.
        return status.message or f"exited with code {status.exit_code}"
    if state is TaskState.FAILED and status is not None:
        return f"failed to start: {status.message}"
    if state is TaskState.LOST and status is not None and status.message:
        return status.message
    return state.value
