"""Deployments and spec versions (pure, with a fake clock): what a group change records, and
how the leader's step follows a deployment to success, failure, revert, cancel."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.kit.builders import make_group, make_node, make_spec, make_state, make_status, make_task
from theseus.model.deployments import VERSIONS_KEPT, DeploymentRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.deploy import plan_group, plan_removal, plan_restart, plan_scale
from theseus.reconciler.deployments import (
    DEPLOYMENTS_KEPT,
    DeploymentError,
    GroupWrite,
    cancel_writes,
    group_writes,
    previous_version,
    rollback_change,
    track,
)

GROUP = 'web/["dev"]'
DEADLINE = 30.0
_ids = (f"d-{n:08x}" for n in itertools.count(1))


def new_id() -> str:
    return next(_ids)


def commit(state: ClusterState, writes: list[GroupWrite]) -> None:
    """What etcd and the cache would make of the writes."""
    for write in writes:
        if write.record is not None:
            state.groups[write.group] = write.record
            state.group_revisions[write.group] = state.group_revisions.get(write.group, 0) + 1
        elif write.remove:
            state.groups.pop(write.group, None)
        kept = state.versions.setdefault(write.group, {})
        for version in write.versions:
            kept[version.number] = version
        for number in write.drop_versions:
            kept.pop(number, None)
        for deployment in write.deployments:
            state.deployments[deployment.id] = deployment
            state.deployment_revisions[deployment.id] = state.revision
        state.revision += 1


def deploy(state: ClusterState, now: float, **spec: Any) -> DeploymentRecord:
    strategy = {"progress_deadline_seconds": DEADLINE, **spec.pop("upgrade_strategy", {})}
    change = plan_group("web", make_spec(upgrade_strategy=strategy, **spec), state.groups, now)
    changes, writes = group_writes(state, [change], now, new_id)
    commit(state, writes)
    assert changes[0].deployment is not None
    return state.deployments[changes[0].deployment]


def step(state: ClusterState, now: float) -> list[GroupWrite]:
    tracked = track(state, now, new_id)
    commit(state, tracked.writes)
    return tracked.writes


def run_tasks(state: ClusterState, count: int, ready: bool = True) -> None:
    """Agents: ``count`` more tasks of the group's current version run (healthy or not)."""
    group = state.groups[GROUP]
    for _ in range(count):
        task = make_task(group, "n1")
        state.tasks[task.id] = task
        state.index_task(None, task)
        status = TaskState.RUNNING if ready else TaskState.STARTING
        state.statuses[task.id] = make_status(task, status)


def stop_old(state: ClusterState) -> None:
    group = state.groups[GROUP]
    for task in list(state.tasks.values()):
        if task.version != group.version:
            state.statuses[task.id] = make_status(task, TaskState.STOPPED)


@pytest.fixture
def state() -> ClusterState:
    return make_state([], [make_node("n1")])


def test_create_records_version_1_and_succeeds_once_all_ready(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=2)
    assert (created.kind, created.from_version, created.to_version) == ("create", None, 1)
    assert created.status == "running" and created.deadline == DEADLINE
    assert state.groups[GROUP].version_number == 1 and set(state.versions[GROUP]) == {1}
    run_tasks(state, 1)
    step(state, 5.0)
    assert state.deployments[created.id].ready == 1
    assert state.deployments[created.id].deadline == 5.0 + DEADLINE  # progress: clock restarts
    run_tasks(state, 1)
    step(state, 6.0)
    done = state.deployments[created.id]
    assert done.status == "successful" and done.message == "2 of 2 new tasks ready"


def test_success_waits_for_the_old_tasks_to_be_gone(state: ClusterState) -> None:
    deploy(state, 0.0, instances=1)
    run_tasks(state, 1)
    step(state, 1.0)
    update = deploy(state, 2.0, instances=1, environment={"V": "2"})
    assert (update.kind, update.from_version, update.to_version) == ("update", 1, 2)
    run_tasks(state, 1)
    step(state, 3.0)
    assert state.deployments[update.id].status == "running"  # the v1 task still runs
    stop_old(state)
    step(state, 4.0)
    assert state.deployments[update.id].status == "successful"


