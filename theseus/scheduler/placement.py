"""Place tasks on nodes by cpus, memory and host ports; spread each group across nodes.

``Placer`` is built once per reconcile round from the nodes that are alive and the tasks that
already hold resources on them, then places tasks one by one, updating its books as it goes
so that one round never over-commits a node. It never does I/O; the leader commits the result.

Filters run in a fixed order and each rejection carries a reason, so a task that fits nowhere
says why (``0/3 nodes can run it: 3 insufficient cpus``), like kube-scheduler's messages.
Scoring prefers the node with the fewest tasks of the same group (spread), then the one with
the most free cpu share, then the name (for determinism).

On a large cluster a placement does not score every node: like kube-scheduler's
``percentageOfNodesToScore``, it stops after finding ``sample_size`` feasible nodes, scanning
from where the previous placement stopped, so consecutive tasks look at different nodes (which
also spreads them). A task is only unplaceable after every node has been examined.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec

EPSILON = 1e-9
# Feasible nodes scored per placement: at least this many, or this share of the cluster.
SAMPLE_MIN = 50
SAMPLE_SHARE = 0.05
# Random probes before falling back to a scan of the whole port range.
PORT_PROBES = 32


@dataclass
class NodeBooks:
    """What is already committed on one node."""

    node: NodeRecord
    cpus: float = 0.0
    mem: float = 0.0
    ports: set[int] = field(default_factory=set)
    groups: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    ports_in_range: int = 0  # how many of ``ports`` lie in the node's range

    @property
    def free_cpus(self) -> float:
        return self.node.cpus - self.cpus

    @property
    def free_mem(self) -> float:
        return self.node.mem - self.mem

    def free_port_count(self) -> int:
        low, high = self.node.port_range
        return (high - low + 1) - self.ports_in_range


@dataclass(frozen=True)
class Placement:
    node: str
    host_ports: dict[str, int]


@dataclass(frozen=True)
class Unplaceable:
    reason: str


@dataclass(frozen=True)
class Holding:
    """Resources a task holds on a node (for building the books)."""

    node: str
    group: str
    spec: GroupSpec
    host_ports: dict[str, int]


class Placer:
    def __init__(self, nodes: Iterable[NodeRecord], holdings: Iterable[Holding]) -> None:
        self.books: dict[str, NodeBooks] = {node.name: NodeBooks(node) for node in nodes}
        self._ring = sorted(self.books.values(), key=lambda b: b.node.name)
        self._cursor = 0  # where the next placement starts scanning
        self.sample_size = max(SAMPLE_MIN, int(len(self._ring) * SAMPLE_SHARE))
        for holding in holdings:
            books = self.books.get(holding.node)
            if books is not None:
                self._charge(books, holding.group, holding.spec, holding.host_ports)

    def place(
        self, task_id: str, group: str, spec: GroupSpec, only: str | None = None
    ) -> Placement | Unplaceable:
        """Choose a node (``only``: that node or none, for sticky restarts) and host ports."""
        if only is not None:
            return self._place_on(task_id, group, spec, only)
        if not self._ring:
            return Unplaceable("no ready nodes")
        rejections: Counter[str] = Counter()
        candidates: list[NodeBooks] = []
        count = len(self._ring)
        examined = 0
        while examined < count and len(candidates) < self.sample_size:
            books = self._ring[(self._cursor + examined) % count]
            examined += 1
            reason = _reject(books, spec)
            if reason is None:
                candidates.append(books)
            else:
                rejections[reason] += 1
        self._cursor = (self._cursor + examined) % count
        if not candidates:
            summary = ", ".join(f"{count} {reason}" for reason, count in sorted(rejections.items()))
            return Unplaceable(f"0/{len(self.books)} nodes can run it: {summary}")
        best = min(candidates, key=lambda b: _score(b, group))
        return self._commit(best, task_id, group, spec)

    def _place_on(
        self, task_id: str, group: str, spec: GroupSpec, node: str
    ) -> Placement | Unplaceable:
        books = self.books.get(node)
        if books is None:
            return Unplaceable(f"waiting for node {node} (sticky): not ready")
        reason = _reject(books, spec)
        if reason is not None:
            return Unplaceable(f"waiting for node {node} (sticky): {reason}")
        return self._commit(books, task_id, group, spec)

    def _commit(self, books: NodeBooks, task_id: str, group: str, spec: GroupSpec) -> Placement:
        host_ports = _choose_ports(books, task_id, list(spec.ports))
        self._charge(books, group, spec, host_ports)
        return Placement(books.node.name, host_ports)

    @staticmethod
    def _charge(books: NodeBooks, group: str, spec: GroupSpec, host_ports: dict[str, int]) -> None:
        books.cpus += spec.cpus
        books.mem += spec.mem
        low, high = books.node.port_range
        for port in host_ports.values():
            if port not in books.ports:
                books.ports.add(port)
                books.ports_in_range += low <= port <= high
        books.groups[group] += 1
        books.tasks += 1


def _reject(books: NodeBooks, spec: GroupSpec) -> str | None:
    if spec.cpus > books.free_cpus + EPSILON:
        return f"insufficient cpus (needs {spec.cpus:g})"
    if spec.mem > books.free_mem + EPSILON:
        return f"insufficient memory (needs {spec.mem:g} MB)"
    if len(spec.ports) > books.free_port_count():
        return f"insufficient host ports (needs {len(spec.ports)})"
    return None


def _score(books: NodeBooks, group: str) -> tuple[int, float, str]:
    cpu_share_used = books.cpus / books.node.cpus if books.node.cpus else 1.0
    return (books.groups[group], cpu_share_used, books.node.name)


def _choose_ports(books: NodeBooks, task_id: str, names: list[str]) -> dict[str, int]:
    """Free host ports from the node's range, drawn pseudo-randomly (seeded by the task id, so
    the choice is reproducible) so that a port someone else holds on the host is unlikely to
    be retried by the replacement task."""
    low, high = books.node.port_range
    rng = random.Random(task_id)
    taken = set(books.ports)
    chosen: dict[str, int] = {}
    for name in names:
        port = None
        for _ in range(PORT_PROBES):
            probe = rng.randint(low, high)
            if probe not in taken:
                port = probe
                break
        if port is None:
            port = next(p for p in range(low, high + 1) if p not in taken)
        taken.add(port)
        chosen[name] = port
    return chosen
