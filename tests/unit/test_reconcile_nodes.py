"""The reconciler and the operator's node controls: drain, eligibility, sticky restarts."""

from __future__ import annotations

from tests.kit.builders import (
    apply_plan,
    created,
    make_group,
    make_node,
    make_state,
    make_status,
    make_task,
    plan_of,
    running,
    stopped,
)
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.tasks import Desired, TaskState

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]
DRAIN = NodeControl(schedulable=False, drain=True, updated_at=0.0)
INELIGIBLE = NodeControl(schedulable=False, drain=False, updated_at=0.0)


def test_an_ineligible_node_gets_no_new_tasks_but_keeps_its_own() -> None:
    group = make_group(instances=3)
    kept = make_task(group, "n1")
    state = make_state([group], NODES, [kept], running([kept]))
    state.controls["n1"] = INELIGIBLE
    plan = plan_of(state)
    assert {t.node for t in created(plan, state)} == {"n2", "n3"}
    assert not stopped(plan)


def test_drain_starts_a_replacement_before_stopping_the_drained_task() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running([task]))
    state.controls["n1"] = DRAIN
    first = plan_of(state)
    (replacement,) = created(first, state)
    assert replacement.node in {"n2", "n3"}
    assert not stopped(first)  # the old one runs until its replacement does
    apply_plan(state, first)
    second = plan_of(state)
    assert [t.id for t in stopped(second)] == [task.id]
    assert stopped(second)[0].stop_reason == "moved off draining node n1"


def test_drain_moves_every_task_and_never_drops_below_instances() -> None:
    group = make_group(instances=4)
    tasks = [make_task(group, node) for node in ("n1", "n1", "n1", "n2")]
    state = make_state([group], NODES, tasks, running(tasks))
    state.controls["n1"] = DRAIN
    for _ in range(20):
        plan = plan_of(state)
        apply_plan(state, plan)
        live = [t for t in state.tasks.values() if t.desired is Desired.RUN]
        assert len(live) >= 4
        if plan.empty:
            break
    live = [t for t in state.tasks.values() if t.desired is Desired.RUN]
    assert len(live) == 4 and all(t.node != "n1" for t in live)


def test_drain_without_room_elsewhere_keeps_the_tasks_running() -> None:
    group = make_group(instances=1, cpus=1.5)
    task = make_task(group, "n1")
    nodes = [make_node("n1", cpus=2.0), make_node("n2", cpus=1.0)]
    state = make_state([group], nodes, [task], running([task]))
    state.controls["n1"] = DRAIN
    plan = plan_of(state)
    (waiting,) = created(plan, state)
    assert waiting.node is None and "insufficient cpus" in (waiting.pending_reason or "")
    assert not stopped(plan)


def test_sticky_group_restarts_a_dead_task_on_its_node() -> None:
    group = make_group(instances=1, sticky=True)
    dead = make_task(group, "n3")
    status = make_status(dead, TaskState.EXITED, exit_code=1, started_at=1.0, finished_at=50.0)
    state = make_state([group], NODES, [dead], [status])
    (replacement,) = created(plan_of(state), state)
    assert replacement.node == "n3" and replacement.sticky_node == "n3"


def test_non_sticky_group_spreads_its_replacement() -> None:
    group = make_group(instances=2)
    alive, dead = make_task(group, "n1"), make_task(group, "n2")
    statuses = [
        make_status(alive, TaskState.RUNNING),
        make_status(dead, TaskState.EXITED, exit_code=1, started_at=1.0, finished_at=50.0),
    ]
    state = make_state([group], NODES, [alive, dead], statuses)
    (replacement,) = created(plan_of(state), state)
    assert replacement.sticky_node is None and replacement.node != "n1"


def test_sticky_task_moves_when_its_node_is_lost() -> None:
    group = make_group(instances=1, sticky=True)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running([task]), lost={"n1"})
    (replacement,) = created(plan_of(state), state)
    assert replacement.node in {"n2", "n3"} and replacement.sticky_node is None


def test_sticky_task_waits_for_room_on_its_node() -> None:
    group = make_group(instances=1, sticky=True, cpus=1.5)
    other = make_group("hog", instances=1, cpus=1.0)
    hog = make_task(other, "n1")
    waiting = make_task(group, None, sticky_node="n1")
    state = make_state([group, other], NODES, [hog, waiting], running([hog]))
    plan = plan_of(state)
    placed = plan.task_puts[waiting.id]
    assert placed.node is None
    assert placed.pending_reason == "waiting for node n1 (sticky): insufficient cpus (needs 1.5)"


def test_sticky_task_moves_off_a_draining_node() -> None:
    group = make_group(instances=1, sticky=True)
    waiting = make_task(group, None, sticky_node="n1")
    state = make_state([group], NODES, [waiting])
    state.controls["n1"] = DRAIN
    assert plan_of(state).task_puts[waiting.id].node in {"n2", "n3"}


def racked(*racks: str) -> list[NodeRecord]:
    return [make_node(f"n{i}", attributes={"rack": r}) for i, r in enumerate(racks, start=1)]


def test_tasks_on_an_ineligible_node_count_for_constraints() -> None:
    """Found by the property tests: the placer counted only tasks on schedulable nodes, so a
    task an ineligible node kept in rack r1 did not stop a second one going to r1."""
    group = make_group(instances=2, constraints=[["rack", "UNIQUE"]])
    kept = make_task(group, "n1")
    state = make_state([group], racked("r1", "r1", "r2"), [kept], running([kept]))
    state.controls["n1"] = INELIGIBLE
    (new,) = created(plan_of(state), state)
    assert new.node == "n3"


def test_a_drain_is_not_held_back_by_the_tasks_it_moves() -> None:
    """A draining node's tasks do not count: CLUSTER (no value) pinned to the drained node's
    rack lets the replacement go to another rack, or the drain would never end."""
    group = make_group(instances=1, constraints=[["rack", "CLUSTER"]])
    task = make_task(group, "n1")
    state = make_state([group], racked("r1", "r2"), [task], running([task]))
    state.controls["n1"] = DRAIN
    (replacement,) = created(plan_of(state), state)
    assert replacement.node == "n2"


def test_group_by_spreads_over_the_values_an_ineligible_node_holds_too() -> None:
    """GROUP_BY rack over r1, r2 and r3, r3's node ineligible but keeping its task: the
    group still counts three racks, so the replacement goes to the empty r1, not to r2."""
    group = make_group(instances=3, constraints=[["rack", "GROUP_BY"]])
    tasks = [make_task(group, "n2"), make_task(group, "n3")]
    state = make_state([group], racked("r1", "r2", "r3"), tasks, running(tasks))
    state.controls["n3"] = INELIGIBLE
    (new,) = created(plan_of(state), state)
    assert new.node == "n1"