def test_no_progress_past_the_deadline_fails_and_reverts(state: ClusterState) -> None:
    deploy(state, 0.0, instances=3)
    run_tasks(state, 3)
    step(state, 1.0)
    v1_spec = state.groups[GROUP].spec
    update = deploy(state, 10.0, instances=3, image="theseus/does-not-exist:1")
    run_tasks(state, 3, ready=False)
    assert not step(state, 10.0 + DEADLINE - 0.1)  # nothing to say yet
    writes = step(state, 10.0 + DEADLINE)
    failed = state.deployments[update.id]
    assert failed.status == "failed"
    revert = state.deployments[writes[0].deployments[-1].id]
    assert failed.message == (
        f"no progress for 30s: 0 of 3 new tasks ready; reverted to version 1 ({revert.id})"
    )
    assert (revert.kind, revert.from_version, revert.to_version) == ("revert", 2, 3)
    group = state.groups[GROUP]
    assert group.spec == v1_spec and group.version_number == 3
    assert set(state.versions[GROUP]) == {1, 2, 3}
    assert state.versions[GROUP][3].spec == v1_spec
    assert not revert.auto_revert  # a revert that fails does not revert again


def test_each_new_ready_task_restarts_the_deadline(state: ClusterState) -> None:
    deploy(state, 0.0, instances=3)
    run_tasks(state, 3)
    step(state, 1.0)
    update = deploy(state, 10.0, instances=3, environment={"V": "2"})
    run_tasks(state, 1)
    step(state, 35.0)  # one ready at 35: the deadline moves to 65
    assert state.deployments[update.id].deadline == 35.0 + DEADLINE
    step(state, 60.0)
    assert state.deployments[update.id].status == "running"  # past 40, the first deadline
    step(state, 65.0)
    failed = state.deployments[update.id]
    assert failed.status == "failed" and "1 of 3 new tasks ready" in failed.message


def test_a_task_that_dies_and_comes_back_is_no_progress(state: ClusterState) -> None:
    deploy(state, 0.0, instances=2, environment={"V": "1"})
    run_tasks(state, 1)
    step(state, 1.0)
    [task] = state.tasks.values()
    state.statuses[task.id] = make_status(task, TaskState.EXITED, exit_code=1)
    step(state, 2.0)
    assert state.deployments[next(iter(state.deployments))].ready == 0
    state.statuses[task.id] = make_status(task, TaskState.RUNNING)
    step(state, 20.0)
    record = next(iter(state.deployments.values()))
    assert record.deadline == 1.0 + DEADLINE and record.best == 1


def test_a_create_that_fails_is_not_reverted(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=2)
    step(state, DEADLINE)
    failed = state.deployments[created.id]
    assert failed.status == "failed" and "reverted" not in failed.message
    assert len(state.deployments) == 1 and state.groups[GROUP].version_number == 1


def test_auto_revert_false_only_fails(state: ClusterState) -> None:
    deploy(state, 0.0, instances=1)
    run_tasks(state, 1)
    step(state, 1.0)
    strategy = {"auto_revert": False}
    update = deploy(state, 2.0, instances=1, image="bad:1", upgrade_strategy=strategy)
    step(state, 2.0 + DEADLINE)
    assert state.deployments[update.id].status == "failed"
    assert state.groups[GROUP].version_number == 2 and len(state.deployments) == 2


def test_a_new_change_supersedes_the_running_deployment(state: ClusterState) -> None:
    first = deploy(state, 0.0, instances=2)
    second = deploy(state, 1.0, instances=3)
    assert second.kind == "scale" and (second.from_version, second.to_version) == (1, 2)
    # The API's write leaves the running deployment alone (the leader writes its progress:
    # the two must not contend); the leader's next pass marks it superseded.
    assert state.deployments[first.id].status == "running"
    step(state, 1.1)
    old = state.deployments[first.id]
    assert old.status == "superseded" and old.message == f"superseded by {second.id} (version 2)"


