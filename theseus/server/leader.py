"""The reconcile loop of the elected server: snapshot → pass → commit, while its term lasts.

Election, the lease and the fence are ``theseus.store.leadership``'s; this module only runs,
during a ``Term``: snapshot the cache → ``reconcile()`` and ``track()`` (pure) → commit the
plan and the deployments' steps through ``theseus.store.commit``, every write fenced by the
term. The loop is level-triggered: it runs on every change, at the next backoff or deployment
deadline, and at least every ``TICK`` seconds. A new leader reconciles only once its cache
holds its own election, i.e. every write of its predecessors.

The pass itself runs off the event loop, on a snapshot no one else holds: at 10,000 tasks it
takes a good part of a second of CPU, and on the event loop it would hold up for that long
every heartbeat, HTTP answer and the keep-alive of the leader's own lease. A worker thread
waits for it, and with ``fork_passes`` (as the server runs it) a pass with many placements to
make runs in a forked child process (``theseus.server.pass_process``), so that it does not
share the GIL with the loop; other passes, and all without, run in the thread itself. Only
one pass runs at a time, even across a step-down, since the registry view and the encoding
memo it works with are the leader's own.

A pass with many placements to make waits, while groups are still changing, for a deploy
sent as several documents to settle (``theseus.server.settle``), so that one pass places all
of it.

Most passes are scoped to the groups that changed since the last committed pass
(``theseus.reconciler.scope`` says when that is enough): at 50,000 tasks a pass over everything
takes 0.6 s of CPU, and the agents' reports call for one every few seconds.

The registry is kept in two ways. Each pass writes what task changes imply, compared with the
leader's own view of what it has written (so a task that starts running is registered within
milliseconds). Every ``registry_repair_interval`` seconds (or every ten full passes' time, if
longer: ``scope.repair_due``) a full pass compares with what etcd actually holds instead, which
repairs entries edited or deleted by hand (anti-entropy); ``GET /cleanup`` does the same on
demand and reports what it changed.

The deployments' progress, success, failure at the progress deadline and auto-revert are
written in transactions guarded by the revisions the pass saw (a refused one is decided
again on the next pass), and the loop wakes at the earliest deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from theseus.model.state import ClusterState
from theseus.reconciler.deployments import Tracked, track
from theseus.reconciler.reconcile import Plan, reconcile
from theseus.reconciler.registry import EncodingMemo
from theseus.reconciler.scope import (
    LastPass,
    SharedInputs,
    light_scope,
    pass_scope,
    repair_due,
)
from theseus.server.gc_policy import made_old
from theseus.server.liveness import lost_nodes
from theseus.server.metrics import ServerMetrics
from theseus.server.pass_process import (
    PassProcessFailed,
    forked_pass,
    instances_lacking,
    worth_a_child,
)
from theseus.server.settle import SETTLE_QUIET, Settling
from theseus.server.stall import StallWatch, spared_nodes
from theseus.store import keys
from theseus.store.base import Delete, ModRevisionIs, Store, StoreUnavailable
from theseus.store.cache import StateCache
from theseus.store.commit import PARALLEL_TXNS, Txn, commit_all, commit_txns
from theseus.store.encoding import (
    EncodedPlan,
    encode_forgotten_deployments,
    encode_group_writes,
    encode_plan,
)
from theseus.store.leadership import Leadership, Term

log = logging.getLogger(__name__)

TICK = 1.0
SWEEP_EVERY = 0.5  # seconds between two looks for nodes no server heard for their TTL
DEFAULT_TTL = 3  # seconds: a node's TTL when its alive key gives none
# Changes arriving within this window are reconciled in one pass (e.g. a burst of reports).
COALESCE = 0.005
SLOW_PASS = 0.5  # seconds: passes slower than this are logged with their breakdown
# After a pass that changed something, the next waits REST_FACTOR times as long as that pass
# took, up to MAX_REST (passes shorter than MIN_REST, as in any cluster of a few hundred
# nodes, do not wait): at 50,000 tasks a pass takes 1-3 s of a core, and back to back they
# starved the agents' requests and the heartbeats of the other core (BENCHMARKS.md, issue
# 17). Resting twice as long, a deploy's reports are reconciled in fewer, bigger passes: each
# pass over 50,000 tasks costs the same however few of them changed.
MIN_REST = 0.05
REST_FACTOR = 2.0
MAX_REST = 4.0
# A plan of this many writes or more is packed into transactions in a worker thread
# (``_commit_plan``); a smaller one, in a few milliseconds, on the loop.
PACK_IN_THREAD = 5_000


class Leader:
    def __init__(
        self,
        store: Store,
        cache: StateCache,
        leadership: Leadership,
        registry_repair_interval: float = 3.0,
        stalls: StallWatch | None = None,
        loss_grace: Callable[[], float] = lambda: 0.0,
        node_ttl: Callable[[str], int] | None = None,
        metrics: ServerMetrics | None = None,
        fork_passes: bool = False,
    ) -> None:
        self._store = store
        self._fork_passes = fork_passes
        self._metrics = metrics if metrics is not None else ServerMetrics()
        self._stalls = stalls or StallWatch()
        self._loss_grace = loss_grace  # seconds: how long node losses wait (``stall``)
        # Seconds a node may go unheard (``liveness``): by default, what its alive key says.
        self._node_ttl = node_ttl or (lambda node: cache.lease_ttls.get(node, DEFAULT_TTL))
        self._leading_since = 0.0
        self._absent_at_election: frozenset[str] | None = None
        self._cache = cache
        self._leadership = leadership
        self._repair_interval = registry_repair_interval
        self._registry_view: dict[str, bytes] = {}  # what we believe /services/ holds
        self._last_repair = -math.inf  # monotonic
        # Seconds the last full pass took (``scope.repair_due``), in the thread or a child.
        self._full_took = 0.0
        self._encodings: EncodingMemo = {}  # registry entries encoded by earlier passes
        # Held by the pass's worker thread: a pass orphaned by a step-down (its coroutine was
        # cancelled, its thread runs on) must end before the next one uses the memo.
        self._pass_lock = threading.Lock()
        self._settling = Settling()  # a big deploy's pass, held back for its next documents
        self.passes = 0
        self.child_peak_rss = 0  # bytes: the largest a pass's child process grew (``fork_passes``)

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    async def run(self) -> None:
        await self._leadership.run(self._lead)

    async def _lead(self, term: Term) -> None:
        """Reconcile while the term lasts, through etcd hiccups.

        Every pass plans from the cache, so the cache must hold every write already made:
        the predecessors' (all older than our election) before the first pass, and after a
        failed commit (which etcd may have applied all the same) whatever etcd holds now.
        Otherwise a pass could, say, start again a task that a lost commit already started.
        """
        self._metrics.elections.inc()
        caught_up_to = term.revision
        while not term.over:
            try:
                if caught_up_to == 0:
                    caught_up_to = await self._store.current_revision()
                if not await self._cache.wait_for_revision(caught_up_to, timeout=1.0):
                    continue
                await self._reconcile_while_leading(term)
                return  # stepped down: lease lost, or our key or fence refused
            except StoreUnavailable as exc:
                # Our lease is still being kept (or the keep-alive will give up in time):
                # stay leader, catch up with etcd, and go on.
                log.warning("leader: etcd unavailable (%s); retrying", exc)
                caught_up_to = 0
                await asyncio.sleep(0.2)

    async def _reconcile_while_leading(self, term: Term) -> None:
        self._leading_since = time.monotonic()
        self._absent_at_election = None
        sweep = asyncio.create_task(self._sweep_lost_nodes(term), name="lost-nodes")
        try:
            await self._reconcile_passes(term)
        finally:
            sweep.cancel()

    async def _sweep_lost_nodes(self, term: Term) -> None:
        """While the term lasts: delete the ``alive`` key of each node that no server heard
        for its TTL (``theseus.server.liveness``), fenced, and guarded by the key's revision
        (a node that registered again meanwhile keeps it)."""
        refused = False
        while not term.over:
            if refused:  # a heard record came in since we looked: look again once we have it
                try:
                    caught_up = await self._store.current_revision()
                except StoreUnavailable:
                    caught_up = 0
                await self._cache.wait_for_revision(caught_up, timeout=SWEEP_EVERY)
                await asyncio.sleep(SWEEP_EVERY / 10)  # never a loop of refusals
            else:
                await asyncio.sleep(SWEEP_EVERY)
            refused = False
            if self._cache.out_of_touch() is not None and not await self._cache.confirm():
                continue  # who was heard, as this cache says, may be behind etcd
            heard = self._cache.heard
            now = time.monotonic()
            floor = max(self._leading_since, self._stalls.stall_end() or -math.inf)
            lost = lost_nodes(
                self._cache.state.alive, heard.at, self._node_ttl, now, floor, self._loss_grace()
            )
            if not lost:
                continue
            units = [
                Txn(
                    [Delete(keys.alive_key(node))],
                    [ModRevisionIs(keys.alive_key(node), heard.alive_revisions.get(node, 0))],
                )
                for node in lost
            ]
            # ...and by every heard record as this cache has it: a heartbeat answered since
            # (its record written, not yet seen here) keeps its node.
            records = [ModRevisionIs(k, r) for k, r in heard.record_revisions.items()]
            try:
                committed = await commit_all(self._store, units, shared=[term.fence, *records])
            except StoreUnavailable as exc:
                log.warning("lost nodes not declared (%s); trying again", exc)
                continue
            if committed.refused:
                refused = True  # heard or registered again, or the term is over
                continue
            for node in lost:
                unheard = now - max(heard.at.get(node, floor), floor)
                log.info("node %s lost: not heard for %.1f s", node, unheard)
            self._metrics.nodes_lost.inc(len(lost))

    async def _reconcile_passes(self, term: Term) -> None:
        last_commit = 0
        self._last_repair = -math.inf  # the first pass as leader compares with etcd itself
        last: LastPass | None = None  # the term's last committed pass (None: the next is full)
        while not term.over:
            if not await self._cache.wait_for_revision(last_commit):
                # Planning without our own last commit would redo it (tasks started twice).
                log.warning("the cache has not seen our last commit (%d) yet", last_commit)
                continue
            wait = self._settle(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            started = time.monotonic()
            snapshot = made_old(self._cache.snapshot)
            ours = snapshot.leader is not None and snapshot.leader.revision == term.revision
            if not ours and snapshot.revision >= term.revision:
                log.warning("leader key no longer ours; stepping down")
                return
            now = time.time()
            snapshot.spared = self._spared(snapshot)
            only: frozenset[str] | None = None
            repair = repair_due(started, self._last_repair, self._repair_interval, self._full_took)
            if not repair:
                only = pass_scope(last, snapshot, self._cache.group_index, self._shared_inputs())
            copied = time.monotonic()
            plan, encoded, tracked, placed, compared = await asyncio.to_thread(
                self._pass, snapshot, now, only, last, repair
            )
            planned = time.monotonic()  # what follows waits on etcd: the log counts it apart
            if compared:  # a repair: etcd's registry, which the pass had, is our view again
                self._registry_view = snapshot.registry
                self._last_repair = started
            self.passes += 1
            self._metrics.reconcile_pass.observe(planned - started)
            if not tracked.empty:
                revision = await self._commit_tracked(snapshot, tracked, term)
                last_commit = max(last_commit, revision)
                if revision and any(w.touches_group for w in tracked.writes):
                    last = None  # the plan is dropped: its groups must be decided again
                    continue  # a revert: plan from the reverted group, not the failed one
            last = LastPass(
                revision=snapshot.revision,
                groups=frozenset(snapshot.groups),
                spared=snapshot.spared,
                waiting_groups=plan.waiting_groups,
                orphans=plan.orphans,
            )
            if not plan.empty:
                committing = time.monotonic()
                committed = await self._commit_plan(plan, encoded, term)
                if committed is None:
                    log.warning("plan refused by the fence; stepping down")
                    return
                last = replace(last, wrote_until=committed)
                self._metrics.reconcile_commit.observe(time.monotonic() - committing)
                self._metrics.placements.inc(placed)
                last_commit = max(last_commit, committed)
                _log_slow_pass(
                    plan, started, copied, planned, len(snapshot.tasks), self.child_peak_rss
                )
                await _rest_after(planned - copied)
                continue
            if tracked.wake_at is not None:
                wake = plan.wake_at
                plan.wake_at = tracked.wake_at if wake is None else min(wake, tracked.wake_at)
            await self._wait_for_work(snapshot, plan, now, planned - copied)

    def _settle(self, now: float) -> float:
        """Seconds to wait for a deploy's next documents before this pass (``Settling``);
        the instances wanted are only counted while groups keep changing."""
        changed_at = self._cache.groups_changed_at
        if now - changed_at >= SETTLE_QUIET:
            return self._settling.delay(now, changed_at, 0)
        return self._settling.delay(now, changed_at, instances_lacking(self._cache.state))

    def _spared(self, snapshot: ClusterState) -> frozenset[str]:
        """The nodes whose loss this pass holds back (``theseus.server.stall``)."""
        absent = frozenset(snapshot.nodes.keys() - snapshot.alive.keys())
        if self._absent_at_election is None:  # the term's first pass
            self._absent_at_election = absent
        return spared_nodes(
            absent,
            self._absent_at_election,
            time.monotonic(),
            self._leading_since,
            self._stalls.check(),
            self._loss_grace(),
        )

    def _shared_inputs(self) -> SharedInputs:
        return SharedInputs(alive=self._cache.alive_index, nodes=self._cache.nodes_index)

    def _pass(
        self,
        snapshot: ClusterState,
        now: float,
        only: frozenset[str] | None,
        last: LastPass | None,
        repair: bool,
    ) -> tuple[Plan, EncodedPlan, Tracked, int, bool]:
        """One reconcile pass (over the groups ``only`` names, or all; some of them lightly,
        if only statuses of live tasks changed in them since ``last``) and its encoding, the
        step of the running deployments (``theseus.reconciler.deployments``), the number of
        tasks it places (for the metrics: counted here, off the event loop), and whether it
        was a repair, in a worker thread. ``snapshot`` is this pass's own copy, with the
        registry etcd holds; the pass sees the leader's view of it instead unless it repairs,
        and the view is only changed by a commit, which waits for the pass.

        A pass worth a child process (many placements to make, or very many tasks to look
        at in full) has the same scope there. The passes that register a big deploy's tasks
        as they start look at those that started since the last pass, lightly, and stay in
        this thread (``pass_process.worth_a_child``)."""
        with self._pass_lock:
            # Read here, off the loop (a look at every task of the scope): the indexes are
            # the cache's own, so they may run ahead of the snapshot, which only widens it.
            changes = self._cache.task_changes
            light = light_scope(last, snapshot, only, changes.records, changes.statuses)
            if not repair:
                snapshot.registry = self._registry_view
            scope = "all" if only is None else "changed"
            started = time.monotonic()
            if self._fork_passes and worth_a_child(snapshot, only, light):
                try:
                    done = forked_pass(snapshot, now, self._encodings, only, light)
                except (OSError, PassProcessFailed) as exc:
                    log.warning("reconcile pass in a child process failed (%s): in a thread", exc)
                else:
                    if only is None:
                        # What spaces the registry's repairs (``repair_due``): left at a
                        # small cluster's thread pass, the repair came every 3 s at 50,000
                        # tasks, and each was a full pass in a child.
                        self._full_took = time.monotonic() - started
                    self.child_peak_rss = max(self.child_peak_rss, done.child_peak_rss)
                    self._metrics.passes.labels("child", scope).inc()
                    placed = _placements(snapshot, done.plan)
                    return done.plan, done.encoded, done.tracked, placed, repair
            self._metrics.passes.labels("thread", scope).inc()
            started = time.monotonic()
            tracked = track(snapshot, now)
            plan = reconcile(snapshot, now, memo=self._encodings, only=only, light=light)
            if only is None:
                self._full_took = time.monotonic() - started
            return plan, encode_plan(plan), tracked, _placements(snapshot, plan), repair

    async def _commit_tracked(self, snapshot: ClusterState, tracked: Tracked, term: Term) -> int:
        """Write the deployments' progress, failures and reverts, fenced and guarded by what
        ``snapshot`` saw (a refused write is decided again on the next pass), then forget the
        oldest finished ones; the last revision written, or 0."""
        units = encode_group_writes(snapshot, tracked.writes)
        units += encode_forgotten_deployments(tracked.forget)
        committed = await commit_all(self._store, units, shared=[term.fence])
        return committed.revision

    async def _wait_for_work(
        self, snapshot: ClusterState, plan: Plan, now: float, took: float
    ) -> None:
        """Until a change a pass plans from (``StateCache.wait_for_work``: not a lease
        replaced, nor the registry), or the plan's wake-up time, then a little longer so that
        changes arriving together make one pass. A pass that changed nothing is followed by
        a pause as long as it took (the pass thread and the loop share the GIL: passes back
        to back while 3,000 agents join each change one key starve the loop answering them)."""
        timeout = TICK
        if plan.wake_at is not None:
            timeout = max(0.0, min(timeout, plan.wake_at - now))
        await self._cache.wait_for_work(snapshot.revision, timeout)
        await asyncio.sleep(max(COALESCE, min(took, TICK)))

    async def commit(self, plan: Plan) -> int | None:
        """Write ``plan`` in the current term; None when we do not lead or the fence refused
        it (a deposed leader that does not know it yet). Not while the loop runs passes: they
        take the task records written up to their own commit for their own
        (``LastPass.wrote_until``)."""
        term = self._leadership.term
        if term is None:
            return None
        return await self._commit_plan(plan, encode_plan(plan), term)

    async def _commit_plan(self, plan: Plan, encoded: EncodedPlan, term: Term) -> int | None:
        """Write the plan in fenced transactions, ``PARALLEL_TXNS`` at a time (etcd then
        batches them into fewer raft rounds); None if the fence refused one.

        A big plan is packed in a worker thread: the loop gets the GIL back every few
        milliseconds meanwhile, where packing 50,000 writes held it for 70 ms at once (and
        four times as long while the plan's units were made there)."""
        self._cache.expect_all(encoded.expected)
        shared = [term.fence]
        if len(encoded.ops) >= PACK_IN_THREAD:
            txns = await asyncio.to_thread(encoded.transactions, shared)
        else:
            txns = encoded.transactions(shared)
        committed = await commit_txns(
            self._store, txns, parallel=PARALLEL_TXNS, stop_on_refusal=True
        )
        if committed.refused:
            return None
        self._registry_view.update(plan.registry_puts)
        for key in plan.registry_deletes:
            self._registry_view.pop(key, None)
        return committed.revision


def _placements(before: ClusterState, plan: Plan) -> int:
    """Tasks the plan puts on a node that had none (new tasks placed at once included)."""
    placed = 0
    for task_id, task in plan.task_puts.items():
        if task.node is not None:
            old = before.tasks.get(task_id)
            placed += old is None or old.node is None
    return placed


def rest_after(took: float) -> float:
    """Seconds the leader rests after a pass that changed something and took ``took``."""
    return min(took * REST_FACTOR, MAX_REST) if took >= MIN_REST else 0.0


async def _rest_after(took: float) -> None:
    rest = rest_after(took)
    if rest:
        await asyncio.sleep(rest)


def _log_slow_pass(
    plan: Plan, started: float, copied: float, planned: float, tasks: int, child_rss: int
) -> None:
    """Say where a slow pass spent its time (those that take half a second or more)."""
    done = time.monotonic()
    if done - started < SLOW_PASS:
        return
    ops = len(plan.task_puts) + len(plan.status_puts) + len(plan.task_deletes)
    ops += len(plan.status_deletes) + len(plan.registry_puts) + len(plan.registry_deletes)
    log.info(
        # "commit": the deployments' steps, then the plan's writes (both wait on etcd).
        "slow pass over %d tasks: %.0f ms (snapshot %.0f, plan %.0f, commit of %d writes %.0f); "
        "passes' child processes: peak RSS %.0f MiB so far",
        tasks,
        1000 * (done - started),
        1000 * (copied - started),
        1000 * (planned - copied),
        ops,
        1000 * (done - planned),
        child_rss / 2**20,
    )
