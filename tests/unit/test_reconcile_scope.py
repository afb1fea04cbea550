"""A scoped reconcile pass (``reconcile(..., only=...)``) decides exactly what a full pass
would (hypothesis), and ``pass_scope`` asks for a full pass whenever something every group is
decided on has changed.

The equivalence is checked the way the leader uses it: passes over a reachable state
(``cluster_states``) are committed until one finds nothing to do; then agents report on some
tasks of live groups (any state, healthy or not) and some groups are scaled, as happens
between two passes; the next pass, scoped to the groups those writes touched and those the
last pass left waiting, must plan the very same writes as a pass over everything.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import fields, replace

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.kit.strategies import NOW, cluster_states
from tests.unit.test_reconcile_properties import commit, new_ids
from theseus.model.groups import GroupRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.reconciler.reconcile import Plan, reconcile
from theseus.reconciler.scope import (
    FULL_PASS_SPACING,
    LastPass,
    SharedInputs,
    light_scope,
    pass_scope,
    repair_due,
)

REPORTED = (TaskState.STARTING, TaskState.RUNNING, TaskState.EXITED, TaskState.FAILED)


def touched_groups(before: ClusterState, plan: Plan) -> set[str]:
    """The groups whose tasks or statuses ``plan`` writes (the cache's ``group_index``)."""
    ids = set(plan.task_puts) | plan.task_deletes | set(plan.status_puts) | plan.status_deletes
    groups = {task.group_key.key for task in plan.task_puts.values()}
    groups |= {before.tasks[i].group_key.key for i in ids if i in before.tasks}
    return groups


def record_groups(before: ClusterState, plan: Plan) -> set[str]:
    """The groups whose task records ``plan`` writes (``TaskChanges.records``)."""
    groups = {task.group_key.key for task in plan.task_puts.values()}
    return groups | {before.tasks[i].group_key.key for i in plan.task_deletes if i in before.tasks}


@st.composite
def reports_and_scaling(
    draw: st.DrawFn, state: ClusterState
) -> tuple[ClusterState, set[str], set[str]]:
    """``state`` after agents' reports on some placed tasks of live groups and a new
    instance count for some groups; the groups that changed, and the tasks reported on."""
    after = state.copy()
    after.revision += 1
    changed: set[str] = set()
    reported_ids: set[str] = set()
    placed = sorted(
        t.id
        for t in state.tasks.values()
        if t.node is not None and t.group_key.key in state.groups and t.desired is Desired.RUN
    )
    for task_id in draw(st.lists(st.sampled_from(placed), unique=True)) if placed else []:
        task = state.tasks[task_id]
        reported = draw(st.sampled_from(REPORTED))
        after.statuses[task_id] = TaskStatus(
            task_id=task_id,
            state=reported,
            exit_code=1 if reported is TaskState.EXITED else None,
            message="driver error" if reported is TaskState.FAILED else None,
            container_id=f"c-{task_id}",
            started_at=NOW - 2,
            finished_at=NOW - 1 if reported.terminal else None,
            healthy=draw(st.sampled_from((True, False, None))),
            updated_at=NOW - 1,
        )
        changed.add(task.group_key.key)
        reported_ids.add(task_id)
    for key in draw(st.lists(st.sampled_from(sorted(state.groups)), unique=True, max_size=2)):
        group = state.groups[key]
        spec = group.spec.model_copy(update={"instances": draw(st.integers(0, 5))})
        after.groups[key] = group.model_copy(update={"spec": spec})
        after.group_revisions[key] = after.revision
        changed.add(key)
    return after, changed, reported_ids


def ids_of_round(number: int) -> Callable[[str], str]:
    """New task ids that no earlier pass of the test gave out (each pass counts from 0)."""
    counter = itertools.count()
    return lambda service: f"{service}.r{number}-{next(counter)}"


def same_plan(scoped: Plan, full: Plan) -> None:
    for item in fields(Plan):
        if item.name != "orphans":  # only a full pass looks for them
            assert getattr(scoped, item.name) == getattr(full, item.name), item.name


@given(cluster_states(), st.data())
def test_a_pass_scoped_to_what_changed_plans_what_a_full_pass_would(
    state: ClusterState, data: st.DataObject
) -> None:
    first = reconcile(state, NOW, ids_of_round(1))
    assume(not first.orphans)  # tasks of removed groups still run: the next pass is full
    committed = commit(state, first)
    # The leader's last pass: one that found nothing more to do (the groups a pass writes
    # to are in the next one's scope anyway), and so tells only which groups still wait.
    last = reconcile(committed, NOW, ids_of_round(2))
    after, changed, reported = data.draw(reports_and_scaling(commit(committed, last)))
    only = frozenset(touched_groups(committed, last) | changed | last.waiting_groups)
    full = reconcile(after, NOW, ids_of_round(3))
    scoped = reconcile(after, NOW, ids_of_round(3), only=only)
    same_plan(scoped, full)
    assert not full.orphans
    # The same, with the groups whose only change is statuses of live tasks looked at lightly:
    # the indexes as the cache keeps them (``TaskChanges``), for the writes since ``last``.
    since = LastPass(committed.revision, frozenset(), frozenset(), last.waiting_groups, False)
    records = dict.fromkeys(record_groups(committed, last), after.revision)
    statuses = dict.fromkeys(set(last.status_puts) | last.status_deletes | reported, after.revision)
    light = light_scope(since, after, only, records, statuses)
    lightly = reconcile(after, NOW, ids_of_round(3), only=only, light=light)
    same_plan(lightly, full)


@given(cluster_states(), st.data())
def test_a_pass_looks_lightly_at_the_groups_whose_only_new_task_records_it_wrote_itself(
    state: ClusterState, data: st.DataObject
) -> None:
    """The pass after one that placed tasks (a deploy's first): the task records that pass
    wrote are its own (``LastPass.wrote_until``), so a group where only they and statuses of
    live tasks changed is looked at lightly, and the plan is still a full pass's."""
    first = reconcile(state, NOW, ids_of_round(1))
    assume(not first.orphans)
    committed = commit(state, first)
    after, changed, reported = data.draw(reports_and_scaling(committed))
    only = frozenset(touched_groups(state, first) | changed | first.waiting_groups)
    full = reconcile(after, NOW, ids_of_round(2))
    last = LastPass(
        state.revision,
        frozenset(),
        frozenset(),
        first.waiting_groups,
        False,
        wrote_until=committed.revision,
    )
    records = dict.fromkeys(record_groups(state, first), committed.revision)
    own_statuses = set(first.status_puts) | first.status_deletes
    statuses = dict.fromkeys(own_statuses, committed.revision)
    statuses.update(dict.fromkeys(reported, after.revision))
    light = light_scope(last, after, only, records, statuses)
    lightly = reconcile(after, NOW, ids_of_round(2), only=only, light=light)
    same_plan(lightly, full)


def test_the_groups_a_pass_leaves_waiting_and_the_orphans_it_meets_are_in_its_plan() -> None:
    state = ClusterState(revision=1)
    group = _group("web", instances=2)
    state.groups[group.group_key.key] = group
    plan = reconcile(state, NOW, new_ids())  # no node: both new tasks wait
    assert plan.waiting_groups == {group.group_key.key}
    assert not plan.orphans
    orphan = next(iter(plan.task_puts.values()))
    state.tasks[orphan.id] = orphan
    del state.groups[group.group_key.key]
    assert reconcile(state, NOW, new_ids()).orphans


# -- pass_scope -----------------------------------------------------------------------------


def _group(service: str, instances: int) -> GroupRecord:
    spec = GroupSpec(image="sim", instances=instances, cpus=0.1, mem=1)
    return GroupRecord(
        service=service,
        labels=[],
        spec=spec,
        version=spec.version(),
        created_at=0.0,
        updated_at=0.0,
    )


def _two_groups(revision: int) -> ClusterState:
    state = ClusterState(revision=revision)
    for service in ("web", "db"):
        group = _group(service, 1)
        state.groups[group.group_key.key] = group
        state.group_revisions[group.group_key.key] = 5
    return state


WEB, DB = "web/[]", "db/[]"
LAST = LastPass(
    revision=10,
    groups=frozenset({WEB, DB}),
    spared=frozenset(),
    waiting_groups=frozenset(),
    orphans=False,
)
STEADY = SharedInputs(alive=9, nodes=8)


def test_a_pass_is_scoped_to_the_groups_that_changed_and_those_left_waiting() -> None:
    snapshot = _two_groups(revision=20)
    assert pass_scope(LAST, snapshot, {WEB: 10, DB: 3}, STEADY) == frozenset()
    assert pass_scope(LAST, snapshot, {WEB: 11, DB: 3}, STEADY) == frozenset({WEB})
    snapshot.group_revisions[DB] = 15  # the db group was scaled
    assert pass_scope(LAST, snapshot, {WEB: 11, DB: 3}, STEADY) == frozenset({WEB, DB})
    waiting = replace(LAST, waiting_groups=frozenset({DB, "gone/[]"}))
    assert pass_scope(waiting, _two_groups(20), {}, STEADY) == frozenset({DB})


def test_a_pass_is_full_when_what_every_group_is_decided_on_changed() -> None:
    snapshot = _two_groups(revision=20)
    assert pass_scope(None, snapshot, {}, STEADY) is None  # the term's first pass
    assert pass_scope(LAST, snapshot, {}, SharedInputs(alive=11, nodes=8)) is None
    assert pass_scope(LAST, snapshot, {}, SharedInputs(alive=9, nodes=11)) is None
    orphans = replace(LAST, orphans=True)
    assert pass_scope(orphans, snapshot, {}, STEADY) is None
    spared = _two_groups(revision=20)
    spared.spared = frozenset({"n1"})
    assert pass_scope(LAST, spared, {}, STEADY) is None
    removed = _two_groups(revision=20)
    del removed.groups[DB]
    assert pass_scope(LAST, removed, {}, STEADY) is None


def test_the_registry_repair_comes_at_its_interval_or_ten_full_passes_apart() -> None:
    assert repair_due(now=3.0, last_repair=0.0, repair_interval=3.0, full_took=0.01)
    assert not repair_due(now=2.9, last_repair=0.0, repair_interval=3.0, full_took=0.01)
    took = 1.0  # a full pass at 50,000 tasks beside a busy event loop
    assert not repair_due(now=9.0, last_repair=0.0, repair_interval=3.0, full_took=took)
    assert repair_due(
        now=FULL_PASS_SPACING * took, last_repair=0.0, repair_interval=3.0, full_took=took
    )


def _with_tasks(revision: int) -> ClusterState:
    """``_two_groups`` with two tasks in each group, all running on the live node n1."""
    state = _two_groups(revision)
    state.alive["n1"] = 1
    for group in list(state.groups.values()):
        for n in (1, 2):
            task = TaskRecord(
                id=f"{group.service}.{n}",
                service=group.service,
                labels=[],
                version=group.version,
                spec=group.spec,
                node="n1",
                created_at=0.0,
            )
            state.tasks[task.id] = task
            state.index_task(None, task)
            state.statuses[task.id] = _status(task.id, TaskState.RUNNING)
    return state


def _status(task_id: str, state: TaskState) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=state, started_at=1.0, updated_at=2.0)


