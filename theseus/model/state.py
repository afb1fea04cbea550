"""``ClusterState``: a consistent copy of everything in etcd at one revision.

The store's cache produces it; the reconciler and the routes read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from theseus.model.deployments import DeploymentRecord, SpecVersion
from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.tasks import TaskRecord, TaskState, TaskStatus


class LeaderKey(NamedTuple):
    """Who holds the leader key, and the create revision of that key (its term's fence)."""

    holder: str
    revision: int


@dataclass(kw_only=True)
class ClusterState:
    revision: int
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    group_revisions: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    statuses: dict[str, TaskStatus] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    alive: dict[str, int] = field(default_factory=dict)  # node -> lease id
    # Nodes not alive whose loss the leader holds back for a grace period after its election
    # or a stall of its own (``theseus.server.stall``): their tasks are neither lost nor
    # unregistered yet, and nothing new is placed on them. Only a pass's copy has any.
    spared: frozenset[str] = frozenset()
    cluster_id: str | None = None
    leader: LeaderKey | None = None
    registry: dict[str, bytes] = field(default_factory=dict)  # key under /services/ -> value
    registry_revisions: dict[str, int] = field(default_factory=dict)
    # Indexes of ``tasks`` (kept by index_task), so that per-node and per-group questions do
    # not scan every task: the agents' long-polls and the group views ask them constantly.
    tasks_by_node: dict[str, set[str]] = field(default_factory=dict)
    tasks_by_group: dict[str, set[str]] = field(default_factory=dict)
    controls: dict[str, NodeControl] = field(default_factory=dict)  # node -> operator's say
    # Rollouts (``theseus.model.deployments``): a few kept spec versions per group, and the
    # recent deployments with their mod revisions (writes to them are guarded).
    versions: dict[str, dict[int, SpecVersion]] = field(default_factory=dict)
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    deployment_revisions: dict[str, int] = field(default_factory=dict)
    # The index sets this state may change in place. A copy shares every set with the state
    # it was made from, and ``index_task`` copies a shared set before its first change: the
    # cache changes a few sets between two snapshots, while copying all of them (100,000 ids
    # at 50,000 tasks) took 0.15 s of the event loop per snapshot.
    _owned_index_sets: set[tuple[bool, str]] = field(default_factory=set, repr=False, compare=False)

    def copy(self) -> ClusterState:
        """A copy whose containers can change without touching this one (the records in
        them are immutable and shared)."""
        self._owned_index_sets = set()  # from now on both share them
        return ClusterState(
            revision=self.revision,
            groups=dict(self.groups),
            group_revisions=dict(self.group_revisions),
            tasks=dict(self.tasks),
            statuses=dict(self.statuses),
            nodes=dict(self.nodes),
            alive=dict(self.alive),
            spared=self.spared,
            cluster_id=self.cluster_id,
            leader=self.leader,
            registry=dict(self.registry),
            registry_revisions=dict(self.registry_revisions),
            tasks_by_node=dict(self.tasks_by_node),
            tasks_by_group=dict(self.tasks_by_group),
            controls=dict(self.controls),
            versions={group: dict(kept) for group, kept in self.versions.items()},
            deployments=dict(self.deployments),
            deployment_revisions=dict(self.deployment_revisions),
        )

    def working_copy(self) -> ClusterState:
        """A copy for a reconcile pass, which changes its tasks and statuses (and may keep its
        indexes in step): those containers are its own, every other one is shared with this
        state, which must not change them while the copy is in use. At 50,000 tasks, the
        registry's two dicts were half of what ``copy`` copied, and the leader's passes,
        a second apart at rest, each made one on top of the leader's own snapshot."""
        self._owned_index_sets = set()  # from now on both share the index sets
        return replace(
            self,
            tasks=dict(self.tasks),
            statuses=dict(self.statuses),
            tasks_by_node=dict(self.tasks_by_node),
            tasks_by_group=dict(self.tasks_by_group),
            _owned_index_sets=set(),
        )

    def index_task(self, old: TaskRecord | None, new: TaskRecord | None) -> None:
        """Keep the indexes in step with one task being added, changed or removed."""
        if old is not None:
            if old.node:
                self._index_set(by_node=True, key=old.node).discard(old.id)
            self._index_set(by_node=False, key=old.group_key.key).discard(old.id)
        if new is not None:
            if new.node:
                self._index_set(by_node=True, key=new.node).add(new.id)
            self._index_set(by_node=False, key=new.group_key.key).add(new.id)

    def _index_set(self, *, by_node: bool, key: str) -> set[str]:
        """The index's set for ``key``, this state's own to change (copied first if a copy
        shares it)."""
        index = self.tasks_by_node if by_node else self.tasks_by_group
        owned = (by_node, key)
        if owned in self._owned_index_sets:
            return index[key]
        ids = index[key] = set(index.get(key, ()))
        self._owned_index_sets.add(owned)
        return ids

    def schedulable(self, node: str) -> bool:
        """Alive, and the operator has not made it ineligible or drained it."""
        control = self.controls.get(node)
        return node in self.alive and (control is None or control.schedulable)

    def draining(self, node: str) -> bool:
        control = self.controls.get(node)
        return control is not None and control.drain

    def tasks_on(self, node: str) -> list[TaskRecord]:
        return [self.tasks[i] for i in self.tasks_by_node.get(node, ()) if i in self.tasks]

    def tasks_of(self, group: str) -> list[TaskRecord]:
        return [self.tasks[i] for i in self.tasks_by_group.get(group, ()) if i in self.tasks]

    def task_ready(self, task: TaskRecord, observed: TaskState | None = None) -> bool:
        """Running and, if its spec has health checks, reported healthy by its agent: only
        such a task is in the registry and counts toward a rollout's healthy capacity.
        ``observed``: its ``task_state``, when the caller has it already."""
        if (observed or self.task_state(task)) is not TaskState.RUNNING:
            return False
        if not task.spec.has_health_checks:
            return True
        status = self.statuses.get(task.id)
        return status is not None and status.healthy is True

    def task_state(self, task: TaskRecord) -> TaskState:
        """The observed state, with the derived ``pending``/``assigned`` and node loss."""
        node = task.node
        up = node is None or node in self.alive or node in self.spared
        return derive_state(task, self.statuses.get(task.id), up)


def derive_state(task: TaskRecord, status: TaskStatus | None, node_up: bool) -> TaskState:
    """A task's observed state from its agent's last report (``status``) and whether its
    node is alive (or spared): the derived ``pending``/``assigned``, and ``lost`` on a lost
    node until a terminal report. ``ClusterState.task_state`` and the groups' tallies
    (``theseus.server.group_tally``) both go by it."""
    if status is not None and status.state.terminal:
        return status.state
    if task.node is not None and not node_up:
        return TaskState.LOST
    if status is not None:
        return status.state
    return TaskState.ASSIGNED if task.node else TaskState.PENDING
