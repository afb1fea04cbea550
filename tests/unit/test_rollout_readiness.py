"""Rollouts count ready tasks only (``ClusterState.task_ready``): a new task that runs but is
not (yet) healthy never lets an old one stop."""

from __future__ import annotations

import math

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
from theseus.model.groups import GroupRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]
CHECK = {"protocol": "COMMAND", "command": "true"}
STRATEGY = {"minimum_health_capacity": 0.5, "maximum_over_capacity": 0.0}


def _updated(group: GroupRecord, **spec: object) -> GroupRecord:
    new = GroupSpec.model_validate({**group.spec.model_dump(), **spec})
    return group.model_copy(update={"spec": new, "version": new.version()})


def _ready(state: ClusterState) -> int:
    return sum(1 for t in state.tasks.values() if t.desired is Desired.RUN and state.task_ready(t))


def _unhealthy_new(state: ClusterState, version: str) -> None:
    """Agents: tasks of ``version`` run, but their checks never pass."""
    for task in state.tasks.values():
        if task.version == version and task.desired is Desired.RUN and task.node:
            state.statuses[task.id] = make_status(task, TaskState.RUNNING, healthy=False)


def test_new_tasks_never_ready_never_take_capacity_below_the_minimum() -> None:
    v1 = make_group(instances=4, upgrade_strategy=STRATEGY)
    old = [make_task(v1, node) for node in ("n1", "n2", "n3", "n1")]
    v2 = _updated(v1, environment={"V": "2"}, health_checks=[CHECK])
    state = make_state([v2], NODES, old, running(old))
    floor = math.ceil(4 * 0.5)
    stops = 0
    for step in range(10):
        plan = plan_of(state, now=100.0 + step)
        stops += sum(1 for t in stopped(plan) if t.version == v1.version)
        apply_plan(state, plan)
        _unhealthy_new(state, v2.version)
        assert _ready(state) >= floor
    assert stops == 4 - floor  # two went at once (capacity allowed it); never more
    old_running = [t for t in state.tasks.values() if t.version == v1.version]
    assert sum(t.desired is Desired.RUN for t in old_running) == floor


def test_rollout_proceeds_as_new_tasks_become_healthy() -> None:
    v1 = make_group(instances=2, upgrade_strategy={"minimum_health_capacity": 1.0})
    old = [make_task(v1, "n1"), make_task(v1, "n2")]
    v2 = _updated(v1, environment={"V": "2"}, health_checks=[CHECK])
    state = make_state([v2], NODES, old, running(old))
    plan = plan_of(state)
    assert len(created(plan, state)) == 1 and not stopped(plan)
    apply_plan(state, plan)
    _unhealthy_new(state, v2.version)
    assert not stopped(plan_of(state))  # running, not healthy: counts for nothing
    new = next(t for t in state.tasks.values() if t.version == v2.version)
    state.statuses[new.id] = make_status(new, TaskState.RUNNING, healthy=True)
    assert len(stopped(plan_of(state))) == 1  # healthy: one old task may go


def test_an_old_task_that_is_not_ready_counts_for_nothing() -> None:
    v1 = make_group(
        instances=2, health_checks=[CHECK], upgrade_strategy={"minimum_health_capacity": 1.0}
    )
    healthy, sick = make_task(v1, "n1"), make_task(v1, "n2")
    statuses = [
        make_status(healthy, TaskState.RUNNING, healthy=True),
        make_status(sick, TaskState.RUNNING, healthy=False),
    ]
    v2 = _updated(v1, environment={"V": "2"})
    plan = plan_of(make_state([v2], NODES, [healthy, sick], statuses))
    assert {t.id for t in stopped(plan)} == {sick.id}


def test_a_scale_down_during_a_rollout_keeps_the_healthy_capacity() -> None:
    """Found while exploring with the property tests' states: scaled from 3 to 1 mid-rollout,
    the pass stopped the two surplus new tasks that were healthy (the youngest), then
    stopped the old task too, because it had counted them as healthy before stopping them:
    no task was left ready. The old one must run until a new one is ready."""
    v1 = make_group(instances=3)
    old = make_task(v1, "n1")
    v2 = _updated(v1, instances=1, environment={"V": "2"}, health_checks=[CHECK])
    starting = make_task(v2, "n2", created_at=1.0)  # running, checks not passed yet
    young = [make_task(v2, "n3", created_at=5.0), make_task(v2, "n1", created_at=6.0)]
    statuses = [
        make_status(old, TaskState.RUNNING),
        make_status(starting, TaskState.RUNNING),
        *(make_status(t, TaskState.RUNNING, healthy=True) for t in young),
    ]
    state = make_state([v2], NODES, [old, starting, *young], statuses)
    plan = plan_of(state)
    gone = {t.id for t in stopped(plan)}
    assert len(gone) >= 2  # down to one new task, or to the old one and one new
    still_ready = [t for t in state.tasks.values() if t.id not in gone and state.task_ready(t)]
    assert len(still_ready) >= 1  # ceil(1 instance * minimum_health_capacity 1.0)
