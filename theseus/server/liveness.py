"""Node liveness without a lease per node: each server notes the nodes it hears, and the
leader declares lost the nodes that no server heard for their TTL.

A node is alive while ``/theseus/alive/<node>`` exists (written when its agent registers).
Until issue 17's twenty-fourth session that key hung on an etcd lease of the node's own and
every heartbeat kept the lease alive: at 5,000 nodes, 100 keep-alives a second on gRPC
streams, about a tenth of the server's CPU during a deploy (the largest self time of its
profile was gRPC's stream write) and most of an idle cluster's. Now, as Nomad's servers keep
their nodes' heartbeat timers in memory, a heartbeat writes nothing of its own:

* a server answers a heartbeat once its node is named in ``/theseus/heard/<server>`` in
  etcd (``HeardReporter``): the nodes heard within ``SPACING`` seconds share one small put, a
  group commit, whatever the cluster's size. Every server's cache marks the nodes of each such
  put heard as it applies it (``theseus.store.heard``). A 200 still means what it meant with
  leases: the servers count the node alive from then on (``docs/partitions.md``); a server
  that cannot write the record answers 503, and its agents move to another server or,
  reaching none, fence themselves (``theseus.agent.fencing``);
* the leader deletes the ``alive`` key of each node not heard for its TTL (``lost_nodes``,
  pure; ``theseus.server.leader``'s sweep), fenced by its term and guarded by the key's
  revision, so that a node that registers again meanwhile keeps its key. The reconciler then
  sees the node gone, as it saw an expired lease before, and its agent's next heartbeat is
  answered 404: it registers again.

A stall is never blamed on the nodes: no node counts as unheard before the leader's election
or the end of its last stall, and none is lost within the grace after either
(``theseus.server.stall``). A cache behind etcd only makes nodes look heard later, and the
leader does not sweep while its cache cannot show it follows etcd.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping

from theseus.store import keys
from theseus.store.base import Put, Store, StoreUnavailable
from theseus.store.heard import heard_value

# Seconds from the start of one of a server's heard records to the next, at least: the
# heartbeats answered meanwhile wait for the next, and share it.
SPACING = 0.2


def lost_nodes(
    alive: Iterable[str],
    heard: Mapping[str, float],
    ttl_of: Callable[[str], int],
    now: float,
    heard_floor: float,
    grace: float,
) -> list[str]:
    """The nodes of ``alive`` not heard for their TTL (pure; times on one monotonic clock).

    ``heard_floor``: the leader's election or the end of its last stall, whichever came last;
    no node counts as unheard before it (its heartbeats may have gone unanswered), and none is
    lost within ``grace`` of it."""
    if now - heard_floor < grace:
        return []
    return [
        node
        for node in alive
        if now - max(heard.get(node, heard_floor), heard_floor) > ttl_of(node)
    ]


class HeardReporter:
    """This server's heard records: a heartbeat waits (``heard``) until a record that names
    its node is in etcd, written for all the heartbeats of up to ``SPACING`` seconds at once
    (a group commit), so that a heartbeat's 200 means the servers count the node alive, as
    a lease refreshed did."""

    def __init__(
        self, store: Store, server: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._key = keys.heard_key(server)
        self._clock = clock
        self._next: set[str] = set()  # the nodes of the next record
        self._next_written: asyncio.Future[None] | None = None  # ...and its outcome
        self._writer: asyncio.Task[None] | None = None
        self._started_at = -math.inf  # when the last record's write began (monotonic)

    async def heard(self, node: str) -> None:
        """Once etcd has a record that names ``node``; ``StoreUnavailable`` if the record
        could not be written (this server cannot vouch for its nodes)."""
        self._next.add(node)
        if self._next_written is None:
            self._next_written = asyncio.get_running_loop().create_future()
        written = self._next_written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_records(), name="heard-records")
        # Shielded: a heartbeat whose agent hung up must not cancel the others' record.
        await asyncio.shield(written)

    async def close(self) -> None:
        """The server stops: the record being written is abandoned (its heartbeats get a
        503, as from a server that went away)."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        waiting, self._next_written = self._next_written, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(StoreUnavailable("this server is stopping"))
            waiting.exception()

    async def _write_records(self) -> None:
        while self._next_written is not None:
            await asyncio.sleep(max(0.0, self._started_at + SPACING - self._clock()))
            nodes, written = self._next, self._next_written
            self._next, self._next_written = set(), None
            self._started_at = self._clock()
            try:
                # Prompt (through etcd's HTTP gateway, ``Store.commit``): every heartbeat of
                # the last 0.2 s waits on it, and a busy loop goes round half as often for it.
                await self._store.commit([Put(self._key, heard_value(nodes))], prompt=True)
            except StoreUnavailable as exc:
                written.set_exception(exc)
                written.exception()  # retrieved: its waiters may all have gone
            except BaseException as exc:  # cancelled with the server: no waiter hangs
                written.set_exception(StoreUnavailable(f"heard record not written: {exc!r}"))
                written.exception()
                raise
            else:
                written.set_result(None)