def test_a_group_whose_only_change_is_live_statuses_is_looked_at_lightly() -> None:
    snapshot = _with_tasks(revision=20)
    both = frozenset({WEB, DB})
    statuses = {"web.1": 12, "db.2": 9}  # db.2's change is older than the last pass
    light = light_scope(LAST, snapshot, both, {}, statuses)
    assert light == {WEB: frozenset({"web.1"}), DB: frozenset()}
    # Not while the last pass left it waiting, nor once a task record or its record changed.
    assert WEB not in light_scope(
        replace(LAST, waiting_groups=frozenset({WEB})), snapshot, both, {}, statuses
    )
    assert WEB not in light_scope(LAST, snapshot, both, {WEB: 11}, statuses)
    # Unless the last pass wrote that task record itself (its commit reached revision 11).
    wrote = replace(LAST, wrote_until=11)
    assert WEB in light_scope(wrote, snapshot, both, {WEB: 11}, statuses)
    assert WEB not in light_scope(wrote, snapshot, both, {WEB: 12}, statuses)
    snapshot.group_revisions[WEB] = 11
    assert WEB not in light_scope(LAST, snapshot, both, {}, statuses)
    # Nor when no pass came before, or the pass is over everything.
    assert light_scope(None, snapshot, both, {}, statuses) == {}
    assert light_scope(LAST, snapshot, None, {}, statuses) == {}


