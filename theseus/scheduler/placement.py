"""Place tasks on nodes: a pipeline of filters (``theseus.scheduler.filters``: cpus, memory,
host ports, the group's constraints) and a scorer (``theseus.scheduler.scoring``: spread or
binpack), over the books of what each node already holds (``theseus.scheduler.books``).

``Placer`` is built once per reconcile round from the schedulable nodes and the tasks that
hold resources on them (each node's books built when the round first looks at the node),
then places tasks one by one, updating its books as it goes so that one round never
over-commits a node. Nodes that take no new tasks but keep theirs (ineligible
ones) are given too: their tasks count for their groups' constraints. It never does I/O; the
leader commits the result.

A task that fits nowhere says, per reason, how many nodes it ruled out (each rejected node
counts once, for the first filter it failed): ``0/4 nodes can run it: 3 nodes: UNIQUE
hostname; 1 node: insufficient memory (needs 512 MB)``, like kube-scheduler's messages.

On a large cluster a placement does not score every node: it stops after finding
``SAMPLE_SIZE`` feasible nodes, scanning from where the previous placement stopped, so
consecutive tasks look at different nodes (which also spreads them). A task is only
unplaceable after every node has been examined. The sample is a constant, as Nomad's is (it
scores 2 nodes for a service, or log2 of the cluster with spreads), not a share of the cluster
as kube-scheduler's ``percentageOfNodesToScore``: with a share, a placement costs more as the
cluster grows, and a deploy of T tasks on N nodes costs T x N (10,000 tasks on 1,000 nodes
took 0.9 s to place, 20,000 on 2,000 nodes 3.3 s, 40,000 on 4,000 nodes 12.3 s). It was 50,
and filtering and scoring 50 nodes was four fifths of a placement: at 5,000 nodes the pass
that placed a 50,000-task deploy's last 44,000 tasks took 17 s beside the busy server (it
runs in a child, ``theseus.server.pass_process``, on the same two cores), and no task of
the deploy could start before it ended. Ten keeps a choice among nodes for spread and
binpack (Nomad keeps two) for a fifth of the work.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec
from theseus.scheduler.books import Holding, HoldingSource, ListedHoldings, NodeBooks
from theseus.scheduler.constraints import field_value
from theseus.scheduler.filters import filters_for, first_rejection
from theseus.scheduler.scoring import STRATEGIES

__all__ = ["Holding", "HoldingSource", "Placement", "Placer", "Unplaceable"]

# Feasible nodes scored per placement, whatever the cluster's size (see above).
SAMPLE_SIZE = 10
# Random probes before falling back to a scan of the whole port range.
PORT_PROBES = 32


@dataclass(frozen=True)
class Placement:
    node: str
    host_ports: dict[str, int]


@dataclass(frozen=True)
class Unplaceable:
    reason: str


class Placer:
    def __init__(
        self,
        nodes: Iterable[NodeRecord],
        holdings: Iterable[Holding] | HoldingSource,
        closed: Iterable[NodeRecord] = (),
    ) -> None:
        """``nodes`` take new tasks; ``closed`` ones take none, but the tasks they hold stay
        there, so they count for their groups' constraints (UNIQUE, MAX_PER, CLUSTER,
        GROUP_BY). ``holdings``: what the tasks already placed hold, listed or asked for
        node by node (``theseus.scheduler.books``); holdings on other nodes count for
        nothing."""
        self._source = holdings if isinstance(holdings, HoldingSource) else ListedHoldings(holdings)
        self._ready: dict[str, NodeRecord] = {node.name: node for node in nodes}
        self._closed = {n.name: n for n in closed if n.name not in self._ready}
        self._books: dict[str, NodeBooks] = {}  # each node's, built when first looked at
        self._ring = sorted(self._ready)
        self._ring_books: list[NodeBooks | None] = [None] * len(self._ring)  # as built
        self._cursor = 0  # where the next placement starts scanning
        self.placements = 0  # tasks placed so far in this round
        # Per group, the tasks this round placed on each node.
        self._round: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # Per (group, field): the group's tasks per field value; built when a constraint
        # first asks, then kept current as tasks are placed.
        self._placed: dict[tuple[str, str], Counter[str | None]] = {}

    def books(self, node: str) -> NodeBooks:
        """``node``'s books (a ready or closed node's), built on first use."""
        books = self._books.get(node)
        if books is None:
            books = self._books[node] = NodeBooks(self._ready.get(node) or self._closed[node])
            for holding in self._source.on(node):
                books.charge(holding.group, holding.spec, holding.host_ports)
        return books

    def place(
        self,
        task_id: str,
        group: str,
        spec: GroupSpec,
        only: str | None = None,
        instances: int | None = None,
    ) -> Placement | Unplaceable:
        """Choose a node (``only``: that node or none, for sticky restarts) and host ports.
        ``instances`` (default ``spec.instances``) is the group's size, for GROUP_BY."""
        chain = filters_for(group, spec, spec.instances if instances is None else instances, self)
        if only is not None:
            if only not in self._ready:
                return Unplaceable(f"waiting for node {only} (sticky): not ready")
            books = self.books(only)
            reason = first_rejection(chain, books)
            if reason is not None:
                return Unplaceable(f"waiting for node {only} (sticky): {reason}")
            return self._commit(books, task_id, group, spec)
        if not self._ring:
            return Unplaceable("no ready nodes")
        rejections: Counter[str] = Counter()
        candidates: list[NodeBooks] = []
        count = len(self._ring)
        examined = 0
        ring, ring_books = self._ring, self._ring_books
        while examined < count and len(candidates) < SAMPLE_SIZE:
            at = (self._cursor + examined) % count
            seen = ring_books[at]
            if seen is None:  # no call for a node looked at before: 500,000 a big deploy
                seen = ring_books[at] = self.books(ring[at])
            examined += 1
            reason = first_rejection(chain, seen)
            if reason is None:
                candidates.append(seen)
            else:
                rejections[reason] += 1
        self._cursor = (self._cursor + examined) % count
        if not candidates:
            return Unplaceable(f"0/{count} nodes can run it: {_summary(rejections)}")
        score = STRATEGIES[spec.placement_strategy]
        best = min(candidates, key=lambda b: score(b, group))
        return self._commit(best, task_id, group, spec)

    def _commit(self, books: NodeBooks, task_id: str, group: str, spec: GroupSpec) -> Placement:
        host_ports = _choose_ports(books, task_id, list(spec.ports))
        books.charge(group, spec, host_ports)
        self.placements += 1
        self._round[group][books.node.name] += 1
        for (placed_group, field), counts in self._placed.items():
            if placed_group == group:
                counts[field_value(books.node, field)] += 1
        return Placement(books.node.name, host_ports)

    def placed(self, group: str, field: str) -> Counter[str | None]:
        """The group's tasks per value of ``field`` (``filters.ConstraintContext``)."""
        counts = self._placed.get((group, field))
        if counts is None:
            counts = Counter()
            held = Counter(self._source.nodes_of(group))
            held.update(self._round.get(group, {}))
            for name, tasks in held.items():
                node = self._ready.get(name) or self._closed.get(name)
                if node is not None:
                    counts[field_value(node, field)] += tasks
            self._placed[(group, field)] = counts
        return counts

    def distinct_values(self, group: str, field: str) -> int:
        """GROUP_BY's number of groups without a count: the values the ready nodes offer,
        and those the group's tasks hold (some may be on closed nodes)."""
        values = {field_value(node, field) for node in self._ready.values()}
        held = {value for value, n in self.placed(group, field).items() if n > 0}
        return len((values | held) - {None})


