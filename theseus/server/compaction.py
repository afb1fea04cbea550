"""etcd's history, compacted by the leader every few minutes, as Kubernetes' API server does.

etcd keeps every revision of every key until someone compacts it, and it starts with no
compaction of its own (``--auto-compaction-retention`` is off by default). Every write of
Theseus is a new revision: a 5,000-node deploy of 50,000 tasks writes about 137,000 keys, and
grew etcd's database by 56 MB (bench/scale.py). At etcd's default quota of 2 GiB, a few dozen
such deploys, or a long-lived cluster's reports, and etcd refuses every write ("mvcc: database
space exceeded") until an operator compacts it by hand.

So, like kube-apiserver (``--etcd-compaction-interval``, 5 minutes by default), the leader
compacts every ``interval`` seconds up to the revision it read one interval before: at least
one interval of history stays for the watches that resume from a recent revision, and a watch
further behind than that reloads (``StateCache`` on ``HistoryCompacted``). Compaction frees
the space of old revisions for later writes inside etcd's database; the file itself shrinks
only when defragmented (``etcdctl defrag``), which blocks the member while it runs and is left
to operators (README.md, "etcd's history").

``HistoryCompactor.run`` is started by ``theseus.server.app`` on every server and acts only
while its server leads; ``compaction_due`` is the pure part. Its work is counted on
``/metrics`` (``theseus_etcd_compactions_total``, ``theseus_etcd_compacted_revision``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from theseus.server.metrics import ServerMetrics
from theseus.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300.0  # seconds: kube-apiserver's default
CHECK_EVERY = 1.0  # seconds between two looks at the clock and the leadership


@dataclass(frozen=True)
class Mark:
    """A revision of etcd, and when (monotonic) this server read it."""

    revision: int
    at: float


def compaction_due(mark: Mark | None, now: float, interval: float) -> int | None:
    """The revision to compact up to now, if any (pure): the one read ``interval`` ago."""
    if mark is None or now - mark.at < interval:
        return None
    return mark.revision


class HistoryCompactor:
    def __init__(
        self,
        store: Store,
        is_leader: Callable[[], bool],
        interval: float = DEFAULT_INTERVAL,
        metrics: ServerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics if metrics is not None else ServerMetrics()
        self._is_leader = is_leader
        self._interval = interval
        self._clock = clock
        self._mark: Mark | None = None
        self.compacted = 0  # the last revision compacted up to

    async def run(self) -> None:
        """Forever (with an interval of 0, never: compaction is off)."""
        if self._interval <= 0:
            return
        while True:
            await self.step()
            await asyncio.sleep(min(CHECK_EVERY, self._interval))

    async def step(self) -> None:
        """Compact if due, and read the revision to compact up to next time."""
        if not self._is_leader():
            self._mark = None  # a new term reads its own first: one interval at least
            return
        now = self._clock()
        if self._mark is not None and compaction_due(self._mark, now, self._interval) is None:
            return
        try:
            due = compaction_due(self._mark, now, self._interval)
            if due is not None and due > self.compacted:
                await self._store.compact_history(due)
                self.compacted = due
                self._metrics.compactions.inc()
                self._metrics.compacted_revision.set(due)
                log.info("compacted etcd's history before revision %d", due)
            self._mark = Mark(await self._store.current_revision(), self._clock())
        except StoreUnavailable as exc:
            log.warning("etcd history not compacted (%s); trying again", exc)