def test_a_group_in_which_a_task_ended_or_lost_its_status_is_looked_at_whole() -> None:
    # A task that ended may replace the oldest of its group's history (five kept): the pass
    # must see every task of the group.
    for ended in (TaskState.EXITED, TaskState.FAILED, TaskState.LOST, TaskState.STOPPED):
        snapshot = _with_tasks(revision=20)
        snapshot.statuses["web.2"] = _status("web.2", ended)
        light = light_scope(LAST, snapshot, frozenset({WEB}), {}, {"web.1": 12, "web.2": 13})
        assert light == {}, ended
    snapshot = _with_tasks(revision=20)
    del snapshot.statuses["web.2"]
    assert light_scope(LAST, snapshot, frozenset({WEB}), {}, {"web.2": 13}) == {}
    # Reported running, on a node that is not alive (nor spared): the task is lost.
    snapshot = _with_tasks(revision=20)
    snapshot.alive.clear()
    assert light_scope(LAST, snapshot, frozenset({WEB}), {}, {"web.1": 12}) == {}
    snapshot.spared = frozenset({"n1"})  # its loss held back: still alive to the pass
    assert light_scope(LAST, snapshot, frozenset({WEB}), {}, {"web.1": 12}) == {
        WEB: frozenset({"web.1"})
    }
