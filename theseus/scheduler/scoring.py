"""Scorers: rank the feasible nodes for a task; the lowest key wins (pure).

* ``spread`` (default): the fewest tasks of the same group, then the lowest cpu share in use,
  so a group's tasks land on different nodes and load evens out;
* ``binpack``: the highest cpu and memory share in use, so tasks fill nodes one by one and
  whole nodes stay free (Nomad's default, for big tasks and for scaling machines in).

Both end with the node's name, so that placement is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from theseus.scheduler.books import NodeBooks


def _cpu_share(books: NodeBooks) -> float:
    return books.cpus / books.node.cpus if books.node.cpus else 1.0


def _mem_share(books: NodeBooks) -> float:
    return books.mem / books.node.mem if books.node.mem else 1.0


def spread(books: NodeBooks, group: str) -> tuple[float, float, str]:
    return (books.groups[group], _cpu_share(books), books.node.name)


def binpack(books: NodeBooks, group: str) -> tuple[float, float, str]:
    return (-(_cpu_share(books) + _mem_share(books)), -books.groups[group], books.node.name)


Scorer = Callable[[NodeBooks, str], tuple[float, float, str]]

STRATEGIES: dict[str, Scorer] = {
    "spread": spread,
    "binpack": binpack,
}
