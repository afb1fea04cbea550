"""``NodesHeard``: when this server's cache last saw a sign of life of each node, on its own
monotonic clock; kept by ``StateCache`` (``cache.heard``) and read by the leader, which
declares lost the nodes not heard for their TTL (``theseus.server.liveness``).

Signs of life: a node's ``alive`` key written (a registration, a TTL changed), and its name in
a server's heard record (``/theseus/heard/<server>``: the nodes whose heartbeats that server
answered since its previous record, a JSON list). Each counts at the moment the cache applies
it, never earlier than the heartbeat itself: a cache behind etcd only makes nodes look heard
later, so a slow watch never gets a node declared lost. Records the cache loads whole (its
first load, a reload after compaction) count at the load.

Also the revisions that guard the leader's deletion of a node's ``alive`` key: the key's own
(a node that registers again meanwhile keeps it), and every heard record's (a heartbeat a
server answered after the leader looked keeps it too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson


def heard_value(nodes: Iterable[str]) -> bytes:
    """A heard record: the names, sorted."""
    return orjson.dumps(sorted(nodes))


def heard_nodes(value: bytes) -> list[str]:
    """The node names of a heard record (``ValueError`` if it is not one)."""
    names = orjson.loads(value)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("a heard record is a JSON list of node names")
    return names


class NodesHeard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at: dict[str, float] = {}  # node -> when last heard (monotonic)
        self.alive_revisions: dict[str, int] = {}  # node -> its alive key's mod revision
        self.record_revisions: dict[str, int] = {}  # heard record's key -> its mod revision

    def record(self, key: str, value: bytes, revision: int) -> None:
        """A server's heard record (at ``key``) applied: every node it names was heard
        now."""
        now = self._clock()
        self.record_revisions[key] = revision
        for node in heard_nodes(value):
            self.at[node] = now

    def alive(self, node: str, revision: int) -> None:
        """``node``'s alive key written at ``revision``: heard now."""
        self.at[node] = self._clock()
        self.alive_revisions[node] = revision

    def gone(self, node: str) -> None:
        """``node``'s alive key deleted."""
        self.at.pop(node, None)
        self.alive_revisions.pop(node, None)
