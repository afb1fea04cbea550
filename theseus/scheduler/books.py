"""``NodeBooks``: what is already committed on one node during a placement round (resources,
host ports, tasks per group). Built by ``theseus.scheduler.placement.Placer`` from the tasks
that hold resources, updated as it places, read by the filters and scorers."""

from __future__ import annotations

from collections import Counter
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
