"""Every store write the API makes on behalf of a request (the leader writes its own plans).

* group changes from ``/deploy``, scale, remove, rollback and cancel: decided once
  (``decide_group_changes``: the planner, the dependency checks, the host-path gate, the size
  limits, the group writes and their encoding) and then either previewed
  (``POST /deploy?dry_run=true``) or applied in one transaction guarded by each group's mod
  revision, so a document is applied atomically or not at all, retried on a race; with each
  group's spec version and deployment (``theseus.reconciler.deployments``);
* node registration and heartbeats: a node record plus a leased ``alive`` key, whose lease
  is replaced when the cluster's heartbeat timing changes (``theseus.server.heartbeats``);
* task reports from agents: observed status, committed with the other reports that arrive
  meanwhile (``theseus.server.status_commits``), answered once etcd has them (not once the
  cache has);
* the operator's node controls (drain, eligibility): one key per node, the last write wins.

Keys and encodings are ``theseus.store.encoding``'s; transactions are packed and committed by
``theseus.store.commit``. After a write it waits until the cache has seen it, so the caller
reads its own writes; not after agents' reports, which nobody reads back, nor after a group
change whose client reads by index (``theseus.server.client_index``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from theseus.api.schemas import NodeRegistration, TaskReport
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.spec import SpecError
from theseus.model.spec_gates import host_path_errors
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskStatus
from theseus.reconciler.dependencies import dependency_errors
from theseus.reconciler.deploy import GroupChangePlan
from theseus.reconciler.deployments import GroupWrite, group_writes
from theseus.reconciler.registry import RegistryDiff, registry_diff
from theseus.server.client_index import client_keeps_index, note_written
from theseus.server.heartbeats import (
    HeartbeatTiming,
    advised_interval,
    advised_poll_wait,
    heartbeat_timing,
    lease_change,
)
from theseus.server.liveness import HeardReporter
from theseus.server.metrics import ServerMetrics
from theseus.server.reports import changes, next_status
from theseus.server.status_commits import StatusCommits
from theseus.store import keys
from theseus.store.base import CreateRevisionIs, Op, Put, Store
from theseus.store.cache import StateCache
from theseus.store.commit import Txn, TxnTooLarge, commit_all, single
from theseus.store.encoding import (
    alive_put,
    control_op,
    encode_group_writes,
    encode_registry_repair,
    node_put,
    status_put,
)

ATTEMPTS = 5
# The groups one document may change: each is one guarded write, with its history and its
# deployment, all in one transaction.
MAX_GROUP_CHANGES = 64
SWEEP_UNAPPLIED_AT = 4096  # written statuses kept before the first sweep
_WRITING = ("created", "scaled", "updated", "restarted", "configured", "removed")
T = TypeVar("T")
GroupPlanner = Callable[[ClusterState], list[GroupChangePlan]]


class ConflictError(RuntimeError):
    """The same groups kept changing under us; the client may retry."""


class TooLargeError(ValueError):
    """A document touches more groups than one etcd transaction can hold."""


@dataclass(frozen=True)
class Decided:
    """What a group change will do, checked in full: ``changes`` as planned (for a preview),
    ``applied`` (the same, with the deployment each one starts) and the transaction that
    writes them (None: nothing to write)."""

    changes: list[GroupChangePlan]
    applied: list[GroupChangePlan]
    txn: Txn | None


def decide_group_changes(planner: GroupPlanner, state: ClusterState, now: float) -> Decided:
    """Every check a deploy, scale, remove or rollback passes before it is written, and the
    writes: the one path of both ``theseus plan`` and ``theseus deploy``. Raises
    ``SpecError`` (422), ``TooLargeError`` (413) or the planner's own ``HTTPException``."""
    changes = planner(state)
    errors = dependency_errors(state.groups, changes) + _host_path_errors(changes)
    if errors:
        raise SpecError(errors)  # nothing is written: the route answers 422
    if sum(c.action in _WRITING for c in changes) > MAX_GROUP_CHANGES:
        raise TooLargeError(f"a document may change at most {MAX_GROUP_CHANGES} groups")
    applied, writes = group_writes(state, changes, now)
    return Decided(changes, applied, _one_transaction(state, writes))


