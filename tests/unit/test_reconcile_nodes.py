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
from theseus.model.nodes import NodeControl
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
