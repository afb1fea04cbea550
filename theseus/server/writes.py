"""Every etcd write the API makes on behalf of a request (the leader writes its own plans).

* group changes from ``/deploy``, scale, remove, rollback and cancel: one transaction guarded
  by each group's mod revision, so a document is applied atomically or not at all, retried
  on a race; with each group's spec version and deployment (``theseus.server.rollouts``);
* node registration and heartbeats: a node record plus a leased ``alive`` key, whose lease
  is replaced when the cluster's heartbeat timing changes (``theseus.server.heartbeats``);
* task reports from agents: observed status, batched into as few transactions as possible;
* the operator's node controls (drain, eligibility): one key per node, the last write wins.

After a write it waits until the cache has seen it, so the caller reads its own writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from theseus.api.schemas import NodeRegistration, TaskReport
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.spec import SpecError
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskState, TaskStatus
from theseus.reconciler.dependencies import dependency_errors
from theseus.reconciler.deploy import GroupChangePlan
from theseus.reconciler.deployments import GroupWrite, group_writes
from theseus.reconciler.registry import RegistryDiff, registry_diff
from theseus.server.heartbeats import (
    HeartbeatTiming,
    advised_interval,
    heartbeat_timing,
    lease_change,
)
from theseus.server.rollouts import encode_writes, too_large
from theseus.store import keys
from theseus.store.cache import StateCache, alive_value
from theseus.store.etcd import (
    MAX_TXN_OPS,
    CreateRevisionIs,
    Delete,
    EtcdStore,
    Guard,
    ModRevisionIs,
    Op,
    Put,
)

ATTEMPTS = 5
# The groups one document may change: each is one guarded write (plus its history and its
# deployment: ``theseus.server.rollouts``).
MAX_GROUP_CHANGES = MAX_TXN_OPS // 2
_WRITING = ("created", "scaled", "updated", "configured", "removed")
T = TypeVar("T")


class ConflictError(RuntimeError):
    """The same groups kept changing under us; the client may retry."""


class TooLargeError(ValueError):
    """A document touches more groups than one etcd transaction can hold."""


class Writer:
    def __init__(
        self,
        store: EtcdStore,
        cache: StateCache,
        liveness_timeout: int,
        max_heartbeats_per_second: float = 100.0,
        heartbeat_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._cache = cache
        self.liveness_timeout = liveness_timeout
        self.max_heartbeats_per_second = max_heartbeats_per_second
        self.heartbeat_interval = heartbeat_interval  # the pace of a small cluster
        self._last_heartbeat: dict[str, float] = {}  # node -> monotonic time, on this server
        self._joining = 0  # registrations in progress on this server
        self._heartbeats: dict[str, asyncio.Future[HeartbeatTiming | None]] = {}  # in progress

    def timing(self) -> HeartbeatTiming:
        """The heartbeat timing the cluster's size calls for now. Nodes registering count
        too: when a whole cluster (re)starts, the first to register would otherwise get the
        short leases of a small cluster and keep them while the server is at its busiest."""
        nodes = len(self._cache.state.alive) + self._joining
        return heartbeat_timing(
            nodes, self.liveness_timeout, self.max_heartbeats_per_second, self.heartbeat_interval
        )

    def lease_ttl(self, node: str) -> int:
        # Unknown (an older server granted it): the shortest TTL any server grants.
        return self._cache.lease_ttls.get(node, self.liveness_timeout)

    def advised_interval(self, node: str) -> float:
        """How often ``node``'s agent should heartbeat, given the lease it holds now."""
        return advised_interval(self.lease_ttl(node), self.timing(), self.heartbeat_interval)

    async def ensure_cluster_id(self) -> str:
        new_id = uuid.uuid4().hex[:12]
        await self._store.commit(
            [Put(keys.CLUSTER_ID, new_id.encode())], [CreateRevisionIs(keys.CLUSTER_ID, 0)]
        )
        entry = await self._store.get(keys.CLUSTER_ID)
        assert entry is not None
        return entry.value.decode()

    async def apply_group_changes(
        self, planner: Callable[[ClusterState], list[GroupChangePlan]]
    ) -> list[GroupChangePlan]:
        """Plan against the cache and commit, guarded; re-plan after a concurrent change.
        Each change that writes a group also records its spec version and starts its
        deployment, in the same transaction; the changes come back with their deployment."""

        def writes_of(state: ClusterState) -> tuple[list[GroupChangePlan], list[GroupWrite]]:
            changes = planner(state)
            errors = dependency_errors(state.groups, changes)
            if errors:
                raise SpecError(errors)  # nothing is written: the route answers 422
            if sum(c.action in _WRITING for c in changes) > MAX_GROUP_CHANGES:
                raise TooLargeError(f"a document may change at most {MAX_GROUP_CHANGES} groups")
            return group_writes(state, changes, time.time())

        return await self.apply_writes(writes_of)

    async def apply_writes(
        self, planner: Callable[[ClusterState], tuple[T, list[GroupWrite]]]
    ) -> T:
        """Commit what ``planner`` decides from the cache in one guarded transaction;
        decide again after a concurrent change. Returns the planner's answer."""
        for _ in range(ATTEMPTS):
            state = self._cache.snapshot()
            answer, writes = planner(state)
            ops, guards = encode_writes(state, writes)
            if not ops:
                return answer
            if too_large(ops, guards):
                raise TooLargeError("this change needs too many etcd operations; split it")
            revision = await self._store.commit(ops, guards)
            if revision is not None:
                await self._cache.wait_for_revision(revision)
                return answer
            # Someone changed one of these groups since our snapshot: catch up and re-plan.
            await self._cache.wait_for_revision(state.revision + 1, timeout=1.0)
        raise ConflictError("the groups kept changing concurrently; try again")

    async def rebuild_registry(self) -> RegistryDiff:
        """``/cleanup``: bring the registry in line with task state now, and say what changed.

        Catches the cache up with etcd first, then writes the diff guarded by each key's mod
        revision, so it never overwrites a change it has not seen (the leader's, say).
        """
        for _ in range(ATTEMPTS):
            await self._cache.wait_for_revision(await self._store.current_revision())
            state = self._cache.snapshot()
            diff = registry_diff(state)
            ops: list[Op] = [Put(key, value) for key, value in diff.puts.items()]
            ops += [Delete(key) for key in sorted(diff.deletes)]
            if not ops:
                return diff
            committed = True
            per_txn = MAX_TXN_OPS // 2  # each op carries its own guard
            for start in range(0, len(ops), per_txn):
                chunk = ops[start : start + per_txn]
                guards: list[Guard] = [
                    ModRevisionIs(op.key, state.registry_revisions.get(op.key, 0)) for op in chunk
                ]
                revision = await self._store.commit(chunk, guards)
                if revision is None:
                    committed = False
                    break
                await self._cache.wait_for_revision(revision)
            if committed:
                return diff
        raise ConflictError("the registry kept changing during the rebuild; try again")

    async def register_node(self, registration: NodeRegistration) -> NodeRecord:
        self._joining += 1
        try:
            return await self._register_node(registration)
        finally:
            self._joining -= 1

    async def _register_node(self, registration: NodeRegistration) -> NodeRecord:
        state = self._cache.state  # read two fields: no copy (a copy is O(cluster))
        previous = state.nodes.get(registration.name)
        record = NodeRecord(
            name=registration.name,
            address=registration.address,
            agent_port=registration.agent_port,
            cpus=registration.cpus,
            mem=registration.mem,
            port_range=registration.port_range,
            attributes=registration.attributes,
            driver=registration.driver,
            registered_at=previous.registered_at if previous else time.time(),
        )
        ops: list[Op] = []
        if previous != record:
            ops.append(Put(keys.node_key(record.name), record.model_dump_json().encode()))
        lease = state.alive.get(record.name)
        if lease is None or not await self._store.refresh_lease(lease):
            ttl = self.timing().ttl
            lease = await self._store.grant_lease(ttl)
            value = alive_value(time.time(), ttl)
            ops.append(Put(keys.alive_key(record.name), value, lease=lease))
        if ops:
            revision = await self._store.commit(ops)
            if revision is not None:
                await self._cache.wait_for_revision(revision)
        return record

    async def set_node_control(self, node: str, control: NodeControl | None) -> None:
        """Drain / make (in)eligible, or with ``None`` clear the control (eligible again)."""
        key = keys.control_key(node)
        op: Op = Put(key, control.model_dump_json().encode()) if control else Delete(key)
        revision = await self._store.commit([op])
        if revision is not None:
            await self._cache.wait_for_revision(revision)

    async def heartbeat(self, node: str) -> HeartbeatTiming | None:
        """Refresh the node's liveness lease, or replace it by one of the TTL the cluster's
        size now calls for; the node's timing from now on (the interval its agent should
        keep and its lease's TTL), or None if the node must register again.

        A heartbeat of a node whose previous one is still in progress shares its outcome:
        when etcd is slow, agents time out and retry, and every retry would otherwise queue
        one more refresh behind the others and make it slower still."""
        pending = self._heartbeats.get(node)
        if pending is None:
            pending = asyncio.ensure_future(self._heartbeat(node))
            self._heartbeats[node] = pending
            pending.add_done_callback(partial(self._heartbeat_done, node))
        # Shielded: an agent that hangs up must not cancel the refresh others wait for.
        return await asyncio.shield(pending)

    def _heartbeat_done(self, node: str, done: asyncio.Future[HeartbeatTiming | None]) -> None:
        if self._heartbeats.get(node) is done:
            del self._heartbeats[node]
        if not done.cancelled():
            done.exception()  # retrieved, even when every caller has gone

    async def _heartbeat(self, node: str) -> HeartbeatTiming | None:
        lease = self._cache.state.alive.get(node)
        if lease is None or not await self._store.refresh_lease(lease):
            return None
        now = time.monotonic()
        previous = self._last_heartbeat.get(node)
        self._last_heartbeat[node] = now
        ttl = self.lease_ttl(node)
        target = self.timing()
        if lease_change(ttl, target, None if previous is None else now - previous):
            # Refreshed first: a node whose lease had already expired registers again.
            lease = await self._store.grant_lease(target.ttl)
            value = alive_value(time.time(), target.ttl)
            await self._store.commit([Put(keys.alive_key(node), value, lease=lease)])
            ttl = target.ttl
        return HeartbeatTiming(advised_interval(ttl, target, self.heartbeat_interval), ttl)

    async def record_reports(self, reports: list[TaskReport]) -> int:
        state = self._cache.state
        statuses: dict[str, TaskStatus] = {}
        for report in reports:
            if report.task_id not in state.tasks:
                continue  # the task is gone: the agent will drop its container
            previous = statuses.get(report.task_id) or state.statuses.get(report.task_id)
            status = _next_status(previous, report)
            if status != previous:
                statuses[report.task_id] = status
        ops: list[Op] = []
        for task_id, status in statuses.items():
            key, value = keys.status_key(task_id), status.model_dump_json().encode()
            self._cache.expect(key, value, status)
            ops.append(Put(key, value))
        revision = 0
        for start in range(0, len(ops), MAX_TXN_OPS):
            revision = await self._store.commit(ops[start : start + MAX_TXN_OPS]) or revision
        if revision:
            await self._cache.wait_for_revision(revision)
        return len(statuses)