def _host_path_errors(changes: list[GroupChangePlan]) -> list[dict[str, str]]:
    """A document's host paths are refused when it is parsed; a rollback or a cancel may
    bring back a version kept from before the gates: refused too (``theseus.model.hostgates``).
    Scaling or removing such a group stays possible."""
    errors: list[dict[str, str]] = []
    for change in changes:
        if change.action in ("created", "updated") and change.record is not None:
            errors += host_path_errors(change.key.service, change.record.spec)
    return errors


def _one_transaction(state: ClusterState, writes: list[GroupWrite]) -> Txn | None:
    try:
        return single(encode_group_writes(state, writes))
    except TxnTooLarge:
        raise TooLargeError("this change needs too many etcd operations; split it") from None


class Writer:
    def __init__(
        self,
        store: Store,
        cache: StateCache,
        liveness_timeout: int,
        max_heartbeats_per_second: float = 100.0,
        heartbeat_interval: float = 1.0,
        heard: HeardReporter | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        # The nodes this server heard, written for the leader (``theseus.server.liveness``).
        self.heard = heard if heard is not None else HeardReporter(store, "server")
        self._metrics = metrics if metrics is not None else ServerMetrics()
        self.liveness_timeout = liveness_timeout
        self.max_heartbeats_per_second = max_heartbeats_per_second
        self.heartbeat_interval = heartbeat_interval  # the pace of a small cluster
        self._last_heartbeat: dict[str, float] = {}  # node -> monotonic time, on this server
        self._joining = 0  # registrations in progress on this server
        # Statuses written by this server, with their revision, until its cache applies them.
        self._unapplied: dict[str, tuple[int, TaskStatus]] = {}
        self._status_commits = StatusCommits(store)
        self._sweep_at = SWEEP_UNAPPLIED_AT

    def timing(self) -> HeartbeatTiming:
        """The heartbeat timing the cluster's size calls for now. Nodes registering count
        too: when a whole cluster (re)starts, the first to register would otherwise get the
        short leases of a small cluster and keep them while the server is at its busiest."""
        nodes = len(self._cache.state.alive) + self._joining
        return heartbeat_timing(
            nodes, self.liveness_timeout, self.max_heartbeats_per_second, self.heartbeat_interval
        )

    def loss_grace(self) -> float:
        """How long a new (or stalled) leader holds node losses back: a lease's life and one
        heartbeat more, the time every live node needs to be heard again."""
        # Every registered node counts, live or not: after a stall none may be alive, and
        # the agents still heartbeat at the pace of the whole cluster.
        nodes = max(len(self._cache.state.nodes), len(self._cache.state.alive) + self._joining)
        timing = heartbeat_timing(
            nodes, self.liveness_timeout, self.max_heartbeats_per_second, self.heartbeat_interval
        )
        return timing.ttl + timing.interval

    def lease_ttl(self, node: str) -> int:
        """Seconds ``node`` may go unheard before the leader declares it lost (its alive
        key's; unknown, as an older server wrote it: the shortest any server gives)."""
        return self._cache.lease_ttls.get(node, self.liveness_timeout)

    def advised_interval(self, node: str) -> float:
        """How often ``node``'s agent should heartbeat, given the lease it holds now."""
        return advised_interval(self.lease_ttl(node), self.timing(), self.heartbeat_interval)

    def advised_poll_wait(self) -> float | None:
        """How long agents should hold their assignments' long-poll (None: their own)."""
        nodes = len(self._cache.state.alive) + self._joining
        return advised_poll_wait(nodes, self.max_heartbeats_per_second)

    async def ensure_cluster_id(self) -> str:
        new_id = uuid.uuid4().hex[:12]
        await self._store.commit(
            [Put(keys.CLUSTER_ID, new_id.encode())], [CreateRevisionIs(keys.CLUSTER_ID, 0)]
        )
        entry = await self._store.get(keys.CLUSTER_ID)
        assert entry is not None
        return entry.value.decode()

    def preview_group_changes(
        self, planner: GroupPlanner
    ) -> tuple[ClusterState, list[GroupChangePlan]]:
        """What ``apply_group_changes`` would do now, refused exactly as it would refuse it,
        writing nothing: the state it was decided on, and the changes."""
        state = self._cache.snapshot()
        return state, decide_group_changes(planner, state, time.time()).changes

    async def apply_group_changes(self, planner: GroupPlanner) -> list[GroupChangePlan]:
        """Decide against the cache and commit, guarded; decide again after a concurrent
        change. Each change that writes a group also records its spec version and starts its
        deployment, in the same transaction; the changes come back with their deployment."""

        def decided(state: ClusterState) -> tuple[list[GroupChangePlan], Txn | None]:
            outcome = decide_group_changes(planner, state, time.time())
            return outcome.applied, outcome.txn

        return await self._apply(decided)

    async def apply_writes(
        self, planner: Callable[[ClusterState], tuple[T, list[GroupWrite]]]
    ) -> T:
        """Commit what ``planner`` decides from the cache in one guarded transaction;
        decide again after a concurrent change. Returns the planner's answer."""

        def decided(state: ClusterState) -> tuple[T, Txn | None]:
            answer, writes = planner(state)
            return answer, _one_transaction(state, writes)

        return await self._apply(decided)

    async def _apply(self, decide: Callable[[ClusterState], tuple[T, Txn | None]]) -> T:
        for _ in range(ATTEMPTS):
            # The cache's own state, not a copy: the decision reads it (it changes nothing:
            # tests/unit/test_writes_decide.py) and is made before the next await, so no
            # change comes in between. A copy is every task twice, 4-8 ms at 50,000 tasks,
            # and big young containers that the garbage collector goes through again.
            state = self._cache.state
            seen = state.revision
            answer, txn = decide(state)
            if txn is None:
                return answer
            # Prompt: a person waits on it, during a big deploy too (``Store.commit``).
            revision = await self._store.commit(txn.ops, txn.guards, prompt=True)
            if revision is not None:
                note_written(revision)
                if not client_keeps_index():  # else it reads by index (``client_index``)
                    await self._cache.wait_for_revision(revision)
                return answer
            # Someone changed one of these groups since our snapshot: catch up and re-plan.
            await self._cache.wait_for_revision(seen + 1, timeout=1.0)
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
            units = encode_registry_repair(state, diff)
            if not units:
                return diff
            committed = await commit_all(self._store, units, stop_on_refusal=True)
            await self._cache.wait_for_revision(committed.revision)
            if not committed.refused:
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
            gates=registration.gates,
            registered_at=previous.registered_at if previous else time.time(),
        )
        ops: list[Op] = []
        if previous != record:
            ops.append(node_put(record))
        if record.name not in state.alive:
            ops.append(alive_put(record.name, time.time(), self.timing().ttl))
        else:
            await self.heard.heard(record.name)  # alive already: a sign of life, as a heartbeat
        if ops:
            revision = await self._store.commit(ops)
            if revision is not None:
                await self._cache.wait_for_revision(revision)
        return record

    async def set_node_control(self, node: str, control: NodeControl | None) -> None:
        """Drain / make (in)eligible, or with ``None`` clear the control (eligible again)."""
        revision = await self._store.commit([control_op(node, control)], prompt=True)
        if revision is not None:
            await self._cache.wait_for_revision(revision)

    async def heartbeat(self, node: str) -> HeartbeatTiming | None:
        """Note that ``node`` was heard (``theseus.server.liveness``: the leader declares lost
        the nodes no server heard for their TTL: answered once etcd has it) and, when the
        cluster's size now calls for another TTL, write it; the node's timing from now on (the
        interval its agent should keep, and its TTL), or None if the node must register again
        (it is not alive). ``StoreUnavailable`` if this server cannot write to etcd."""
        if node not in self._cache.state.alive:
            return None
        await self.heard.heard(node)
        now = time.monotonic()
        previous = self._last_heartbeat.get(node)
        self._last_heartbeat[node] = now
        ttl = self.lease_ttl(node)
        target = self.timing()
        if lease_change(ttl, target, None if previous is None else now - previous):
            await self._store.commit([alive_put(node, time.time(), target.ttl)])
            self._metrics.node_ttl_changes.inc()
            ttl = target.ttl
        return HeartbeatTiming(advised_interval(ttl, target, self.heartbeat_interval), ttl)

    async def record_reports(self, reports: list[TaskReport]) -> int:
        """Write the statuses ``reports`` change; how many. Answered once etcd has them, not
        once this server's cache has: at 5,000 nodes the cache applied a report's revision
        seconds after etcd (BENCHMARKS.md, issue 17), and every agent's report request was
        held that long. A task's next report builds on the status written here even before
        the cache has it (``_status_of``), so none is computed from an older one."""
        return await self.write_reports(self.decide_reports(reports))

    def decide_reports(
        self, reports: list[TaskReport], unknown: list[str] | None = None
    ) -> dict[str, TaskStatus]:
        """``record_reports``'s decision (no I/O): each task's new status, where a report
        changes it. The ids of reports of tasks this server's view lacks go in ``unknown``."""
        state = self._cache.state
        statuses: dict[str, TaskStatus] = {}
        for report in reports:
            if report.task_id not in state.tasks:
                # The task is gone (the agent will drop its container), or this view has not
                # seen it yet: an agent that moved here asks for what it saw written
                # elsewhere (``theseus.api.peer_index``), so this is the first.
                if unknown is not None:
                    unknown.append(report.task_id)
                continue
            previous = statuses.get(report.task_id) or self._status_of(report.task_id, state)
            status = next_status(previous, report)
            if changes(previous, status):
                statuses[report.task_id] = status
        return statuses

    async def write_reports(self, statuses: dict[str, TaskStatus]) -> int:
        """``record_reports``'s write of what ``decide_reports`` decided; how many."""
        puts: list[Put] = []
        for status in statuses.values():
            put = status_put(status)
            self._cache.expect(put.key, put.value, status)
            puts.append(put)
        revision = await self._status_commits.write(puts)  # shared with other reports
        if revision:
            # The answer carries it: the agent asks it of any other server it moves to,
            # whose view may not have these statuses yet (``theseus.api.peer_index``).
            note_written(revision)
            for task_id, status in statuses.items():
                self._unapplied[task_id] = (revision, status)
            if len(self._unapplied) > self._sweep_at:
                self._sweep_unapplied()
        return len(statuses)

    def _status_of(self, task_id: str, state: ClusterState) -> TaskStatus | None:
        """The task's latest status: the one this server wrote last, while its cache has not
        applied that write yet, else the cache's."""
        written = self._unapplied.get(task_id)
        if written is not None:
            revision, status = written
            if revision > state.revision:
                return status
            del self._unapplied[task_id]
        return state.statuses.get(task_id)

    def _sweep_unapplied(self) -> None:
        """Forget the statuses the cache has applied since (the sweep runs each time the map
        doubles, so its cost per report stays constant)."""
        applied = self._cache.state.revision
        self._unapplied = {k: v for k, v in self._unapplied.items() if v[0] > applied}
        self._sweep_at = max(SWEEP_UNAPPLIED_AT, 2 * len(self._unapplied))