def test_cancel_rolls_back_to_the_version_before(state: ClusterState) -> None:
    deploy(state, 0.0, instances=2)
    run_tasks(state, 2)
    step(state, 1.0)
    v1_spec = state.groups[GROUP].spec
    update = deploy(state, 2.0, instances=2, environment={"V": "2"})
    write = cancel_writes(state, update.id, False, 3.0, new_id)
    assert write.deployments[0].id == update.id
    commit(state, [write])
    cancelled = state.deployments[update.id]
    rollback = state.deployments[write.deployments[-1].id]
    assert cancelled.status == "cancelled"
    assert cancelled.message == f"cancelled; rolled back to version 1 ({rollback.id})"
    assert (rollback.kind, rollback.from_version, rollback.to_version) == ("rollback", 2, 3)
    assert state.groups[GROUP].spec == v1_spec
    with pytest.raises(DeploymentError, match="already cancelled"):
        cancel_writes(state, update.id, False, 4.0, new_id)
    with pytest.raises(DeploymentError, match="no deployment"):
        cancel_writes(state, "d-nope", False, 4.0, new_id)


def test_forced_cancel_leaves_the_group_as_it_is(state: ClusterState) -> None:
    deploy(state, 0.0, instances=2)
    update = deploy(state, 2.0, instances=2, environment={"V": "2"})
    write = cancel_writes(state, update.id, True, 3.0, new_id)
    assert not write.touches_group and write.deployments[0].id == update.id
    commit(state, [write])
    assert state.deployments[update.id].status == "cancelled"
    assert state.groups[GROUP].version_number == 2


def test_history_keeps_the_last_versions(state: ClusterState) -> None:
    for n in range(VERSIONS_KEPT + 3):
        deploy(state, float(n), instances=1, environment={"N": str(n)})
    numbers = sorted(state.versions[GROUP])
    top = VERSIONS_KEPT + 3
    assert numbers == list(range(top - VERSIONS_KEPT + 1, top + 1))
    assert state.groups[GROUP].version_number == top


def test_scale_and_rollback_are_versions_too(state: ClusterState) -> None:
    deploy(state, 0.0, instances=1)
    deploy(state, 1.0, instances=1, environment={"V": "2"})
    group = state.groups[GROUP]
    change = plan_scale(group, 4, 2.0)
    _, writes = group_writes(state, [change], 2.0, new_id)
    commit(state, writes)
    assert state.groups[GROUP].version_number == 3
    group = state.groups[GROUP]
    assert previous_version(state, group) == 2  # another spec (instances differ)
    change = rollback_change(state, group, 1, 3.0, "rollback")
    changes, writes = group_writes(state, [change], 3.0, new_id)
    commit(state, writes)
    assert changes[0].deployment is not None
    rollback = state.deployments[changes[0].deployment]
    assert (rollback.kind, rollback.to_version) == ("rollback", 4)
    assert not rollback.auto_revert
    assert state.groups[GROUP].spec == state.versions[GROUP][1].spec
    with pytest.raises(DeploymentError, match="no version 9"):
        rollback_change(state, state.groups[GROUP], 9, 4.0, "rollback")


def test_removal_cancels_and_drops_the_history(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=1)
    _, writes = group_writes(
        state, [plan_removal(state.groups[GROUP].group_key, state.groups)], 1.0
    )
    assert writes[0].drop_versions == [1]
    assert not writes[0].deployments  # the leader ends it, below
    commit(state, writes)
    assert GROUP not in state.groups
    step(state, 1.1)
    assert state.deployments[created.id].status == "cancelled"
    assert state.deployments[created.id].message == "group removed"


def test_finished_deployments_beyond_the_bound_are_forgotten(state: ClusterState) -> None:
    for n in range(DEPLOYMENTS_KEPT + 5):
        deploy(state, float(n), instances=1 + n % 2)
        step(state, n + 0.5)  # the leader marks the one before superseded
    tracked = track(state, 100.0, new_id)
    finished = [d for d in state.deployments.values() if not d.running]
    oldest = sorted(finished, key=lambda d: d.updated_at)[: len(finished) - DEPLOYMENTS_KEPT]
    assert len(oldest) == 4 and set(tracked.forget) == {d.id for d in oldest}


