"""The registry, derived (pure): which entries must exist, and the diff to what does.

An entry exists for a group's config while the group exists, and for a container if and only
if its task is meant to run, is reported running, its node is alive, and, when its spec has
health checks, its agent last reported it healthy (``ClusterState.task_ready``). So a task
with checks enters the registry once it passes them and leaves it as soon as one fails (its
agent reports that at once), long before a kill. A task the leader has decided to stop leaves
the registry at that moment, before its container stops, so that peers stop using it first.
Because it is recomputed from task state on every pass, nothing can drift: a missing entry is
re-added, a stale or hand-made one removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from theseus.model import registry
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord


class Encoded(NamedTuple):
    """A registry entry's value and the records it was made from (a group's config: the
    group, no node; a container's: its task and its node)."""

    source: object
    node: object
    value: bytes


# Encoded entries from earlier passes, keyed by registry key: reused while their records are
# the very same objects (unchanged since).
EncodingMemo = dict[str, Encoded]


@dataclass
class RegistryDiff:
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def desired_registry(state: ClusterState, memo: EncodingMemo | None = None) -> dict[str, bytes]:
    memo = {} if memo is None else memo
    wanted: dict[str, bytes] = {}
    for group in state.groups.values():
        key, value = _config_entry(group, memo)
        wanted[key] = value
    for task in state.tasks.values():
        entry = _container_entry(state, task, memo)
        if entry is not None:
            wanted[entry[0]] = entry[1]
    for key in [k for k in memo if k not in wanted]:
        del memo[key]  # forget entries that are gone, so the memo stays the registry's size
    return wanted


def _config_entry(group: GroupRecord, memo: EncodingMemo) -> tuple[str, bytes]:
    key = registry.config_key(group.group_key)
    cached = memo.get(key)
    if cached is None or cached.source is not group:
        cached = Encoded(group, None, registry.encode(registry.config_value(group)))
        memo[key] = cached
    return key, cached.value


def _container_entry(
    state: ClusterState, task: TaskRecord, memo: EncodingMemo
) -> tuple[str, bytes] | None:
    """The task's entry, if it must have one."""
    if task.desired is not Desired.RUN or task.group_key.key not in state.groups:
        return None
    node = state.nodes.get(task.node) if task.node else None
    if node is None or not state.task_ready(task):
        return None
    key = registry.container_key(task.group_key, task.id)
    cached = memo.get(key)
    if cached is None or cached.source is not task or cached.node is not node:
        cached = Encoded(task, node, registry.encode(registry.container_value(task, node)))
        memo[key] = cached
    return key, cached.value


def registry_diff(
    state: ClusterState,
    memo: EncodingMemo | None = None,
    scope: dict[str, list[str]] | None = None,
) -> RegistryDiff:
    """What to put and delete so that the registry holds the entries it must. ``scope``
    (a scoped reconcile pass's groups, each with the ids of the tasks it held) limits the
    comparison to those groups' config entries and those tasks' container entries."""
    if scope is None:
        wanted = desired_registry(state, memo)
        deletes = {key for key in state.registry if key not in wanted}
    else:
        wanted, unwanted = _scoped_registry(state, {} if memo is None else memo, scope)
        deletes = {key for key in unwanted if key in state.registry}
    diff = RegistryDiff()
    for key, value in wanted.items():
        current = state.registry.get(key)
        if current is None:
            diff.puts[key] = value
            diff.added.append(key)
        elif current != value:
            diff.puts[key] = value
            diff.updated.append(key)
    diff.deletes = deletes
    return diff


def _scoped_registry(
    state: ClusterState, memo: EncodingMemo, scope: dict[str, list[str]]
) -> tuple[dict[str, bytes], set[str]]:
    """The entries ``scope``'s groups and tasks must have, and the keys of theirs they must
    not (whether or not the registry holds them)."""
    wanted: dict[str, bytes] = {}
    unwanted: set[str] = set()
    for group_id, task_ids in scope.items():
        group_key = GroupKey.parse(group_id)
        group = state.groups.get(group_id)
        if group is not None:
            key, value = _config_entry(group, memo)
            wanted[key] = value
        else:
            unwanted.add(registry.config_key(group_key))
        for task_id in task_ids:
            task = state.tasks.get(task_id)
            entry = None if task is None else _container_entry(state, task, memo)
            if entry is not None:
                wanted[entry[0]] = entry[1]
                continue
            key = registry.container_key(group_key, task_id)
            unwanted.add(key)
            memo.pop(key, None)
    return wanted, unwanted
