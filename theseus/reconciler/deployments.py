"""Controlled rollouts (pure): what a group change writes besides the group record, and how
the leader follows running deployments.

* ``group_writes``: every change of a group (create, update, scale, rollback, revert) gets
  the next version number, a ``SpecVersion`` in the group's history (the oldest beyond
  ``VERSIONS_KEPT`` dropped) and a new ``DeploymentRecord``. A removal drops the history.
  Neither touches the group's running deployment: the leader, which writes its progress,
  marks it ``superseded`` (or ``cancelled``, group removed) on its next pass, so the API's
  writes never contend with the leader's. Called by ``theseus.server.writes`` (the API) and
  by ``track`` (reverts).
* ``track``: the leader's step over running deployments. One is ``successful`` once the
  group has exactly ``instances`` tasks of the new version, all ready, and no other task left
  (old ones, and surplus ones being stopped); it ``failed`` when ``progress_deadline_seconds``
  pass without one more new task becoming ready (Nomad's ``progress_deadline``); then, with
  ``auto_revert``, the group goes back to the previous version's spec as a new deployment of
  kind ``revert``. Reverts and rollbacks never revert themselves (there would be nothing
  better to go back to).
* ``cancel_writes``: Marathon's cancel: roll the group back to the version before the
  deployment, or with ``force`` only mark the deployment cancelled.

Everything is returned as records to write; the callers commit them in one guarded
transaction with the group change, so history, deployment and group never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from theseus.model.deployments import (
    FINISHED,
    VERSIONS_KEPT,
    DeploymentKind,
    DeploymentRecord,
    SpecVersion,
    new_deployment_id,
)
from theseus.model.groups import GroupRecord, version_for
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired
from theseus.reconciler.deploy import GroupChangePlan, change_action

DEPLOYMENTS_KEPT = 50  # finished deployments kept for ``theseus deployments --all``
# Seconds between two progress writes of one deployment. The leader passes at least once a
# second (``TICK``), so a progress not written yet is written on a later pass.
PROGRESS_EVERY = 1.0
_KINDS: dict[str, DeploymentKind] = {
    "created": "create",
    "updated": "update",
    "restarted": "restart",
    "configured": "update",
    "scaled": "scale",
}
_REVERTIBLE = ("create", "update", "scale")

NewId = Callable[[], str]


class DeploymentError(ValueError):
    """A cancel or rollback that cannot be done; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GroupWrite:
    """What one change writes. ``group`` is the group key; ``record`` the group record to
    put, or with ``remove`` the group is deleted; neither: only deployments change."""

    group: str
    record: GroupRecord | None = None
    remove: bool = False
    versions: list[SpecVersion] = field(default_factory=list)  # to record
    drop_versions: list[int] = field(default_factory=list)
    deployments: list[DeploymentRecord] = field(default_factory=list)  # new or changed

    @property
    def touches_group(self) -> bool:
        return self.record is not None or self.remove


def group_writes(
    state: ClusterState,
    changes: list[GroupChangePlan],
    now: float,
    new_id: NewId = new_deployment_id,
) -> tuple[list[GroupChangePlan], list[GroupWrite]]:
    """The writes of a deploy/scale/remove/rollback, and the changes with their deployment."""
    planned: list[GroupChangePlan] = []
    writes: list[GroupWrite] = []
    for change in changes:
        if change.action == "removed":
            writes.append(_removal(state, change.key.key, now))
        elif change.action in _KINDS and change.record is not None:
            write = _versioned(state, change, now, new_id())
            writes.append(write)
            change = replace(change, deployment=write.deployments[-1].id)
        planned.append(change)
    return planned, writes


def _versioned(
    state: ClusterState, change: GroupChangePlan, now: float, deployment_id: str
) -> GroupWrite:
    assert change.record is not None
    group_id = change.key.key
    kept = state.versions.get(group_id, {})
    existing = state.groups.get(group_id)
    previous = existing.version_number if existing is not None else 0
    recorded: list[SpecVersion] = []
    if existing is not None and not previous and not kept:
        # Written before histories were kept: its spec becomes version 1, to go back to.
        previous = 1
        recorded.append(
            SpecVersion(
                number=1,
                digest=existing.version,
                spec=existing.spec,
                created_at=existing.updated_at,
            )
        )
    number = max([previous, *kept]) + 1
    record = change.record.model_copy(update={"version_number": number})
    spec = record.spec
    kind: DeploymentKind = change.kind or _KINDS[change.action]  # type: ignore[assignment]
    strategy = spec.upgrade_strategy
    deployment = DeploymentRecord(
        id=deployment_id,
        group=group_id,
        service=record.service,
        labels=list(record.labels),
        kind=kind,
        from_version=previous or None,
        to_version=number,
        digest=record.version,
        instances=spec.instances,
        started_at=now,
        updated_at=now,
        deadline=now + strategy.progress_deadline_seconds,
        progress_deadline_seconds=strategy.progress_deadline_seconds,
        auto_revert=strategy.auto_revert and kind in _REVERTIBLE,
        message=f"rolling out version {number}",
    )
    return GroupWrite(
        group=group_id,
        record=record,
        versions=[
            *recorded,
            SpecVersion(
                number=number,
                digest=record.version,
                spec=spec,
                created_at=now,
                deployment=deployment_id,
            ),
        ],
        drop_versions=sorted(n for n in kept if n <= number - VERSIONS_KEPT),
        deployments=[deployment],
    )