def test_wake_at_is_the_earliest_running_deadline(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=1)
    assert track(state, 1.0, new_id).wake_at == created.deadline
    run_tasks(state, 1)
    assert track(state, 2.0, new_id).wake_at is None  # it succeeds in this step


def test_stopping_tasks_of_the_new_version_are_not_counted(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=1)
    run_tasks(state, 2)
    extra = next(iter(state.tasks.values()))
    state.tasks[extra.id] = extra.model_copy(update={"desired": Desired.STOP})
    step(state, 1.0)
    assert state.deployments[created.id].status == "running"  # the stopping one still runs
    state.statuses[extra.id] = make_status(extra, TaskState.STOPPED)
    step(state, 2.0)
    assert state.deployments[created.id].status == "successful"


def test_progress_is_written_at_most_every_second_but_never_too_late(
    state: ClusterState,
) -> None:
    created = deploy(state, 0.0, instances=3)
    run_tasks(state, 1)
    assert not step(state, 0.5)  # too soon after the deployment's last write
    assert step(state, 1.0) and state.deployments[created.id].ready == 1
    run_tasks(state, 1)
    assert not step(state, 1.5)
    assert step(state, 2.0) and state.deployments[created.id].best == 2


def test_progress_near_the_deadline_is_written_at_once(state: ClusterState) -> None:
    created = deploy(state, 0.0, instances=2, upgrade_strategy={"progress_deadline_seconds": 1.5})
    run_tasks(state, 1)
    assert step(state, 0.6)  # 0.6 s after the last write, but the deadline (1.5) is near
    assert state.deployments[created.id].deadline == 0.6 + 1.5


def test_a_group_from_before_histories_gets_its_spec_recorded_as_version_1(
    state: ClusterState,
) -> None:
    legacy = make_group("web", instances=2)  # version_number 0: no history yet
    state.groups[GROUP] = legacy
    update = deploy(state, 1.0, instances=2, environment={"V": "2"})
    assert (update.from_version, update.to_version) == (1, 2)
    assert state.versions[GROUP][1].spec == legacy.spec
    step(state, 1.0 + DEADLINE)
    assert state.deployments[update.id].status == "failed"
    assert state.groups[GROUP].spec == legacy.spec  # reverted to what it ran before


def test_a_restart_is_a_new_version_of_the_same_spec_rolled_out(state: ClusterState) -> None:
    deploy(state, 0.0, instances=2)
    run_tasks(state, 2)
    step(state, 1.0)
    before = state.groups[GROUP]
    changes, writes = group_writes(state, [plan_restart(before, 2.0)], 2.0, new_id)
    commit(state, writes)
    [change] = changes
    assert change.action == "restarted" and change.deployment is not None
    restart = state.deployments[change.deployment]
    assert (restart.kind, restart.from_version, restart.to_version) == ("restart", 1, 2)
    assert not restart.auto_revert  # there is nothing else to go back to
    after = state.groups[GROUP]
    assert after.spec == before.spec and after.version == f"{before.version}.r1"
    # Every task is of another version now: the rollout replaces them all.
    assert all(t.version != after.version for t in state.tasks.values())
    run_tasks(state, 2)
    stop_old(state)
    step(state, 3.0)
    assert state.deployments[restart.id].status == "successful"
    # A second restart counts on; a re-deploy of the same spec changes nothing, and one that
    # only scales keeps the restarted version (its tasks are not replaced again).
    assert plan_restart(after, 4.0).record.version == f"{before.version}.r2"  # type: ignore[union-attr]
    assert plan_group("web", after.spec, state.groups, 4.0).action == "unchanged"
    scaled = plan_group("web", after.spec.model_copy(update={"instances": 5}), state.groups, 4.0)
    assert scaled.action == "scaled" and scaled.record is not None
    assert scaled.record.version == after.version
    updated = plan_group("web", make_spec(environment={"V": "3"}), state.groups, 4.0)
    assert updated.record is not None and ".r" not in updated.record.version
