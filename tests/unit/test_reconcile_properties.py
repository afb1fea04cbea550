"""Properties of one reconcile pass over any reachable cluster state (hypothesis): it never
keeps more tasks of a group than its instances (or, rolling out, its rollout capacity), stops
old tasks only above the healthy capacity, places only on alive schedulable nodes, never
over-commits a node or breaks a constraint, and a second pass over its result writes nothing.

The states come from ``tests.kit.strategies.cluster_states``; the settings (examples,
deadline, determinism) from the profile loaded in ``tests/conftest.py``. Each test states its
invariant exactly. A pass's plan is applied as the leader's cache sees it once etcd echoes
the writes back (``commit``): no agent acts in between.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from hypothesis import given

from tests.kit.strategies import EPSILON, NOW, cluster_states
from theseus.model.constraints import Constraint, Operator
from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord
from theseus.reconciler.reconcile import Plan, reconcile


def new_ids() -> Callable[[str], str]:
    counter = itertools.count()
    return lambda service: f"{service}.new{next(counter)}"


def run_pass(state: ClusterState) -> tuple[Plan, ClusterState]:
    plan = reconcile(state, NOW, new_ids())
    return plan, commit(state, plan)


def commit(state: ClusterState, plan: Plan) -> ClusterState:
    """The state after ``plan``'s writes, as the leader's cache holds it once etcd has
    echoed them: tasks, statuses and registry entries put and deleted."""
    after = state.copy()
    after.revision += 1
    for task in plan.task_puts.values():
        after.index_task(after.tasks.get(task.id), task)
        after.tasks[task.id] = task
    for task_id in plan.task_deletes:
        after.index_task(after.tasks.pop(task_id, None), None)
    after.statuses.update(plan.status_puts)
    for task_id in plan.status_deletes:
        after.statuses.pop(task_id, None)
    after.registry.update(plan.registry_puts)
    for key in plan.registry_deletes:
        after.registry.pop(key, None)
    return after


def new_placements(before: ClusterState, plan: Plan) -> list[TaskRecord]:
    """Tasks the pass put on a node (new ones, or pending ones it placed), in the order the
    pass placed them: the oldest first (``created_at``, then id)."""
    placed = [
        t
        for t in plan.task_puts.values()
        if t.node is not None and (t.id not in before.tasks or before.tasks[t.id].node is None)
    ]
    return sorted(placed, key=lambda t: (t.created_at, t.id))


def holds(state: ClusterState, task: TaskRecord) -> bool:
    """Whether ``task`` holds resources on its node: placed, and not ended (a task on a lost
    node counts as lost)."""
    return task.node is not None and not state.task_state(task).terminal


def dead(state: ClusterState, task: TaskRecord) -> bool:
    """Ended: exited, failed, stopped or lost (its node is not alive)."""
    return state.task_state(task).terminal


def is_old(state: ClusterState, group: GroupRecord, task: TaskRecord) -> bool:
    """Being replaced by a rollout: of another version, or on a draining node."""
    return task.version != group.version or (task.node is not None and state.draining(task.node))


def describe(plan: Plan) -> str:
    lines = [f"put task {t.id}: {t.model_dump(exclude={'spec'})}" for t in plan.task_puts.values()]
    lines += [f"delete task {i}" for i in sorted(plan.task_deletes)]
    lines += [f"put status {s.task_id}: {s.state}" for s in plan.status_puts.values()]
    lines += [f"delete status {i}" for i in sorted(plan.status_deletes)]
    lines += [f"put registry {k}" for k in sorted(plan.registry_puts)]
    lines += [f"delete registry {k}" for k in sorted(plan.registry_deletes)]
    return "\n".join(lines)


# -- instances ------------------------------------------------------------------------------


def rollout_capacity(group: GroupRecord) -> int:
    """The most tasks a rolling group may have meant to run: Marathon's
    ``floor(instances * (1 + maximum_over_capacity))``, raised to
    ``ceil(instances * minimum_health_capacity) + 1`` when it is not above that (Marathon's
    "+1" rule, without which a rollout at full health could never start a new task)."""
    strategy = group.spec.upgrade_strategy
    wanted = group.instances
    most = math.floor(wanted * (1 + strategy.maximum_over_capacity))
    least = math.ceil(wanted * strategy.minimum_health_capacity)
    return most if most > least else least + 1


@given(cluster_states())
def test_a_pass_never_keeps_more_than_instances_tasks_of_a_group(state: ClusterState) -> None:
    """After a pass, for every group, counting the tasks it means to run (``desired`` run,
    placed or not; a task being stopped is not counted, its agent is stopping it):

    * those of the group's current version on nodes that are not draining are at most
      ``instances``;
    * if there are no others (no older version, none on a draining node: no rollout), all of
      them are at most ``instances``, and exactly ``instances`` if there were none before
      the pass either (among those that had not ended: a dead task is replaced);
    * during a rollout, the pass creates a task only while all of them stay within
      ``rollout_capacity`` (``maximum_over_capacity`` lets a rollout run extra tasks, and a
      drain is a rollout). A group can be above that bound before the pass (its instances or
      upgrade strategy changed mid-rollout, or a node was drained), and then the pass adds
      none; it stops old tasks only as ``minimum_health_capacity`` allows, so it need not
      bring the group down to the bound at once.

    And no task is ever created for a group that was removed.
    """
    plan, after = run_pass(state)
    for key, group in after.groups.items():
        meant = [t for t in after.tasks_of(key) if t.desired is Desired.RUN]
        current = [t for t in meant if not is_old(after, group, t)]
        created = [t for t in meant if t.id not in state.tasks]
        assert len(current) <= group.instances, describe(plan)
        if len(current) == len(meant):
            assert len(meant) <= group.instances, describe(plan)
            before = [t for t in state.tasks_of(key) if t.desired is Desired.RUN]
            if not any(is_old(state, group, t) for t in before if not dead(state, t)):
                assert len(meant) == group.instances, describe(plan)  # no rollout at all
        elif created:
            assert len(meant) <= rollout_capacity(group), describe(plan)
    for task in plan.task_puts.values():
        if task.id not in state.tasks:
            assert task.group_key.key in state.groups, task.id


@given(cluster_states())
def test_a_rollout_stops_a_ready_old_task_only_above_the_healthy_capacity(
    state: ClusterState,
) -> None:
    """If a pass stops a task of a group that was ready (running and, with health checks,
    healthy) and old (another version, or on a draining node), the group still has, after
    the pass, at least ``ceil(instances * minimum_health_capacity)`` ready tasks meant to
    run (Marathon's rule; no agent has reported in between, so readiness is as before)."""
    plan, after = run_pass(state)
    for key, group in after.groups.items():
        was_ready_old = {
            t.id
            for t in state.tasks_of(key)
            if t.desired is Desired.RUN and state.task_ready(t) and is_old(state, group, t)
        }
        stopped = {t.id for t in plan.task_puts.values() if t.desired is Desired.STOP}
        if was_ready_old & stopped:
            least = math.ceil(group.instances * group.spec.upgrade_strategy.minimum_health_capacity)
            ready = [
                t for t in after.tasks_of(key) if t.desired is Desired.RUN and after.task_ready(t)
            ]
            assert len(ready) >= least, describe(plan)


# -- where tasks go -------------------------------------------------------------------------


@given(cluster_states())
def test_a_pass_places_only_on_alive_schedulable_nodes_and_never_moves_a_task(
    state: ClusterState,
) -> None:
    """Every task the pass puts on a node (created, or pending before) goes to a node that is
    alive (in ``alive``) and schedulable (neither ineligible nor draining): never a lost, an
    ineligible or a draining one, not even for a sticky restart. A task that already had a
    node keeps it and its host ports."""
    plan = reconcile(state, NOW, new_ids())
    for task in new_placements(state, plan):
        assert task.node in state.alive, (task.id, task.node)
        control = state.controls.get(task.node)
        assert control is None or (control.schedulable and not control.drain), (task.id, control)
    for task in plan.task_puts.values():
        before = state.tasks.get(task.id)
        if before is not None and before.node is not None:
            assert (task.node, task.host_ports) == (before.node, before.host_ports), task.id


@given(cluster_states())
def test_a_pass_never_over_commits_a_node(state: ClusterState) -> None:
    """After a pass, on every node that got a new task, the tasks that hold resources on it
    (placed and not ended: any version, meant to run or still stopping) need at most its
    cpus and its memory (within ``EPSILON``). On every node, no host port is held twice.
    Each new task has one host port per port of its spec, from its node's range."""
    plan, after = run_pass(state)
    placed = new_placements(state, plan)
    for name in {t.node for t in placed if t.node is not None}:
        node = after.nodes[name]
        holders = [t for t in after.tasks_on(name) if holds(after, t)]
        assert sum(t.spec.cpus for t in holders) <= node.cpus + EPSILON, name
        assert sum(t.spec.mem for t in holders) <= node.mem + EPSILON, name
    for name in after.nodes:
        ports = [p for t in after.tasks_on(name) if holds(after, t) for p in t.host_ports.values()]
        assert len(ports) == len(set(ports)), (name, Counter(ports).most_common(1))
    for task in placed:
        low, high = after.nodes[task.node or ""].port_range
        assert set(task.host_ports) == set(task.spec.ports), task.id
        assert all(low <= p <= high for p in task.host_ports.values()), task.id


# -- constraints ----------------------------------------------------------------------------


def value_of(node: NodeRecord, field_name: str) -> str | None:
    name = field_name.removeprefix("@")
    return node.name if name == "hostname" else node.attributes.get(name)


def same_text(value: str, wanted: str) -> bool:
    """IS: equal text, or equal numbers at three decimals (Marathon's 0.###, half-even)."""
    if value == wanted:
        return True
    try:
        step = Decimal("0.001")
        return Decimal(value).quantize(step, ROUND_HALF_EVEN) == Decimal(wanted).quantize(
            step, ROUND_HALF_EVEN
        )
    except InvalidOperation:
        return False


def allowed(rule: Constraint, value: str | None, placed: Counter[str], groups: int, n: int) -> bool:
    """Whether one more task of a group may take a node whose field value is ``value``, given
    the group's tasks per value (``placed``), the GROUP_BY group count and ``n`` instances;
    written from ``theseus.model.constraints``'s table, apart from the scheduler's code."""
    op = rule.operator
    if value is None:
        return op is Operator.UNLIKE
    here = placed[value]
    in_use = {v for v, count in placed.items() if count > 0}
    if op is Operator.UNIQUE:
        return here == 0
    if op is Operator.CLUSTER:
        return value == rule.value if rule.value is not None else not in_use or value in in_use
    if op is Operator.MAX_PER:
        return here + 1 <= rule.count
    if op is Operator.LIKE:
        return re.fullmatch(rule.value or "", value) is not None
    if op is Operator.UNLIKE:
        return re.fullmatch(rule.value or "", value) is None
    if op is Operator.IS:
        return same_text(value, rule.value or "")
    # GROUP_BY: ``n`` tasks split evenly over ``groups`` values, the remainder one each to as
    # many values. So: a value not in use yet only while fewer than ``groups`` are; one in
    # use up to ``n // groups`` tasks, or one more while fewer than ``n % groups`` values
    # hold more than that.
    per, extra = divmod(n, max(groups, 1))
    if here == 0:
        return len(in_use) < max(groups, 1)
    above = sum(1 for count in placed.values() if count > per)
    return here < per or (here == per and above < extra)


@given(cluster_states())
def test_a_pass_never_breaks_a_constraint(state: ClusterState) -> None:
    """Every task the pass puts on a node satisfies each constraint of its spec on that node,
    judged, in the order the pass placed them, against the tasks of its group that stay on
    their nodes (placed and not ended, whatever their version, whether meant to run or
    stopping, on an alive node that is not draining) plus those placed before it in the
    pass. GROUP_BY without a count spreads over as many values as the schedulable nodes
    offer or those tasks hold.

    A task on an ineligible node counts: it keeps running there, and a second task in its
    rack would break UNIQUE rack for as long. One on a draining node does not: it is being
    moved off, and counting it would hold the drain forever when its replacement can only
    go where it is (CLUSTER without a value, pinned to the drained node's value; UNIQUE on a
    field whose other values are all taken)."""
    plan, after = run_pass(state)
    placed = new_placements(state, plan)
    new = {t.id for t in placed}
    schedulable = [after.nodes[n] for n in after.nodes if after.schedulable(n)]
    on_nodes: dict[str, list[TaskRecord]] = {}
    for task in after.tasks.values():
        if task.id not in new and holds(after, task) and not after.draining(task.node or ""):
            on_nodes.setdefault(task.group_key.key, []).append(task)
    for task in placed:
        node = after.nodes[task.node or ""]
        group = after.groups.get(task.group_key.key)
        instances = group.instances if group else task.spec.instances
        held = on_nodes.setdefault(task.group_key.key, [])
        for rule in task.spec.constraints:
            counts = Counter(
                v for t in held if (v := value_of(after.nodes[t.node or ""], rule.field))
            )
            groups = 0
            if rule.operator is Operator.GROUP_BY:
                offered = {v for n in schedulable if (v := value_of(n, rule.field)) is not None}
                groups = rule.count or len(offered | set(counts))
            value = value_of(node, rule.field)
            assert allowed(rule, value, counts, groups, instances), (
                f"{task.id} on {node.name} ({rule.field}={value}) breaks {rule.describe()}: "
                f"{dict(counts)} of the group already there"
            )
        held.append(task)


# -- convergence ----------------------------------------------------------------------------


@given(cluster_states())
def test_a_second_pass_over_its_own_result_changes_nothing(state: ClusterState) -> None:
    """A pass over the state its own plan leads to, at the same ``now``, writes nothing: no
    task, status or registry entry put or deleted (``Plan.empty``), and it wakes the leader
    at the same backoff deadline (``wake_at``: not a write, but it must not move). Nothing
    else has happened in between (no agent report, no node change), so there is nothing new
    to decide: a non-empty second plan would mean the first one left work undone or wrote
    something it then takes back.

    Work a pass could leave undone the same way twice is checked on the first pass's result:
    no task meant to run has ended (each dead one was replaced), every task on a node that is
    not alive has its end recorded (a terminal status), and ``wake_at`` is the earliest
    backoff deadline still ahead among the unplaced tasks meant to run (``None`` if none)."""
    first, after = run_pass(state)
    second = reconcile(after, NOW, new_ids())
    assert second.empty, describe(second)
    assert second.wake_at == first.wake_at
    meant = [t for t in after.tasks.values() if t.desired is Desired.RUN]
    assert not [t.id for t in meant if dead(after, t)]
    for task in after.tasks.values():
        if task.node is not None and task.node not in after.alive:
            status = after.statuses.get(task.id)
            assert status is not None and status.state.terminal, task.id
    deadlines = [
        t.not_before
        for t in meant
        if t.node is None and t.not_before is not None and t.not_before > NOW
    ]
    assert first.wake_at == min(deadlines, default=None)


def _contents(state: ClusterState) -> dict[str, object]:
    """The containers a pass could change and those the working copy shares with ``state``
    (tasks, statuses, indexes; registry, groups, liveness), copied down to their records,
    which are immutable."""
    return {
        "tasks": dict(state.tasks),
        "statuses": dict(state.statuses),
        "registry": dict(state.registry),
        "by_node": {node: set(ids) for node, ids in state.tasks_by_node.items()},
        "by_group": {group: set(ids) for group, ids in state.tasks_by_group.items()},
        "groups": dict(state.groups),
        "alive": dict(state.alive),
    }


@given(cluster_states())
def test_a_pass_leaves_the_state_it_was_given_as_it_was(state: ClusterState) -> None:
    # A pass works on a copy that owns only its tasks and statuses (``working_copy``) and
    # shares the rest: the leader reads its snapshot again after the pass.
    before = _contents(state)
    reconcile(state, NOW, new_ids())
    assert _contents(state) == before


@given(cluster_states())
def test_a_pass_with_an_empty_scope_changes_nothing(state: ClusterState) -> None:
    # It works on the state it is given, uncopied (``_Pass``): it must neither write nor
    # change that state.
    before = _contents(state)
    plan = reconcile(state, NOW, new_ids(), only=frozenset())
    assert plan.empty
    assert _contents(state) == before