def _removal(state: ClusterState, group_id: str, now: float) -> GroupWrite:
    kept = sorted(state.versions.get(group_id, {}))
    return GroupWrite(group=group_id, remove=True, drop_versions=kept)


def _running_of(state: ClusterState, group_id: str) -> list[DeploymentRecord]:
    found = [d for d in state.deployments.values() if d.group == group_id and d.running]
    return sorted(found, key=lambda d: (d.started_at, d.id))


def _ending(write: GroupWrite, ended: DeploymentRecord) -> GroupWrite:
    """``write`` with ``ended`` (the deployment it ends: failed, cancelled) first."""
    others = [d for d in write.deployments if d.id != ended.id]
    return replace(write, deployments=[ended, *others])


def rollback_change(
    state: ClusterState, group: GroupRecord, version: int, now: float, kind: DeploymentKind
) -> GroupChangePlan:
    """The change that gives ``group`` the spec of its ``version`` again (a new version)."""
    target = state.versions.get(group.group_key.key, {}).get(version)
    if target is None:
        kept = sorted(state.versions.get(group.group_key.key, {}))
        raise DeploymentError(404, f"{group.group_key} has no version {version} (kept: {kept})")
    return _change_to(group, target.spec, now, kind)


def _change_to(
    group: GroupRecord, spec: GroupSpec, now: float, kind: DeploymentKind
) -> GroupChangePlan:
    if spec == group.spec:
        return GroupChangePlan(group.group_key, "unchanged", None, spec.instances, kind=kind)
    digest = version_for(spec, group)
    record = group.model_copy(update={"spec": spec, "version": digest, "updated_at": now})
    action = change_action(group, spec, digest)
    return GroupChangePlan(group.group_key, action, record, spec.instances, kind=kind)


def previous_version(state: ClusterState, group: GroupRecord) -> int:
    """The newest kept version older than the current one with another spec: what
    ``rollback`` goes back to when not told."""
    kept = state.versions.get(group.group_key.key, {})
    for number in sorted(kept, reverse=True):
        if number < group.version_number and kept[number].spec != group.spec:
            return number
    raise DeploymentError(409, f"{group.group_key} has no earlier version to roll back to")


def cancel_writes(
    state: ClusterState, deployment_id: str, force: bool, now: float, new_id: NewId
) -> GroupWrite:
    """The write that cancels ``deployment_id``; its record comes first in ``deployments``."""
    deployment = state.deployments.get(deployment_id)
    if deployment is None:
        raise DeploymentError(404, f"no deployment {deployment_id!r}")
    if not deployment.running:
        raise DeploymentError(409, f"deployment {deployment_id} is already {deployment.status}")
    group = state.groups.get(deployment.group)
    kept = state.versions.get(deployment.group, {})
    back = deployment.from_version
    if force or group is None or back is None or back not in kept:
        if force:
            why = f"cancelled (forced): the group stays at version {deployment.to_version}"
        else:
            why = "cancelled; no earlier version to roll back to"
        ended = deployment.model_copy(
            update={"status": "cancelled", "updated_at": now, "message": why}
        )
        return GroupWrite(group=deployment.group, deployments=[ended])
    change = _change_to(group, kept[back].spec, now, "rollback")
    if change.record is None:  # the spec is back already (a later scale undone, say)
        ended = deployment.model_copy(
            update={"status": "cancelled", "updated_at": now, "message": "cancelled"}
        )
        return GroupWrite(group=deployment.group, deployments=[ended])
    _, (write,) = group_writes(state, [change], now, new_id)
    rollback = write.deployments[-1]
    message = f"cancelled; rolled back to version {back} ({rollback.id})"
    ended = deployment.model_copy(
        update={"status": "cancelled", "updated_at": now, "message": message}
    )
    return _ending(write, ended)


@dataclass
class Tracked:
    """The leader's step: ``writes`` to commit (guarded), finished deployments to forget,
    and when the earliest running deadline passes."""

    writes: list[GroupWrite] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    wake_at: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.writes or self.forget)