def _summary(rejections: Counter[str]) -> str:
    """``3 nodes: UNIQUE hostname; 1 node: insufficient memory``, most frequent first."""
    ordered = sorted(rejections.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{n} node{'s' if n != 1 else ''}: {reason}" for reason, n in ordered)


def _choose_ports(books: NodeBooks, task_id: str, names: list[str]) -> dict[str, int]:
    """Free host ports from the node's range, drawn pseudo-randomly (from the task id, so the
    choice is reproducible) so that a port someone else holds on the host is unlikely to be
    retried by the replacement task."""
    if not names:
        return {}
    low, high = books.node.port_range
    span = high - low + 1
    held = books.ports
    chosen: dict[str, int] = {}
    taken: set[int] = set()  # by this task's earlier ports (the node's are in ``held``)
    probes = _port_probes(task_id)
    for name in names:
        port = None
        for _ in range(PORT_PROBES):
            probe = low + next(probes) % span
            if probe not in held and probe not in taken:
                port = probe
                break
        if port is None:
            port = next(p for p in range(low, high + 1) if p not in held and p not in taken)
        taken.add(port)
        chosen[name] = port
    return chosen


def _port_probes(task_id: str) -> Iterator[int]:
    """An endless pseudo-random sequence drawn from ``task_id``: CRC-32 chained over a
    counter. Seeding a ``random.Random`` per placement cost 6 µs, a tenth of placing a task
    (0.3 s of a 50,000-task deploy's pass); this costs 0.2 µs a probe, and the first probe
    almost always finds a free port."""
    state = zlib.crc32(task_id.encode())
    counter = 0
    while True:
        counter += 1
        state = zlib.crc32(counter.to_bytes(4, "little"), state)
        yield state
