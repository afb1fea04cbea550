"""The reconciler: scale, roll, heal, back off, orphan, place and collect (pure)."""

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
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.reconcile import HISTORY_PER_GROUP
from theseus.reconciler.registry import desired_registry

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]


def test_new_group_gets_its_instances_placed_and_spread() -> None:
    group = make_group(instances=4)
    state = make_state([group], NODES)
    plan = plan_of(state)
    new = created(plan, state)
    assert len(new) == 4
    assert {t.node for t in new} == {"n1", "n2", "n3"}
    assert all(t.host_ports["api"] for t in new)


def test_converged_group_needs_no_change() -> None:
    group = make_group(instances=2)
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    state = make_state([group], NODES, tasks, running(tasks))
    state.registry = desired_registry(state)
    assert plan_of(state).empty


def test_scale_down_stops_least_advanced_then_youngest() -> None:
    group = make_group(instances=1)
    old = make_task(group, "n1", created_at=1.0)
    young = make_task(group, "n2", created_at=5.0)
    waiting = make_task(group, None, created_at=0.5)
    state = make_state([group], NODES, [old, young, waiting], running([old, young]))
    plan = plan_of(state)
    assert {t.id for t in stopped(plan)} == {young.id}
    assert plan.task_deletes == {waiting.id}  # never placed: nothing to stop on a node


def test_scale_down_stops_a_task_that_is_not_ready_before_a_ready_one() -> None:
    """Found while exploring with the property tests' states: scaled to 1, the pass stopped
    the younger task although it was the healthy one, and kept one whose checks had not
    passed: the service was left with no ready task (and no registry entry)."""
    group = make_group(instances=1, health_checks=[{"protocol": "COMMAND", "command": "true"}])
    checking = make_task(group, "n1", created_at=1.0)
    healthy = make_task(group, "n2", created_at=5.0)
    statuses = [
        make_status(checking, TaskState.RUNNING),
        make_status(healthy, TaskState.RUNNING, healthy=True),
    ]
    plan = plan_of(make_state([group], NODES, [checking, healthy], statuses))
    assert [t.id for t in stopped(plan)] == [checking.id]


def test_only_instances_changed_creates_without_restarting() -> None:
    group = make_group(instances=2)
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    scaled = group.model_copy(update={"spec": group.spec.model_copy(update={"instances": 4})})
    plan = plan_of(make_state([scaled], NODES, tasks, running(tasks)))
    assert len(created(plan, make_state([scaled], NODES, tasks))) == 2
    assert not stopped(plan)


def test_rolling_update_starts_one_new_before_stopping_an_old() -> None:
    old_group = make_group(instances=3)
    tasks = [make_task(old_group, n.name) for n in NODES]
    new_group = make_group(instances=3, environment={"A": "2"})
    state = make_state([new_group], NODES, tasks, running(tasks))
    plan = plan_of(state)
    assert len(created(plan, state)) == 1
    assert not stopped(plan)


def test_rolling_update_stops_an_old_once_a_new_runs() -> None:
    old_group = make_group(instances=3)
    new_group = make_group(instances=3, environment={"A": "2"})
    olds = [make_task(old_group, n.name) for n in NODES]
    new = make_task(new_group, "n1")
    state = make_state([new_group], NODES, [*olds, new], running([*olds, new]))
    plan = plan_of(state)
    assert len(stopped(plan)) == 1 and stopped(plan)[0].version == old_group.version
    assert len(created(plan, state)) == 1  # and the next new one starts at once


def test_rolling_update_never_drops_below_instances_until_done() -> None:
    """Simulate the rollout to the end: running tasks never fall below ``instances``."""
    old_group = make_group(instances=4)
    new_group = make_group(instances=4, environment={"A": "2"})
    tasks = {t.id: t for t in (make_task(old_group, n) for n in ["n1", "n2", "n3", "n1"])}
    statuses = {t.id: make_status(t, TaskState.RUNNING) for t in tasks.values()}
    state = make_state([new_group], NODES)
    state.tasks, state.statuses = tasks, statuses
    for _ in range(30):
        plan = plan_of(state)
        apply_plan(state, plan)
        live = [
            t
            for t in state.tasks.values()
            if t.desired is Desired.RUN and state.statuses.get(t.id, None) is not None
        ]
        assert len(live) >= 4
        if plan.empty:
            break
    versions = {t.version for t in state.tasks.values()}
    assert versions == {new_group.version} and len(state.tasks) == 4


def test_rolling_update_honours_the_new_instances() -> None:
    old_group = make_group(instances=2)
    new_group = make_group(instances=3, environment={"A": "2"})
    olds = [make_task(old_group, "n1"), make_task(old_group, "n2")]
    news = [make_task(new_group, n.name) for n in NODES]
    state = make_state([new_group], NODES, [*olds, *news], running([*olds, *news]))
    plan = plan_of(state)
    assert {t.id for t in stopped(plan)} == {t.id for t in olds}


def test_a_dead_task_is_replaced_at_once_after_a_healthy_run() -> None:
    group = make_group(instances=2)
    alive, dead = make_task(group, "n1"), make_task(group, "n2")
    statuses = [
        make_status(alive, TaskState.RUNNING),
        make_status(dead, TaskState.EXITED, exit_code=137, started_at=0.0, finished_at=50.0),
    ]
    state = make_state([group], NODES, [alive, dead], statuses)
    plan = plan_of(state)
    assert stopped(plan)[0].id == dead.id
    assert stopped(plan)[0].stop_reason == "exited with code 137"
    (replacement,) = created(plan, state)
    assert replacement.attempt == 0 and replacement.node is not None


