"""``NodeBooks``: what is already committed on one node during a placement round (resources,
host ports, tasks per group). Built by ``theseus.scheduler.placement.Placer`` from the tasks
that hold resources, updated as it places, read by the filters and scorers.

The placer builds a node's books the first time it looks at the node, from a
``HoldingSource``: a placement looks at a dozen nodes, and building the books of every node
from every task cost a pass that placed one task 0.33-0.44 s at 50,000 tasks (BENCHMARKS.md,
issue 17, twenty-second session). ``ListedHoldings`` serves a list of holdings; the
reconciler serves its state's (``theseus.reconciler.holdings``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from theseus.model.nodes import NodeRecord
from theseus.model.spec import GroupSpec


@dataclass
class NodeBooks:
    node: NodeRecord
    cpus: float = 0.0
    mem: float = 0.0
    ports: set[int] = field(default_factory=set)
    groups: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    ports_in_range: int = 0  # how many of ``ports`` lie in the node's range

    def free_port_count(self) -> int:
        low, high = self.node.port_range
        return (high - low + 1) - self.ports_in_range

    def charge(self, group: str, spec: GroupSpec, host_ports: dict[str, int]) -> None:
        self.cpus += spec.cpus
        self.mem += spec.mem
        low, high = self.node.port_range
        for port in host_ports.values():
            if port not in self.ports:
                self.ports.add(port)
                self.ports_in_range += low <= port <= high
        self.groups[group] += 1
        self.tasks += 1


@dataclass(frozen=True)
class Holding:
    """Resources a task holds on a node (for building the books)."""

    node: str
    group: str
    spec: GroupSpec
    host_ports: dict[str, int]


class HoldingSource(ABC):
    """The holdings of a placement round, asked node by node and group by group."""

    @abstractmethod
    def on(self, node: str) -> Iterable[Holding]:
        """What the tasks on ``node`` hold."""

    @abstractmethod
    def nodes_of(self, group: str) -> Iterable[str]:
        """The node of each task of ``group`` that holds resources (a node once per task)."""


class ListedHoldings(HoldingSource):
    def __init__(self, holdings: Iterable[Holding]) -> None:
        self._by_node: dict[str, list[Holding]] = defaultdict(list)
        self._by_group: dict[str, list[str]] = defaultdict(list)
        for holding in holdings:
            self._by_node[holding.node].append(holding)
            self._by_group[holding.group].append(holding.node)

    def on(self, node: str) -> Iterable[Holding]:
        return self._by_node.get(node, ())

    def nodes_of(self, group: str) -> Iterable[str]:
        return self._by_group.get(group, ())