def track(state: ClusterState, now: float, new_id: NewId = new_deployment_id) -> Tracked:
    tracked = Tracked()
    for deployment in sorted(state.deployments.values(), key=lambda d: (d.started_at, d.id)):
        if not deployment.running:
            continue
        write = _follow(state, deployment, now, new_id)
        if write is not None:
            tracked.writes.append(write)
            deployment = write.deployments[0]
        if deployment.running:
            deadline = deployment.deadline
            tracked.wake_at = (
                deadline if tracked.wake_at is None else min(tracked.wake_at, deadline)
            )
    finished = [d for d in state.deployments.values() if d.status in FINISHED]
    finished.sort(key=lambda d: (d.updated_at, d.id), reverse=True)
    tracked.forget = [d.id for d in finished[DEPLOYMENTS_KEPT:]]
    return tracked


def _follow(
    state: ClusterState, deployment: DeploymentRecord, now: float, new_id: NewId
) -> GroupWrite | None:
    """The write that moves one running deployment on, if any (its record first)."""
    group = state.groups.get(deployment.group)

    def ended(status: str, message: str, **more: object) -> GroupWrite:
        update = {"status": status, "updated_at": now, "message": message, **more}
        return GroupWrite(
            group=deployment.group, deployments=[deployment.model_copy(update=update)]
        )

    if group is None:
        return ended("cancelled", "group removed")
    if group.version_number != deployment.to_version:
        number = group.version_number
        newer = state.versions.get(deployment.group, {}).get(number)
        by = f"{newer.deployment} (version {number})" if newer and newer.deployment else number
        return ended("superseded", f"superseded by {by}")
    new, ready, others_left = _census(state, deployment)
    wanted = deployment.instances
    progress = f"{ready} of {wanted} new tasks ready"
    if new == wanted and ready == wanted and not others_left:
        return ended("successful", progress, ready=ready, best=max(ready, deployment.best))
    # Progress is written at most every PROGRESS_EVERY seconds (a big rollout readies tasks
    # on every pass), and always before the deadline could pass without it.
    due = now - deployment.updated_at >= PROGRESS_EVERY
    if ready > deployment.best and (due or now + PROGRESS_EVERY >= deployment.deadline):
        deadline = now + deployment.progress_deadline_seconds
        update = {"ready": ready, "best": ready, "deadline": deadline, "updated_at": now}
        return GroupWrite(deployment.group, deployments=[deployment.model_copy(update=update)])
    if now >= deployment.deadline:
        return _fail(state, group, deployment, ready, now, new_id)
    if ready != deployment.ready and due:
        update = {"ready": ready, "updated_at": now}
        return GroupWrite(deployment.group, deployments=[deployment.model_copy(update=update)])
    return None


def _census(state: ClusterState, deployment: DeploymentRecord) -> tuple[int, int, bool]:
    """The deployment's group's tasks of its version meant to run, how many of them are
    ready, and whether any other task is left that has not ended (old tasks, and surplus
    ones being stopped, must be gone, not merely asked to stop). One look at each task's
    state: every pass asks this of every running deployment, 50,000 tasks in a big deploy."""
    new = ready = 0
    others_left = False
    digest = deployment.digest
    for task in state.tasks_of(deployment.group):
        observed = state.task_state(task)
        if task.desired is Desired.RUN and task.version == digest:
            new += 1
            ready += state.task_ready(task, observed)
        elif not observed.terminal:
            others_left = True
    return new, ready, others_left


def _fail(
    state: ClusterState,
    group: GroupRecord,
    deployment: DeploymentRecord,
    ready: int,
    now: float,
    new_id: NewId,
) -> GroupWrite:
    message = (
        f"no progress for {deployment.progress_deadline_seconds:g}s: "
        f"{ready} of {deployment.instances} new tasks ready"
    )
    update: dict[str, object] = {"status": "failed", "updated_at": now, "ready": ready}
    back = deployment.from_version
    previous = state.versions.get(deployment.group, {}).get(back) if back else None
    if deployment.auto_revert and previous is not None:
        change = _change_to(group, previous.spec, now, "revert")
        if change.record is not None:
            _, (write,) = group_writes(state, [change], now, new_id)
            revert = write.deployments[-1]
            update["message"] = f"{message}; reverted to version {back} ({revert.id})"
            return _ending(write, deployment.model_copy(update=update))
    if deployment.auto_revert and deployment.kind in _REVERTIBLE and back is not None:
        message += f"; version {back} is no longer kept: not reverted"
    update["message"] = message
    return GroupWrite(deployment.group, deployments=[deployment.model_copy(update=update)])
