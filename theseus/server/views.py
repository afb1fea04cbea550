"""Pure conversions from ``ClusterState`` to the ``/v1`` wire types, including each group's
progress (``converged`` / ``deploying`` / ``pending`` / ``failing``) that ``theseus deploy``
shows. Called by the routes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from theseus.api.schemas import (
    ContainerEntry,
    GroupInfo,
    NodeInfo,
    NodeUsage,
    RegistryGroup,
    RegistryService,
    TaskInfo,
)
from theseus.model import registry
from theseus.model.groups import GroupRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskStatus
from theseus.reconciler.backoff import delay_for
from theseus.server.group_tally import Tally, tally_of


def task_info(state: ClusterState, task: TaskRecord) -> TaskInfo:
    return TaskInfo.model_validate(task_entry(state, task))


def task_entry(state: ClusterState, task: TaskRecord) -> dict[str, Any]:
    """``TaskInfo`` as plain JSON data. ``GET /v1/tasks`` sends these as they are: a pydantic
    model per task, validated and then serialised, cost about 0.1 ms each, a second for
    10,000 tasks on a server that also has to answer heartbeats."""
    status = state.statuses.get(task.id)
    node = state.nodes.get(task.node) if task.node else None
    host_ports = task.host_ports
    ports = {
        name: {"container_port": port, "host_port": host_ports.get(name)}
        for name, port in task.spec.ports.items()
    }
    return {
        "id": task.id,
        "service": task.service,
        "labels": list(task.labels),
        "group": task.group_key.key,
        "version": task.version,
        "node": task.node,
        "address": node.address if node else None,
        "ports": ports,
        "desired": task.desired.value,
        "state": state.task_state(task).value,
        "exit_code": status.exit_code if status else None,
        "oom_killed": status.oom_killed if status else False,
        "message": status.message if status else None,
        "pending_reason": task.pending_reason if task.node is None else None,
        "stop_reason": task.stop_reason,
        "attempt": task.attempt,
        "not_before": task.not_before,
        "backoff_delay": delay_for(task.spec, task.attempt),
        "container_id": status.container_id if status else None,
        "created_at": task.created_at,
        "started_at": status.started_at if status else None,
        "finished_at": status.finished_at if status else None,
        "health": _health(task, status),
        "health_message": status.health_message if status else None,
    }


def _health(task: TaskRecord, status: TaskStatus | None) -> str | None:
    if not task.spec.has_health_checks:
        return None
    verdict = status.healthy if status is not None else None
    return "unknown" if verdict is None else "healthy" if verdict else "unhealthy"


def group_info(
    state: ClusterState, group_id: str, group: GroupRecord, tally: Tally | None = None
) -> GroupInfo:
    """The group's view; ``tally``: its counts kept by the cache (``GroupTallies``), else
    counted here from its tasks."""
    counts = tally if tally is not None else tally_of(state, group_id, group)
    status, message = "deploying", None
    if (
        counts.running_current == group.instances
        and counts.active == group.instances
        and not counts.stopping
    ):
        status = "converged"
    elif counts.failing:
        status = "failing"
        message = (
            _last_failure(state, group_id) or f"{counts.failing} tasks restarting with backoff"
        )
    elif counts.blocked:  # a pending task waits for room, not for its backoff
        status = "pending"
        message = counts.pending_reason()
    return GroupInfo(
        service=group.service,
        labels=group.labels,
        group=group_id,
        version=group.version,
        instances=group.instances,
        running=counts.running,
        running_current=counts.running_current,
        pending=counts.pending,
        status=status,
        message=message,
        spec=group.spec,
        created_at=group.created_at,
        updated_at=group.updated_at,
    )


def _last_failure(state: ClusterState, group_id: str) -> str | None:
    dead = [t for t in state.tasks_of(group_id) if t.desired is Desired.STOP and t.stop_reason]
    if not dead:
        return None
    latest = max(dead, key=lambda t: t.created_at)
    return f"task {latest.id} {latest.stop_reason}"


def node_info(state: ClusterState, name: str, usage: NodeUsage | None = None) -> NodeInfo:
    """``usage``: what its tasks use, from its heartbeats (``ServerContext.node_usage``)."""
    node = state.nodes[name]
    holding = [t for t in state.tasks_on(name) if not state.task_state(t).terminal]
    return NodeInfo(
        name=node.name,
        address=node.address,
        agent_port=node.agent_port,
        status="ready" if name in state.alive else "lost",
        eligibility=state.controls[name].label if name in state.controls else "eligible",
        driver=node.driver,
        cpus=node.cpus,
        mem=node.mem,
        used_cpus=round(sum(t.spec.cpus for t in holding), 6),
        used_mem=round(sum(t.spec.mem for t in holding), 6),
        tasks=len(holding),
        port_range=node.port_range,
        attributes=node.attributes,
        registered_at=node.registered_at,
        gates=node.gates,
        usage=usage if name in state.alive else None,
    )


def registry_instances(state: ClusterState, service: str) -> list[str]:
    """The instance names (task ids) registered for ``service``, sorted."""
    names = []
    for key in state.registry:
        if registry.service_of(key) != service:
            continue
        parsed = registry.parse_key(key)
        if parsed is not None and parsed[1] is not None:
            names.append(parsed[1])
    return sorted(names)


def registry_service(state: ClusterState, service: str) -> RegistryService:
    """Every group of ``service`` in the registry, with its config and its containers."""
    configs: dict[tuple[str, ...], dict[str, object]] = {}
    containers: dict[tuple[str, ...], list[ContainerEntry]] = defaultdict(list)
    for key, value in state.registry.items():
        if registry.service_of(key) != service:
            continue
        parsed = registry.parse_key(key)
        if parsed is None:
            continue
        group, task_id = parsed
        try:
            decoded = json.loads(value)
            if task_id is None:
                configs[group.labels] = dict(decoded)
            else:
                containers[group.labels].append(ContainerEntry.model_validate(decoded))
        except ValueError:
            continue  # a hand-written bogus value: the leader removes it shortly
    groups = [
        RegistryGroup(
            labels=list(labels),
            config=configs.get(labels, {}),
            containers=sorted(containers.get(labels, []), key=lambda c: c.instance_name),
        )
        for labels in sorted(set(configs) | set(containers))
    ]
    return RegistryService(service=service, index=state.revision, groups=groups)
