"""An in-memory mirror of ``/theseus/`` and ``/services/`` kept current by one resumable
etcd watch.

Every server holds one. Routes read from it (no etcd round trip per request), the leader
takes its snapshots from it, and agents' long-polls wait on it. After a write, a caller waits
for ``revision >= write revision`` before reading again, so it always sees its own writes.

Waiting is keyed so that it scales with the cluster: an agent's long-poll wakes only when its
own node's assignments change, a discovery watch only when one of its services changes, and a
writer only when the cache reaches its revision. (With one shared "something changed" event,
1,000 agents would all wake on each of the tens of thousands of changes a big deploy makes.)

Besides the state it keeps what the server's hot paths need: each node's TTL (its ``alive``
value: the heartbeat timing depends on it) and when it was last heard (``heard``), a revision
per group and one for the set of live nodes (the group views are memoised on them), and the
records this server writes itself (``expect``), taken back as they are from the watch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from theseus.model.deployments import DeploymentRecord, SpecVersion
from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.registry import service_of as registry_service_of
from theseus.model.state import ClusterState, LeaderKey
from theseus.model.tasks import TaskRecord, TaskStatus
from theseus.store import keys
from theseus.store.access import AccessState
from theseus.store.base import Change, Entry, HistoryCompacted, Store, StoreUnavailable
from theseus.store.encoding import alive_ttl
from theseus.store.expected import Expected, ExpectedRecords
from theseus.store.heard import NodesHeard
from theseus.store.key_roles import plans_from, record_at
from theseus.store.shared_specs import SharedSpecs
from theseus.store.signals import KeyedSignal, Pulse
from theseus.store.task_changes import TaskChanges

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
# The longest the cache applies watch events without letting the loop run anything else. The
# watch hands over queued events without suspending, so a backlog (a deploy's 44,000
# placements at 5,000 nodes, at 20-40 µs each) was applied in one go, in a second or more.
APPLY_SLICE = 0.02  # seconds
OUT_OF_TOUCH = 3.0  # seconds without proof that the cache follows etcd before routes refuse
# How long a route waits for a proof asked on demand (``confirm``): less than a client's own
# timeout, so that a server cut off from etcd still answers its 503 and the client moves on.
CONFIRM_TIMEOUT = 1.0
# Seconds of etcd moving on while the cache stands still before its watch counts as stuck.
WATCH_STUCK_AFTER = 5.0

M = TypeVar("M", bound=BaseModel)


class ChangeObserver(Protocol):
    """Told of each change the cache applies under ``prefixes`` (the event stream,
    ``theseus.server.events.feed``; the groups' tallies, ``theseus.server.group_tally``),
    with the records before and after it, once the state holds the change."""

    prefixes: tuple[str, ...]

    def changed(
        self, key: str, revision: int, before: object, after: object, value: bytes | None
    ) -> None: ...

    def reloaded(self, revision: int) -> None:
        """The cache loaded the whole state again: changes before ``revision`` went unseen."""

    def released(self) -> None:
        """The server is stopping: its streams end now (``StateCache.release_waiters``)."""


class StateCache:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock  # for the proof that the cache follows the store
        self.state = ClusterState(revision=0)
        self.access = AccessState()  # tokens and certificates (not part of the cluster state)
        self._changed = Pulse()
        self._ready = asyncio.Event()
        # Revision of the last change to each node's assignment list (for agent long-polls)
        # and to each service's registry entries (for discovery watches).
        self.node_index: dict[str, int] = {}
        self.registry_index: dict[str, int] = {}
        self.lease_ttls: dict[str, int] = {}  # node -> the TTL its alive key gives, if any
        self.heard = NodesHeard()  # when each node was last heard, for the leader
        # Revision of the last change to each group's tasks or their statuses (the group views
        # are memoised on it, with ``alive_index``), and the finer ones the leader scopes by.
        self.task_changes = TaskChanges()
        self.group_index: dict[str, int] = self.task_changes.groups
        self.alive_index = 0
        # Revision of the last change to a node's record or control: with the two above, what
        # lets the leader scope its passes to the groups that changed (``reconciler.scope``).
        self.nodes_index = 0
        # Revision of the last change a reconcile pass plans from (``plans_from``): what the
        # leader waits on between passes (``wait_for_work``).
        self.work_revision = 0
        self._work_changed = Pulse()
        # When (this cache's clock) a group's record last changed: the leader lets a deploy
        # that comes as several documents settle before it places it (``server.leader``).
        self.groups_changed_at = -math.inf
        self._node_signal = KeyedSignal()
        self._service_signal = KeyedSignal()
        self._released = False  # the server is stopping: long-polls answer at once
        self._expected = ExpectedRecords()  # records this server is writing (``expect``)
        self._specs = SharedSpecs()  # task records read from etcd share their group's spec
        self._revision_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        # When the cache last proved to be current: it had applied etcd's revision of that
        # moment (``probe``). Routes refuse to answer from a cache that has not for a while.
        self._confirmed_at = clock()
        self._confirming: asyncio.Task[bool] | None = None  # the one proof asked on demand
        self._looked_revision = 0  # what the cache had applied at the last probe or proof
        self._waiter_ids = itertools.count()
        # Told of the changes, in order: the event stream and the groups' tallies.
        self.observers: list[ChangeObserver] = []

    @property
    def revision(self) -> int:
        return self.state.revision

    def snapshot(self) -> ClusterState:
        return self.state.copy()

    def expect(self, key: str, value: bytes, record: BaseModel) -> None:
        """``record``, encoded as ``value``, is about to be written at ``key`` by us."""
        self._expected.expect(key, value, record)

    def expect_all(self, expected: Mapping[str, Expected]) -> None:
        """Every record of ``expected`` is about to be written by us (a plan's)."""
        self._expected.expect_all(expected)

    def _decode(self, key: str, value: bytes, model: type[M]) -> M:
        return self._expected.decode(key, value, model)

    def out_of_touch(self, limit: float = OUT_OF_TOUCH) -> float | None:
        """Seconds since the cache was last known to follow etcd, if more than ``limit``."""
        lag = self._clock() - self._confirmed_at
        return lag if lag > limit else None

    async def confirm(self, timeout: float = CONFIRM_TIMEOUT) -> bool:
        """Prove now that the cache follows etcd: ask etcd's current revision and wait until
        the cache has applied it, within ``timeout``. What a route does before it refuses an
        out-of-touch cache: the periodic probe falls behind when this server's own loop is
        busy (a big deploy, 3,000 registrations) or was stalled, while etcd and the watch are
        fine; a guard that tripped then would shed the load it should carry. Callers that
        arrive meanwhile share one proof, so a burst of requests costs one etcd read."""
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.create_task(self._prove(timeout), name="cache-confirm")
        # shield: a request that goes away (its client gave up) does not cancel the proof
        # the others wait on.
        return await asyncio.shield(self._confirming)

    async def _prove(self, timeout: float) -> bool:
        """The probe's test, asked now: etcd answers a linearizable read (this server is in
        touch with a quorum), and the cache has applied that revision or moves on (a busy
        loop applying a big deploy is behind, and following)."""
        asked = self._clock()
        try:
            async with asyncio.timeout(timeout):
                revision = await self._store.current_revision()
        except (StoreUnavailable, TimeoutError):
            return False
        if not self._following(revision):
            # Not moved since the last look: give the watch the rest of the time to show it.
            target = min(revision, self._looked_revision + 1)
            left = max(0.0, timeout - (self._clock() - asked))
            if not await self.wait_for_revision(target, left):
                return False
        self._looked_revision = self.state.revision
        self._confirmed_at = max(self._confirmed_at, asked)
        return True

    def _following(self, revision: int) -> bool:
        """Whether the cache has applied etcd's ``revision``, or at least moved on since it
        was last looked at."""
        return self.state.revision >= revision or self.state.revision > self._looked_revision

    async def probe(self, interval: float = PROBE_INTERVAL) -> None:
        """Forever: ask etcd for its current revision. The cache follows etcd if it has
        applied that revision, or at least moved on since the last probe (a big deploy may
        keep it a few seconds behind, still following). A dead member, a lost quorum or a
        stuck watch shows as time without either (``out_of_touch``). When etcd answers and
        moves on while the cache stands still for ``WATCH_STUCK_AFTER`` seconds, the watch
        is stuck: the store restarts it, on another member if it has several."""
        self._looked_revision = self.state.revision
        stuck_since: float | None = None
        while True:
            asked = self._clock()
            try:
                revision = await self._store.current_revision()
            except StoreUnavailable:
                stuck_since = None  # etcd is away, not only the watch
            else:
                if self._following(revision):
                    self._confirmed_at = max(self._confirmed_at, asked)
                    stuck_since = None
                elif stuck_since is None:
                    stuck_since = asked
                elif asked - stuck_since >= WATCH_STUCK_AFTER:
                    stood = f"{revision} > {self.state.revision}"
                    log.warning("the etcd watch gave nothing while etcd moved on (%s)", stood)
                    self._store.restart_watches()
                    stuck_since = None
            self._looked_revision = self.state.revision
            await asyncio.sleep(max(0.0, interval - (self._clock() - asked)))

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_for_revision(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the cache has applied ``revision``; False on timeout."""
        if self.state.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._revision_waiters, (revision, next(self._waiter_ids), future))
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that coincides with the wake-up, and a cancelled leader would carry on.
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            return False
        return True

    async def wait_for_work(self, after: int, timeout: float) -> bool:
        """Wait until a change a pass plans from is applied after revision ``after``; False
        on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self.work_revision <= after:
                    await self._work_changed.next().wait()
        except TimeoutError:
            return False
        return True

    async def wait_node(self, node: str, index: int, timeout: float) -> None:
        """Wait until ``node``'s assignments change after ``index`` (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.node_index.get(node, 0) <= index and not self._released:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._node_signal.wait([node], remaining)

    async def wait_services(self, services: list[str], index: int, timeout: float) -> None:
        """Wait until one of ``services``' registry entries changes after ``index``."""
        deadline = time.monotonic() + timeout
        while not any(self.registry_index.get(s, 0) > index for s in services):
            if self._released:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._service_signal.wait(services, remaining)

    def release_waiters(self) -> None:
        """The server is stopping: every long-poll (agents' assignments, discovery watches)
        answers now with what it has, so that the stop does not wait for them, nor cut them
        off mid-request. Clients poll again, on this server's successor or another one."""
        self._released = True
        for observer in self.observers:
            observer.released()
        self._node_signal.fire_all()
        self._service_signal.fire_all()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait for the next applied change; False on timeout."""
        event = self._changed.next()
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        self._changed.fire()
        waiters = self._revision_waiters
        while waiters and waiters[0][0] <= self.state.revision:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    async def run(self) -> None:
        """Load, then follow the watch forever; reload after compaction or a long outage."""
        delay = 0.1
        while True:
            try:
                revision, entries = await self._store.load(keys.MIRROR_START, keys.MIRROR_END)
                self._replace(revision, entries)
                delay = 0.1
                while True:
                    try:
                        await self._follow()
                    except StoreUnavailable as exc:
                        log.warning("etcd watch interrupted (%s); resuming", exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
            except HistoryCompacted:
                log.warning("etcd history compacted under our watch; reloading")
            except StoreUnavailable as exc:
                log.warning("etcd unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _follow(self) -> None:
        """Apply the watch's changes as they come, giving the loop a turn every
        ``APPLY_SLICE`` of continuous applying, and only between two revisions (a reader
        never sees half of a transaction)."""
        slice_started = applied = time.monotonic()
        async for change in self._store.watch(
            keys.MIRROR_START, keys.MIRROR_END, self.state.revision + 1
        ):
            now = time.monotonic()
            if now - applied > 0.001:  # the watch made us wait: a new slice
                slice_started = now
            elif now - slice_started > APPLY_SLICE and change.revision > self.state.revision:
                await asyncio.sleep(0)
                slice_started = time.monotonic()
            self._apply(change)
            applied = time.monotonic()

    def _replace(self, revision: int, entries: list[Entry]) -> None:
        self.state = ClusterState(revision=revision)
        self.access = AccessState()
        self.lease_ttls = {}
        self.heard.record_revisions.clear()  # records gone meanwhile would guard for ever
        self.task_changes.clear()
        self._specs.clear()
        for entry in entries:
            self._set(
                entry.key, entry.value, entry.mod_revision, entry.create_revision, entry.lease
            )
        self.state.revision = revision
        for node in set(self.node_index) | set(self.state.nodes):
            self.node_index[node] = revision
        for service in list(self.registry_index):
            self.registry_index[service] = revision
        self.alive_index = revision
        self.nodes_index = revision
        self._worked(revision)
        for observer in self.observers:
            observer.reloaded(revision)
        self._node_signal.fire_all()
        self._service_signal.fire_all()
        self._ready.set()
        self._notify()

    def _apply(self, change: Change) -> None:
        observers = [o for o in self.observers if change.key.startswith(o.prefixes)]
        before = record_at(self.state, change.key) if observers else None
        live_before = self.alive_index
        if change.value is None:
            self._unset(change.key, change.revision)
        else:
            self._set(
                change.key, change.value, change.revision, change.create_revision, change.lease
            )
        self.state.revision = max(self.state.revision, change.revision)
        if plans_from(change.key, live_set_changed=self.alive_index != live_before):
            self._worked(change.revision)
        if observers:
            after = record_at(self.state, change.key)
            for observer in observers:
                try:
                    observer.changed(change.key, change.revision, before, after, change.value)
                except Exception:  # a view of the state: never let it stop the mirror
                    log.exception("observing the change of %s failed", change.key)
        self._notify()

    def _worked(self, revision: int) -> None:
        self.work_revision = max(self.work_revision, revision)
        self._work_changed.fire()

    def _set(self, key: str, value: bytes, revision: int, create_revision: int, lease: int) -> None:
        state = self.state
        try:
            if key.startswith(keys.REGISTRY):
                state.registry[key] = value
                state.registry_revisions[key] = revision
                self._touch_service(key, revision)
            elif key.startswith(keys.TASKS):
                task = self._specs.share(self._decode(key, value, TaskRecord))
                old = state.tasks.get(task.id)
                state.tasks[task.id] = task
                state.index_task(old, task)
                self._touch_nodes(revision, old, task)
                self.task_changes.task_changed(revision, task)
            elif key.startswith(keys.STATUS):
                status = self._decode(key, value, TaskStatus)
                state.statuses[status.task_id] = status
                self.task_changes.status_changed(
                    revision, status.task_id, state.tasks.get(status.task_id)
                )
            elif key.startswith(keys.GROUPS):
                group_id = key.removeprefix(keys.GROUPS)
                state.groups[group_id] = GroupRecord.model_validate_json(value)
                state.group_revisions[group_id] = revision
                self.groups_changed_at = self._clock()
            elif key.startswith(keys.NODES):
                node = NodeRecord.model_validate_json(value)
                state.nodes[node.name] = node
                self.node_index[node.name] = revision
                self.nodes_index = revision
            elif key.startswith(keys.ALIVE):
                node_name = key.removeprefix(keys.ALIVE)
                if node_name not in state.alive:
                    self.alive_index = revision
                state.alive[node_name] = lease
                self.heard.alive(node_name, revision)
                ttl = alive_ttl(value)
                if ttl is None:
                    self.lease_ttls.pop(node_name, None)
                else:
                    self.lease_ttls[node_name] = ttl
            elif key.startswith(keys.HEARD):
                self.heard.record(key, value, revision)
            elif key.startswith(keys.CONTROL):
                state.controls[key.removeprefix(keys.CONTROL)] = NodeControl.model_validate_json(
                    value
                )
                self.nodes_index = revision
            elif key.startswith(keys.VERSIONS):
                parsed = keys.parse_version_key(key)
                if parsed is not None:
                    version = SpecVersion.model_validate_json(value)
                    state.versions.setdefault(parsed[0], {})[parsed[1]] = version
            elif key.startswith(keys.DEPLOYMENTS):
                deployment = self._decode(key, value, DeploymentRecord)
                state.deployments[deployment.id] = deployment
                state.deployment_revisions[deployment.id] = revision
            elif key.startswith(keys.ACL):
                self.access.apply(key, value)
            elif key == keys.CLUSTER_ID:
                state.cluster_id = value.decode()
            elif key == keys.LEADER:
                state.leader = LeaderKey(value.decode(), create_revision)
        except (ValidationError, ValueError) as exc:
            log.error("ignoring undecodable value at %s: %s", key, exc)

    def _unset(self, key: str, revision: int) -> None:
        state = self.state
        if key.startswith(keys.REGISTRY):
            state.registry.pop(key, None)
            state.registry_revisions.pop(key, None)
            self._touch_service(key, revision)
        elif key.startswith(keys.TASKS):
            old = state.tasks.pop(key.removeprefix(keys.TASKS), None)
            state.index_task(old, None)
            self._touch_nodes(revision, old, None)
            self.task_changes.task_deleted(revision, old)
        elif key.startswith(keys.STATUS):
            task_id = key.removeprefix(keys.STATUS)
            state.statuses.pop(task_id, None)
            self.task_changes.status_changed(revision, task_id, state.tasks.get(task_id))
        elif key.startswith(keys.GROUPS):
            group_id = key.removeprefix(keys.GROUPS)
            state.groups.pop(group_id, None)
            state.group_revisions.pop(group_id, None)
            self.groups_changed_at = self._clock()
        elif key.startswith(keys.NODES):
            state.nodes.pop(key.removeprefix(keys.NODES), None)
            self.nodes_index = revision
        elif key.startswith(keys.ALIVE):
            if state.alive.pop(key.removeprefix(keys.ALIVE), None) is not None:
                self.alive_index = revision
            self.lease_ttls.pop(key.removeprefix(keys.ALIVE), None)
            self.heard.gone(key.removeprefix(keys.ALIVE))
        elif key.startswith(keys.HEARD):
            self.heard.record_revisions.pop(key, None)
        elif key.startswith(keys.CONTROL):
            state.controls.pop(key.removeprefix(keys.CONTROL), None)
            self.nodes_index = revision
        elif key.startswith(keys.VERSIONS):
            parsed = keys.parse_version_key(key)
            kept = state.versions.get(parsed[0], {}) if parsed else {}
            if parsed is not None and kept.pop(parsed[1], None) is not None and not kept:
                del state.versions[parsed[0]]
        elif key.startswith(keys.DEPLOYMENTS):
            deployment_id = key.removeprefix(keys.DEPLOYMENTS)
            state.deployments.pop(deployment_id, None)
            state.deployment_revisions.pop(deployment_id, None)
        elif key.startswith(keys.ACL):
            self.access.remove(key)
        elif key == keys.LEADER:
            state.leader = None

    def _touch_service(self, key: str, revision: int) -> None:
        service = registry_service_of(key)
        if service:
            self.registry_index[service] = revision
            self._service_signal.fire(service)

    def _touch_nodes(self, revision: int, old: TaskRecord | None, new: TaskRecord | None) -> None:
        for task in (old, new):
            if task is not None and task.node:
                self.node_index[task.node] = revision
                self._node_signal.fire(task.node)
