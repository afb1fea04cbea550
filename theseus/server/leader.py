"""Leader election and the reconcile loop.

Every server campaigns for ``/theseus/leader`` with a lease; the holder runs the loop:
snapshot the cache → ``reconcile()`` (pure) → commit the plan. Each commit is guarded by the
create revision of the leader key, so a deposed leader's writes are refused by etcd (fencing).
The loop is level-triggered: it runs on every change, at the next backoff deadline, and at
least every ``TICK`` seconds.

Takeover: the lease lives ``lease_ttl`` seconds (2 by default, etcd's minimum with its default
timings) and is refreshed every third of that, so a leader that dies is replaced about
``lease_ttl`` seconds later: the followers' caches see the leader key vanish when etcd expires
the lease, and they campaign at once. A leader that cannot refresh its lease (etcd moving to
another member) keeps trying until the lease would have expired, then steps down. A new leader
reconciles only once its cache holds its own election, i.e. every write of its predecessors.

The pass itself runs in a worker thread, on a snapshot no one else holds: at 10,000 tasks it
takes a good part of a second of CPU, and on the event loop it would hold up for that long
every heartbeat, HTTP answer and the keep-alive of the leader's own lease. (The thread still
shares the GIL, but the loop gets it back every few milliseconds.) Only one pass runs at a
time, even across a step-down, since the registry view and the encoding memo it works with
are the leader's own.

The registry is kept in two ways. Each pass writes what task changes imply, compared with the
leader's own view of what it has written (so a task that starts running is registered within
milliseconds). Every ``registry_repair_interval`` seconds a pass compares with what etcd
actually holds instead, which repairs entries edited or deleted by hand (anti-entropy);
``GET /cleanup`` does the same on demand and reports what it changed.

Each pass also steps the running deployments (``theseus.reconciler.deployments.track``):
their progress, success, failure at the progress deadline and auto-revert are written in
fenced transactions guarded by the revisions the pass saw (a refused one is decided again
on the next pass), and the loop wakes at the earliest deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel

from theseus.model.state import ClusterState
from theseus.reconciler.deployments import Tracked, track
from theseus.reconciler.reconcile import Plan, reconcile
from theseus.reconciler.registry import EncodingMemo
from theseus.server.rollouts import encode_writes
from theseus.store import keys
from theseus.store.cache import StateCache
from theseus.store.etcd import (
    MAX_TXN_OPS,
    CreateRevisionIs,
    Delete,
    EtcdStore,
    Op,
    Put,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

TICK = 1.0
TRACKED_PER_TXN = 100  # deployment writes per transaction (each one up to ~6 ops and guards)
# Changes arriving within this window are reconciled in one pass (e.g. a burst of reports).
COALESCE = 0.005
PARALLEL_TXNS = 4  # a plan's transactions in flight at once
SLOW_PASS = 0.5  # seconds: passes slower than this are logged with their breakdown


class Leader:
    def __init__(
        self,
        store: EtcdStore,
        cache: StateCache,
        server_id: str,
        lease_ttl: int = 2,
        registry_repair_interval: float = 3.0,
        keepalive_store: EtcdStore | None = None,
    ) -> None:
        self._store = store
        # A connection of its own for the leader lease's keep-alive: etcd answers the
        # refreshes of one keep-alive stream one after the other, each after its pending
        # writes are applied, so behind 1,000 nodes' heartbeats during a big deploy the
        # leader's own refresh waited seconds, past its lease.
        self._keepalive_store = keepalive_store or store
        self._cache = cache
        self.server_id = server_id
        self._lease_ttl = lease_ttl
        self._repair_interval = registry_repair_interval
        self._fence: int | None = None  # create revision of our leader key while we lead
        self._registry_view: dict[str, bytes] = {}  # what we believe /services/ holds
        self._last_repair = 0.0
        self._encodings: EncodingMemo = {}  # registry entries encoded by earlier passes
        # Held by the pass's worker thread: a pass orphaned by a step-down (its coroutine was
        # cancelled, its thread runs on) must end before the next one uses the memo.
        self._pass_lock = threading.Lock()
        self.passes = 0

    @property
    def is_leader(self) -> bool:
        return self._fence is not None

    async def run(self) -> None:
        await self._cache.wait_ready()
        while True:
            try:
                await self._campaign_once()
            except StoreUnavailable as exc:
                log.warning("leadership: etcd unavailable (%s)", exc)
                self._fence = None
                await asyncio.sleep(0.5)

    async def _campaign_once(self) -> None:
        if self._cache.state.leader is not None:
            # Someone leads: wait for its key to go away (the cache wakes us when etcd expires
            # or revokes its lease), re-checking now and then in case the cache lags.
            await self._cache.wait_changed(self._lease_ttl / 2)
            return
        granted = asyncio.get_running_loop().time()  # the lease's TTL runs from about here
        lease = await self._store.grant_lease(self._lease_ttl)
        try:
            revision = await self._store.commit(
                [Put(keys.LEADER, self.server_id.encode(), lease=lease)],
                [CreateRevisionIs(keys.LEADER, 0)],
            )
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(lease)
            raise
        if revision is None:
            await self._store.revoke_lease(lease)
            await self._cache.wait_changed(self._lease_ttl / 2)
            return
        self._fence = revision
        log.info("%s is now the leader (fence %d)", self.server_id, revision)
        keepalive = asyncio.create_task(self._keep_alive(lease, granted))
        try:
            await self._lead(revision, keepalive)
        finally:
            self._fence = None
            keepalive.cancel()
            # Revoked in any case, so that even a keep-alive that failed to stop cannot hold
            # the leadership for a server that no longer leads (refreshing a revoked lease
            # fails, which ends the loop).
            await asyncio.wait([keepalive], timeout=1.0)
            if keepalive.done() and not keepalive.cancelled():
                keepalive.exception()  # retrieved: it ended as intended, or we step down anyway
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(lease)

    async def _lead(self, elected_at: int, keepalive: asyncio.Task[None]) -> None:
        """Reconcile while the lease holds, through etcd hiccups.

        Every pass plans from the cache, so the cache must hold every write already made:
        the predecessors' (all older than our election) before the first pass, and after a
        failed commit (which etcd may have applied all the same) whatever etcd holds now.
        Otherwise a pass could, say, start again a task that a lost commit already started.
        """
        caught_up_to = elected_at
        while not keepalive.done():
            try:
                if caught_up_to == 0:
                    caught_up_to = await self._store.current_revision()
                if not await self._cache.wait_for_revision(caught_up_to, timeout=1.0):
                    continue
                await self._reconcile_while_leading(keepalive)
                return  # stepped down: lease lost, or our key or fence refused
            except StoreUnavailable as exc:
                # Our lease is still being kept (or the keep-alive will give up in time):
                # stay leader, catch up with etcd, and go on.
                log.warning("leader: etcd unavailable (%s); retrying", exc)
                caught_up_to = 0
                await asyncio.sleep(0.2)

    async def _keep_alive(self, lease: int, granted: float) -> None:
        """Refresh the lease every third of its TTL; returns (which ends our leadership) when
        etcd says it expired, or when it may have: no refresh succeeded for a whole TTL."""
        loop = asyncio.get_running_loop()
        expires = granted + self._lease_ttl
        interval = self._lease_ttl / 3
        while True:
            slept = loop.time()
            await asyncio.sleep(interval)
            sent = loop.time()
            if sent - slept > interval + 0.5:
                # The lease only survives a stall shorter than two thirds of its TTL: say so.
                log.warning("leader keep-alive woke %.1fs late", sent - slept - interval)
            remaining = expires - sent
            if remaining <= 0:
                log.warning("leader lease not refreshed for %ss; stepping down", self._lease_ttl)
                return
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation that coincides
                # with the answer, and this loop must end when leadership does.
                async with asyncio.timeout(remaining):
                    alive = await self._keepalive_store.refresh_lease(lease)
            except (StoreUnavailable, TimeoutError) as exc:
                # A timeout has no message: name the exception, not just its text.
                log.warning("leader lease refresh failed (%s); retrying", repr(exc))
                interval = min(0.1, self._lease_ttl / 3)  # etcd moves to another member
                continue
            if not alive:
                log.warning("leader lease expired; stepping down")
                return
            expires = sent + self._lease_ttl  # counted from before etcd saw the refresh
            interval = self._lease_ttl / 3

    async def _reconcile_while_leading(self, keepalive: asyncio.Task[None]) -> None:
        last_commit = 0
        self._last_repair = 0.0  # the first pass as leader compares with etcd itself
        while not keepalive.done():
            if not await self._cache.wait_for_revision(last_commit):
                # Planning without our own last commit would redo it (tasks started twice).
                log.warning("the cache has not seen our last commit (%d) yet", last_commit)
                continue
            started = time.monotonic()
            snapshot = self._cache.snapshot()
            ours = snapshot.leader is not None and snapshot.leader[1] == self._fence
            if not ours and snapshot.revision >= (self._fence or 0):
                log.warning("leader key no longer ours; stepping down")
                return
            now = time.time()
            if now - self._last_repair >= self._repair_interval:
                self._registry_view = dict(snapshot.registry)
                self._last_repair = now
            snapshot.registry = self._registry_view
            copied = time.monotonic()
            plan, encoded, tracked = await asyncio.to_thread(self._pass, snapshot, now)
            planned = time.monotonic()  # what follows waits on etcd: the log counts it apart
            self.passes += 1
            if not tracked.empty:
                revision = await self._commit_tracked(snapshot, tracked)
                last_commit = max(last_commit, revision)
                if revision and any(w.touches_group for w in tracked.writes):
                    continue  # a revert: plan from the reverted group, not the failed one
            if not plan.empty:
                committed = await self.commit(plan, encoded)
                if committed is None:
                    log.warning("plan refused by the fence; stepping down")
                    return
                last_commit = max(last_commit, committed)
                _log_slow_pass(plan, started, copied, planned, len(snapshot.tasks))
                continue
            if tracked.wake_at is not None:
                wake = plan.wake_at
                plan.wake_at = tracked.wake_at if wake is None else min(wake, tracked.wake_at)
            await self._wait_for_work(snapshot, plan, now)

    def _pass(self, snapshot: ClusterState, now: float) -> tuple[Plan, EncodedPlan, Tracked]:
        """One reconcile pass and its encoding, and the step of the running deployments
        (``theseus.reconciler.deployments``), in a worker thread. ``snapshot`` is this
        pass's own copy; the registry view is only changed by ``commit``, which waits for the
        pass."""
        with self._pass_lock:
            tracked = track(snapshot, now)
            plan = reconcile(snapshot, now, memo=self._encodings)
            return plan, encode_plan(plan), tracked

    async def _commit_tracked(self, snapshot: ClusterState, tracked: Tracked) -> int:
        """Write the deployments' progress, failures and reverts, fenced and guarded by what
        ``snapshot`` saw (a refused write is decided again on the next pass); the last
        revision written, or 0."""
        assert self._fence is not None
        fence = CreateRevisionIs(keys.LEADER, self._fence)
        last = 0
        batches = [
            tracked.writes[i : i + TRACKED_PER_TXN]
            for i in range(0, len(tracked.writes), TRACKED_PER_TXN)
        ]
        for batch in batches:
            ops, guards = encode_writes(snapshot, batch)
            last = await self._store.commit(ops, [fence, *guards]) or last
        forget: list[Op] = [Delete(keys.deployment_key(d)) for d in tracked.forget]
        for start in range(0, len(forget), MAX_TXN_OPS - 1):
            last = (
                await self._store.commit(forget[start : start + MAX_TXN_OPS - 1], [fence]) or last
            )
        return last

    async def _wait_for_work(self, snapshot: ClusterState, plan: Plan, now: float) -> None:
        timeout = TICK
        if plan.wake_at is not None:
            timeout = max(0.0, min(timeout, plan.wake_at - now))
        if self._cache.revision == snapshot.revision:
            await self._cache.wait_changed(timeout)
        await asyncio.sleep(COALESCE)

    async def commit(self, plan: Plan, encoded: EncodedPlan | None = None) -> int | None:
        """Write the plan in fenced transactions of at most ``MAX_TXN_OPS`` operations,
        ``PARALLEL_TXNS`` at a time (etcd then batches them into fewer raft rounds) unless
        two of them touch the same key, whose order then matters."""
        assert self._fence is not None
        if encoded is None:
            encoded = encode_plan(plan)
        ops = encoded.ops
        for op in ops:
            record = encoded.records.get(op.key)
            if record is not None and isinstance(op, Put):
                self._cache.expect(op.key, op.value, record)
        fence = [CreateRevisionIs(keys.LEADER, self._fence)]
        size = MAX_TXN_OPS - len(fence)
        chunks = [ops[start : start + size] for start in range(0, len(ops), size)]
        parallel = PARALLEL_TXNS if len({op.key for op in ops}) == len(ops) else 1
        gate = asyncio.Semaphore(parallel)
        refused = False

        async def write(chunk: list[Op]) -> int:
            nonlocal refused
            async with gate:
                if refused:
                    return 0
                committed = await self._store.commit(chunk, fence)
                if committed is None:
                    refused = True
                    return 0
                return committed

        revisions = await asyncio.gather(*(write(chunk) for chunk in chunks))
        if refused:
            return None
        self._registry_view.update(plan.registry_puts)
        for key in plan.registry_deletes:
            self._registry_view.pop(key, None)
        return max(revisions, default=0)


@dataclass
class EncodedPlan:
    """A plan as etcd operations, and the records behind the puts that hold one (so that
    the cache need not parse them back)."""

    ops: list[Op]
    records: dict[str, BaseModel]


def encode_plan(plan: Plan) -> EncodedPlan:
    ops: list[Op] = []
    records: dict[str, BaseModel] = {}
    # Grouped by node: each transaction wakes the assignment long-poll of every node it
    # touches, so a node's new tasks had better arrive together (a 10,000-task deploy
    # otherwise wakes each of 1,000 nodes about once per task).
    for task in sorted(plan.task_puts.values(), key=lambda t: t.node or ""):
        key = keys.task_key(task.id)
        ops.append(Put(key, task.model_dump_json().encode()))
        records[key] = task
    for status in plan.status_puts.values():
        key = keys.status_key(status.task_id)
        ops.append(Put(key, status.model_dump_json().encode()))
        records[key] = status
    ops.extend(Delete(keys.task_key(task_id)) for task_id in plan.task_deletes)
    ops.extend(Delete(keys.status_key(task_id)) for task_id in plan.status_deletes)
    ops.extend(Put(key, value) for key, value in plan.registry_puts.items())
    ops.extend(Delete(key) for key in plan.registry_deletes)
    return EncodedPlan(ops, records)


def _log_slow_pass(plan: Plan, started: float, copied: float, planned: float, tasks: int) -> None:
    """Say where a slow pass spent its time (those that take half a second or more)."""
    done = time.monotonic()
    if done - started < SLOW_PASS:
        return
    ops = len(plan.task_puts) + len(plan.status_puts) + len(plan.task_deletes)
    ops += len(plan.status_deletes) + len(plan.registry_puts) + len(plan.registry_deletes)
    log.info(
        # "commit": the deployments' steps, then the plan's writes (both wait on etcd).
        "slow pass over %d tasks: %.0f ms (snapshot %.0f, plan %.0f, commit of %d writes %.0f)",
        tasks,
        1000 * (done - started),
        1000 * (copied - started),
        1000 * (planned - copied),
        ops,
        1000 * (done - planned),
    )
