"""The registry, derived (pure): which entries must exist, and the diff to what does.

An entry exists for a group's config while the group exists, and for a container if and only
if its task is meant to run, is reported running, and its node is alive. A task the leader
has decided to stop leaves the registry at that moment, before its container stops, so that
peers stop using it first. Because it is recomputed from task state on every pass, nothing
can drift: a missing entry is re-added, a stale or hand-made one removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from theseus.model import registry
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState


@dataclass
class RegistryDiff:
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def desired_registry(state: ClusterState) -> dict[str, bytes]:
    wanted: dict[str, bytes] = {}
    for group in state.groups.values():
        wanted[registry.config_key(group.group_key)] = registry.encode(registry.config_value(group))
    for task in state.tasks.values():
        if task.desired is not Desired.RUN or task.group_key.key not in state.groups:
            continue
        node = state.nodes.get(task.node) if task.node else None
        if node is None or state.task_state(task) is not TaskState.RUNNING:
            continue
        key = registry.container_key(task.group_key, task.id)
        wanted[key] = registry.encode(registry.container_value(task, node))
    return wanted


def registry_diff(state: ClusterState) -> RegistryDiff:
    wanted = desired_registry(state)
    diff = RegistryDiff()
    for key, value in wanted.items():
        current = state.registry.get(key)
        if current is None:
            diff.puts[key] = value
            diff.added.append(key)
        elif current != value:
            diff.puts[key] = value
            diff.updated.append(key)
    diff.deletes = {key for key in state.registry if key not in wanted}
    return diff
