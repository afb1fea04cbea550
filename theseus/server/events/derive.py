"""What one change of the cluster's state means as events (pure).

``derive`` takes one change from the etcd watch (its key, the record before and after, as the
cache decodes them) and returns the events it means, in a fixed order. It reads nothing but
its arguments and the state the change left, and the state at a revision is the same on every
server, so every server derives the same events from the same history: that is what lets a
client resume its stream on another server. Called by ``theseus.server.events.hub.EventFeed``
for each change the cache applies; the events' ids are given there (``<revision>-<n>``).

``Derived`` is an event before its id; its time is the record's own where it has one (a
status's update, a deployment's), the caller's clock otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from theseus.model.deployments import DeploymentRecord
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.registry import service_of
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState, TaskStatus
from theseus.security.records import AuditRecord
from theseus.store import keys

R = TypeVar("R")


class Derived(NamedTuple):
    topic: str
    type: str
    key: str
    service: str | None
    message: str
    time: float | None = None  # None: the deriving server's clock
    payload: dict[str, Any] = {}


# The prefixes whose changes mean something; the cache calls the feed for these only.
WATCHED = (
    keys.TASKS,
    keys.STATUS,
    keys.GROUPS,
    keys.NODES,
    keys.ALIVE,
    keys.CONTROL,
    keys.DEPLOYMENTS,
    keys.AUDIT,
    keys.REGISTRY,
)

# Kept in etcd for an hour (``theseus.server.events.keeper``): what someone looking back after
# a restart wants to see. The rest (placements, starts, registry changes) is routine, and audit
# events are derived again from the audit log's own records.
NOTABLE = frozenset(
    {
        "TaskExited",
        "TaskFailed",
        "TaskLost",
        "TaskKilled",
        "TaskHealthy",
        "TaskUnhealthy",
        "PlacementFailed",
        "DeploymentStarted",
        "DeploymentSucceeded",
        "DeploymentFailed",
        "DeploymentCancelled",
        "DeploymentReverted",
        "NodeReady",
        "NodeLost",
        "NodeDraining",
        "NodeRemoved",
        "GroupCreated",
        "GroupUpdated",
        "GroupScaled",
        "GroupRemoved",
    }
)


def derive(
    key: str, before: object, after: object, value: bytes | None, state: ClusterState
) -> list[Derived]:
    """The events of one change at ``key``: ``before`` and ``after`` are the records there
    (None when absent), ``value`` the raw new value, ``state`` the state after the change."""
    if key.startswith(keys.STATUS):
        return _status(_as(before, TaskStatus), _as(after, TaskStatus), state)
    if key.startswith(keys.TASKS):
        return _task(_as(before, TaskRecord), _as(after, TaskRecord))
    if key.startswith(keys.GROUPS):
        return _group(key, _as(before, GroupRecord), _as(after, GroupRecord))
    if key.startswith(keys.DEPLOYMENTS):
        return _deployment(_as(before, DeploymentRecord), _as(after, DeploymentRecord))
    if key.startswith(keys.ALIVE):
        return _alive(key.removeprefix(keys.ALIVE), before is not None, after is not None)
    if key.startswith(keys.NODES):
        return _node(key.removeprefix(keys.NODES), _as(before, NodeRecord), after is not None)
    if key.startswith(keys.CONTROL):
        return _control(key.removeprefix(keys.CONTROL), _as(before, NodeControl), after)
    if key.startswith(keys.AUDIT):
        return _audit(value)
    if key.startswith(keys.REGISTRY):
        return _registry(key, before, after)
    return []


def _as(record: object, kind: type[R]) -> R | None:
    return record if isinstance(record, kind) else None


def _status(old: TaskStatus | None, new: TaskStatus | None, state: ClusterState) -> list[Derived]:
    if new is None:
        return []
    task = state.tasks.get(new.task_id)
    service = task.service if task is not None else None
    at = new.updated_at
    events: list[Derived] = []
    if old is None or old.state is not new.state:
        events += _state_change(new, service, task)
    if new.healthy is not None and (old is None or old.healthy is not new.healthy):
        healthy = new.healthy
        events.append(
            Derived(
                "task",
                "TaskHealthy" if healthy else "TaskUnhealthy",
                new.task_id,
                service,
                f"task {new.task_id} is {'healthy' if healthy else 'unhealthy'}"
                + ("" if healthy or not new.health_message else f": {new.health_message}"),
                at,
                {"health_message": new.health_message} if not healthy else {},
            )
        )
    return events


def _state_change(new: TaskStatus, service: str | None, task: TaskRecord | None) -> list[Derived]:
    who = f"task {new.task_id}"
    node = task.node if task is not None else None
    at = new.updated_at
    payload: dict[str, Any] = {"node": node, "state": new.state.value}
    match new.state:
        case TaskState.STARTING:
            return [
                Derived(
                    "task", "TaskStarting", new.task_id, service, f"{who} starting", at, payload
                )
            ]
        case TaskState.RUNNING:
            message = f"{who} started on {node}" if node else f"{who} started"
            return [Derived("task", "TaskStarted", new.task_id, service, message, at, payload)]
        case TaskState.EXITED:
            payload |= {"exit_code": new.exit_code, "oom_killed": new.oom_killed}
            how = "was killed for memory (OOM)" if new.oom_killed else "exited"
            code = f" with code {new.exit_code}" if new.exit_code is not None else ""
            return [
                Derived(
                    "task", "TaskExited", new.task_id, service, f"{who} {how}{code}", at, payload
                )
            ]
        case TaskState.FAILED:
            payload["reason"] = new.message
            message = f"{who} failed: {new.message}" if new.message else f"{who} failed"
            return [Derived("task", "TaskFailed", new.task_id, service, message, at, payload)]
        case TaskState.STOPPED:
            payload |= {"exit_code": new.exit_code, "oom_killed": new.oom_killed}
            return [
                Derived("task", "TaskStopped", new.task_id, service, f"{who} stopped", at, payload)
            ]
        case TaskState.LOST:
            message = f"{who} lost" + (f": {new.message}" if new.message else "")
            return [Derived("task", "TaskLost", new.task_id, service, message, at, payload)]
    return []


def _task(old: TaskRecord | None, new: TaskRecord | None) -> list[Derived]:
    if new is None:
        return []
    events: list[Derived] = []
    who = f"task {new.id}"
    if new.node and (old is None or old.node != new.node):
        events.append(
            Derived(
                "task",
                "TaskPlaced",
                new.id,
                new.service,
                f"{who} placed on {new.node}",
                new.created_at if old is None else None,
                {"node": new.node, "version": new.version},
            )
        )
    elif (
        new.node is None
        and new.pending_reason
        and (old is None or old.pending_reason != new.pending_reason)
    ):
        events.append(
            Derived(
                "scheduling",
                "PlacementFailed",
                new.id,
                new.service,
                f"{who} cannot be placed: {new.pending_reason}",
                None,
                {"reason": new.pending_reason, "group": new.group_key.key},
            )
        )
    if new.desired is Desired.STOP and (old is None or old.desired is not Desired.STOP):
        reason = new.stop_reason or "stopped"
        events.append(
            Derived(
                "task",
                "TaskKilled",
                new.id,
                new.service,
                f"{who} is being stopped: {reason}",
                None,
                {"reason": new.stop_reason, "node": new.node},
            )
        )
    return events


def _group(key: str, old: GroupRecord | None, new: GroupRecord | None) -> list[Derived]:
    group = key.removeprefix(keys.GROUPS)
    try:
        name = str(GroupKey.parse(group))
        service: str | None = GroupKey.parse(group).service
    except ValueError:
        name, service = group, None
    if new is None:
        if old is None:
            return []
        return [Derived("group", "GroupRemoved", group, service, f"group {name} removed")]
    payload = {"version": new.version_number, "instances": new.instances}
    if old is None:
        message = f"group {name} created ({new.instances} instances)"
        return [Derived("group", "GroupCreated", group, service, message, new.updated_at, payload)]
    if old.version != new.version:
        message = f"group {name} updated to version {new.version_number}"
        return [Derived("group", "GroupUpdated", group, service, message, new.updated_at, payload)]
    if old.instances != new.instances:
        message = f"group {name} scaled from {old.instances} to {new.instances}"
        return [Derived("group", "GroupScaled", group, service, message, new.updated_at, payload)]
    return []


_FINISHED = {
    "successful": ("DeploymentSucceeded", "succeeded"),
    "failed": ("DeploymentFailed", "failed"),
    "cancelled": ("DeploymentCancelled", "was cancelled"),
    "superseded": ("DeploymentSuperseded", "was superseded"),
}


def _deployment(old: DeploymentRecord | None, new: DeploymentRecord | None) -> list[Derived]:
    if new is None:
        return []
    who = f"deployment {new.id} of {new.service}"
    payload: dict[str, Any] = {
        "group": new.group,
        "kind": new.kind,
        "from_version": new.from_version,
        "to_version": new.to_version,
        "ready": new.ready,
        "instances": new.instances,
        "status": new.status,
    }
    at = new.updated_at

    def event(kind: str, message: str) -> Derived:
        return Derived("deployment", kind, new.id, new.service, message, at, payload)

    if old is None:
        if new.kind == "revert":
            return [
                event(
                    "DeploymentReverted",
                    f"{who}: reverting to version {new.to_version} ({new.message})".rstrip(" ()"),
                )
            ]
        return [
            event("DeploymentStarted", f"{who} started: {new.kind} to version {new.to_version}")
        ]
    events: list[Derived] = []
    if new.ready != old.ready and new.status == "running":
        events.append(
            event("DeploymentStep", f"{who}: {new.ready}/{new.instances} new tasks ready")
        )
    if new.status != old.status and new.status in _FINISHED:
        kind, how = _FINISHED[new.status]
        reason = f": {new.message}" if new.message and new.status != "successful" else ""
        events.append(event(kind, f"{who} {how}{reason}"))
    return events


def _alive(node: str, was: bool, now: bool) -> list[Derived]:
    if now and not was:
        return [Derived("node", "NodeReady", node, None, f"node {node} is ready")]
    if was and not now:
        return [Derived("node", "NodeLost", node, None, f"node {node} is lost (no heartbeat)")]
    return []


def _node(node: str, old: NodeRecord | None, now: bool) -> list[Derived]:
    if old is None and now:
        return [Derived("node", "NodeRegistered", node, None, f"node {node} registered")]
    if old is not None and not now:
        return [Derived("node", "NodeRemoved", node, None, f"node {node} removed")]
    return []


def _control(node: str, old: NodeControl | None, new: object) -> list[Derived]:
    control = new if isinstance(new, NodeControl) else NodeControl(updated_at=0.0)
    before = old or NodeControl(updated_at=0.0)
    at = control.updated_at or None
    if control.drain and not before.drain:
        return [Derived("node", "NodeDraining", node, None, f"node {node} is draining", at)]
    if before.drain and not control.drain:
        return [Derived("node", "NodeDrainStopped", node, None, f"node {node} drain stopped", at)]
    if control.schedulable != before.schedulable:
        kind, how = (
            ("NodeEligible", "eligible")
            if control.schedulable
            else ("NodeIneligible", "ineligible")
        )
        return [Derived("node", kind, node, None, f"node {node} is {how}", at)]
    return []


def _audit(value: bytes | None) -> list[Derived]:
    if value is None:
        return []  # an audit record expiring is not an event
    try:
        record = AuditRecord.model_validate_json(value)
    except ValidationError:
        return []
    return [
        Derived(
            "audit",
            "ApiWrite",
            record.path,
            _service_in(record.path),
            f"{record.who} {record.method} {record.path} -> {record.status}",
            record.at,
            {
                "who": record.who,
                "token_id": record.token_id,
                "method": record.method,
                "path": record.path,
                "status": record.status,
            },
        )
    ]


def _service_in(path: str) -> str | None:
    """The service a write's route names (``/v1/groups/{service}/...``), if it names one."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[1:3] == ["v1", "groups"] and parts[3]:
        return parts[3]
    return None


def _registry(key: str, before: object, after: object) -> list[Derived]:
    service = service_of(key)
    if before is None and after is not None:
        kind, how = "RegistryAdded", "added"
    elif before is not None and after is None:
        kind, how = "RegistryRemoved", "removed"
    elif before != after:
        kind, how = "RegistryChanged", "changed"
    else:
        return []
    entry = key.removeprefix(keys.REGISTRY)
    return [
        Derived(
            "registry", kind, entry, service, f"registry entry {entry} {how}", None, {"key": key}
        )
    ]
