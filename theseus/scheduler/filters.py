"""Filters: each says whether one node can take one task, and if not, why (pure).

A filter is a callable ``(NodeBooks) -> reason | None``. ``filters_for`` builds the chain for
one task in a fixed order (the resources: cpus, memory, host ports; a pod's driver; what the
task asks of the host: volumes and privileges; then each constraint), and the placer keeps,
per rejected node, the first reason, so that an unplaceable task can say how many nodes each
reason ruled out (kube-scheduler's "0/5 nodes are available: ...").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from theseus.model.constraints import Constraint
from theseus.model.spec import GroupSpec
from theseus.model.spec_gates import Needs, needs_of, unmet
from theseus.scheduler.books import NodeBooks
from theseus.scheduler.constraints import accepts, field_value

EPSILON = 1e-9

Filter = Callable[[NodeBooks], str | None]


def resources(cpus: float, mem: float, ports: int) -> Filter:
    """Cpus, then memory, then host ports: one filter rather than three, since every node a
    placement samples meets it (three calls were a fifth of placing a task)."""

    def check(books: NodeBooks) -> str | None:
        node = books.node
        if cpus > node.cpus - books.cpus + EPSILON:
            return f"insufficient cpus (needs {cpus:g})"
        if mem > node.mem - books.mem + EPSILON:
            return f"insufficient memory (needs {mem:g} MB)"
        if ports and ports > books.free_port_count():
            return f"insufficient host ports (needs {ports})"
        return None

    return check


# Drivers that run pods: docker, and sim (hollow nodes); a process cannot share a network
# namespace with another (``theseus.agent.drivers.process`` refuses pods).
POD_DRIVERS = ("docker", "sim")


def pod_driver(books: NodeBooks) -> str | None:
    if books.node.driver not in POD_DRIVERS:
        return "pods need the docker driver"
    return None


def host_gates(needs: Needs) -> Filter:
    """The node's agent allows what the task asks of its host: the host volumes it mounts
    (declared, and writable where it writes), privileged mode, host namespaces, capabilities
    (``theseus.model.spec_gates``). Host paths are the server's and the agent's to refuse."""

    def check(books: NodeBooks) -> str | None:
        return unmet(needs, books.node.gates)

    return check


def constraint(
    rule: Constraint, placed: Counter[str | None], instances: int, expected_groups: int
) -> Filter:
    reason = rule.describe()

    def check(books: NodeBooks) -> str | None:
        value = field_value(books.node, rule.field)
        return None if accepts(rule, value, placed, instances, expected_groups) else reason

    return check


class ConstraintContext(Protocol):
    """What the constraint filters of one task need to know about the round (the placer
    answers): how many of its group's tasks each field value holds, and how many distinct
    values there are to spread it over (GROUP_BY without a count)."""

    def placed(self, group: str, field: str) -> Counter[str | None]: ...

    def distinct_values(self, group: str, field: str) -> int: ...


def filters_for(
    group: str, spec: GroupSpec, instances: int, context: ConstraintContext
) -> list[Filter]:
    chain = [resources(spec.cpus, spec.mem, len(spec.ports))]
    if spec.containers is not None:
        chain.append(pod_driver)
    needs = needs_of(spec)
    if needs.any:
        chain.append(host_gates(needs))
    for rule in spec.constraints:
        placed = context.placed(group, rule.field)
        groups = context.distinct_values(group, rule.field)
        chain.append(constraint(rule, placed, instances, groups))
    return chain


def first_rejection(chain: list[Filter], books: NodeBooks) -> str | None:
    for check in chain:
        reason = check(books)
        if reason is not None:
            return reason
    return None
