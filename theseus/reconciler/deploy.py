"""What a deploy document changes (pure): per group created / scaled / updated / unchanged /
removed / absent, and the new group records to write.

Fixes the original's bugs 13 and 14: an identical re-deploy changes nothing, label order does
not matter, and a spec change keeps the *new* ``instances``. Called by the server's deploy,
scale, restart and remove routes, which commit the result atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

from theseus.model.groups import GroupKey, GroupRecord, restarted_version, version_for
from theseus.model.spec import DeployDocument, GroupSpec


@dataclass(frozen=True)
class GroupChangePlan:
    key: GroupKey
    # created | scaled | updated | restarted | configured | unchanged | removed | absent
    action: str
    record: GroupRecord | None  # the record to write; None for removals and no-ops
    instances: int | None = None
    kind: str | None = None  # the deployment's kind when not implied by action (rollback)
    deployment: str | None = None  # set once written: the deployment it started


def plan_document(
    document: DeployDocument, groups: dict[str, GroupRecord], now: float
) -> list[GroupChangePlan]:
    changes = [plan_group(service, spec, groups, now) for service, spec in document.deploy.items()]
    for service, removal in document.remove.items():
        changes.append(plan_removal(GroupKey.of(service, removal.labels), groups))
    return changes


def plan_group(
    service: str, spec: GroupSpec, groups: dict[str, GroupRecord], now: float
) -> GroupChangePlan:
    key = GroupKey.of(service, spec.labels)
    existing = groups.get(key.key)
    version = version_for(spec, existing)
    if existing is None:
        record = GroupRecord(
            service=service,
            labels=list(key.labels),
            spec=spec,
            version=version,
            created_at=now,
            updated_at=now,
        )
        return GroupChangePlan(key, "created", record, spec.instances)
    if existing.spec == spec:
        return GroupChangePlan(key, "unchanged", None, spec.instances)
    record = existing.model_copy(update={"spec": spec, "version": version, "updated_at": now})
    return GroupChangePlan(key, change_action(existing, spec, version), record, spec.instances)


def change_action(existing: GroupRecord, spec: GroupSpec, version: str) -> str:
    """``updated``: tasks are replaced (another version); ``scaled``: only ``instances``
    changed; ``configured``: something that restarts nothing changed (``sticky``,
    ``upgrade_strategy``, ``dependencies``), with or without ``instances``."""
    if existing.version != version:
        return "updated"
    if existing.spec.model_copy(update={"instances": spec.instances}) == spec:
        return "scaled"
    return "configured"


def plan_scale(existing: GroupRecord, instances: int, now: float) -> GroupChangePlan:
    if existing.instances == instances:
        return GroupChangePlan(existing.group_key, "unchanged", None, instances)
    spec = existing.spec.model_copy(update={"instances": instances})
    record = existing.model_copy(update={"spec": spec, "updated_at": now})
    return GroupChangePlan(existing.group_key, "scaled", record, instances)


def plan_restart(existing: GroupRecord, now: float) -> GroupChangePlan:
    """Replace every task with the same spec (Marathon's app restart, ``kubectl rollout
    restart``): a version of its own (``restarted_version``), rolled out under the group's
    upgrade strategy like any update, by a deployment of kind ``restart``."""
    record = existing.model_copy(
        update={"version": restarted_version(existing.version), "updated_at": now}
    )
    return GroupChangePlan(
        existing.group_key, "restarted", record, existing.instances, kind="restart"
    )


def plan_removal(key: GroupKey, groups: dict[str, GroupRecord]) -> GroupChangePlan:
    action = "removed" if key.key in groups else "absent"
    return GroupChangePlan(key, action, None)