def _next_status(previous: TaskStatus | None, report: TaskReport) -> TaskStatus:
    state = TaskState(report.state)
    started_at = previous.started_at if previous else None
    if state is TaskState.RUNNING and started_at is None:
        started_at = report.at
    healthy, health_message = report.healthy, report.health_message
    if previous is not None and _verdict_pending(previous, report):
        # A restarted agent re-reports a running task before its checks ran again: keep the
        # verdict, so that the task does not leave the registry for that moment.
        healthy, health_message = previous.healthy, previous.health_message
    return TaskStatus(
        task_id=report.task_id,
        state=state,
        exit_code=report.exit_code,
        message=report.message,
        container_id=report.container_id or (previous.container_id if previous else None),
        started_at=started_at,
        finished_at=report.at if state.terminal else None,
        healthy=healthy,
        health_message=health_message,
        was_healthy=healthy is True or (previous is not None and previous.was_healthy),
        updated_at=previous.updated_at if previous and previous.state is state else report.at,
    )


def _verdict_pending(previous: TaskStatus, report: TaskReport) -> bool:
    """The same container still runs, and the report has no health verdict (yet)."""
    return (
        report.healthy is None
        and report.health_message is None
        and previous.state is TaskState.RUNNING
        and report.state == "running"
        and previous.container_id is not None
        and previous.container_id == report.container_id
    )