def test_a_task_killed_for_its_health_checks_is_replaced_and_says_why() -> None:
    group = make_group(instances=1, ports={"api": 5000}, health_checks=[{"path": "/health"}])
    dead = make_task(group, "n1")
    reason = "killed after 3 failed health checks in a row: HTTP 404 from /health"
    status = make_status(
        dead, TaskState.EXITED, exit_code=137, message=reason, started_at=0.0, finished_at=50.0
    )
    state = make_state([group], NODES, [dead], [status])
    plan = plan_of(state)
    assert stopped(plan)[0].id == dead.id
    assert stopped(plan)[0].stop_reason == reason
    (replacement,) = created(plan, state)
    assert replacement.node is not None


def test_crash_loop_backs_off_exponentially() -> None:
    group = make_group(instances=1, backoff_seconds=1.0, backoff_factor=2.0)
    delays = []
    for attempt in range(1, 5):
        task = make_task(group, "n1", attempt=attempt)
        status = make_status(task, TaskState.EXITED, exit_code=1, started_at=99.0, finished_at=99.5)
        state = make_state([group], NODES, [task], [status])
        (replacement,) = created(plan_of(state), state)
        assert replacement.attempt == attempt + 1
        delays.append((replacement.not_before or 99.5) - 99.5)
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_backoff_keeps_a_task_pending_until_its_time() -> None:
    group = make_group(instances=1)
    waiting = make_task(group, None, attempt=3, not_before=150.0)
    plan = plan_of(make_state([group], NODES, [waiting]))
    assert plan.task_puts[waiting.id].node is None
    assert "backoff" in (plan.task_puts[waiting.id].pending_reason or "")
    assert plan.wake_at == 150.0
    later = plan_of(make_state([group], NODES, [waiting]), now=151.0)
    assert later.task_puts[waiting.id].node is not None


def test_tasks_of_a_lost_node_are_marked_lost_and_replaced_elsewhere() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running([task]), lost={"n1"})
    plan = plan_of(state)
    assert plan.status_puts[task.id].state is TaskState.LOST
    (replacement,) = created(plan, state)
    assert replacement.node in {"n2", "n3"} and replacement.attempt == 0


def test_unplaceable_tasks_wait_with_a_reason() -> None:
    group = make_group(instances=3, cpus=1.5)
    state = make_state([group], [make_node("n1", cpus=2.0), make_node("n2", cpus=2.0)])
    new = created(plan_of(state), state)
    assert sum(t.node is not None for t in new) == 2
    (waiting,) = [t for t in new if t.node is None]
    assert waiting.pending_reason == "0/2 nodes can run it: 2 nodes: insufficient cpus (needs 1.5)"


def test_an_unplaceable_task_says_why_as_the_round_leaves_the_nodes() -> None:
    """Found by the property tests: the reason was given before later placements of the
    same pass filled the node, so the next pass, finding another reason, wrote the task
    again (a second pass over a pass's own result must write nothing)."""
    picky = make_group("db", instances=1, constraints=[["rack", "IS", "r9"]])
    waiting = make_task(picky, None, created_at=1.0)  # placed first, and refused
    filler = make_group("web", instances=2, cpus=0.25)  # then fills the node
    state = make_state([picky, filler], [make_node("n1", cpus=0.5)], [waiting])
    plan = plan_of(state)
    assert [t.node for t in created(plan, state)] == ["n1", "n1"]
    reason = "0/1 nodes can run it: 1 node: insufficient cpus (needs 0.1)"
    assert plan.task_puts[waiting.id].pending_reason == reason
    for task in plan.task_puts.values():  # committed, and no agent has reported yet
        state.index_task(state.tasks.get(task.id), task)
        state.tasks[task.id] = task
    state.registry.update(plan.registry_puts)
    assert plan_of(state).empty


def test_removed_group_tasks_stop_and_are_collected() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    plan = plan_of(make_state([], NODES, [task], running([task])))
    assert stopped(plan)[0].stop_reason == "group removed"
    done = task.model_copy(update={"desired": Desired.STOP})
    plan = plan_of(make_state([], NODES, [done], [make_status(done, TaskState.STOPPED)]))
    assert plan.task_deletes == {done.id} and plan.status_deletes == {done.id}


def test_history_of_dead_tasks_is_bounded() -> None:
    group = make_group(instances=0)
    dead = [make_task(group, "n1", desired=Desired.STOP) for _ in range(HISTORY_PER_GROUP + 3)]
    statuses = [
        make_status(t, TaskState.EXITED, exit_code=1, finished_at=float(i))
        for i, t in enumerate(dead)
    ]
    plan = plan_of(make_state([group], NODES, dead, statuses))
    assert plan.task_deletes == {t.id for t in dead[:3]}


def test_orphan_statuses_are_deleted() -> None:
    group = make_group(instances=0)
    ghost = make_task(group, "n1")
    plan = plan_of(make_state([group], NODES, [], [make_status(ghost, TaskState.RUNNING)]))
    assert plan.status_deletes == {ghost.id}


def test_a_task_that_never_passed_its_checks_backs_off_however_long_it_ran() -> None:
    checks = [{"path": "/health"}]
    group = make_group(instances=1, ports={"api": 5000}, health_checks=checks)
    for was_healthy, attempt in ((False, 2), (True, 0)):
        dead = make_task(group, "n1", attempt=1)
        status = make_status(
            dead,
            TaskState.EXITED,
            exit_code=143,
            started_at=0.0,
            finished_at=400.0,  # ran far longer than a quick failure
            was_healthy=was_healthy,
        )
        state = make_state([group], NODES, [dead], [status])
        (replacement,) = created(plan_of(state, now=401.0), state)
        assert replacement.attempt == attempt, was_healthy
        assert (replacement.not_before is not None) is (attempt > 1)
