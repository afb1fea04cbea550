"""The kind of a pending task's reason: a small fixed vocabulary for metrics (pure).

A pending reason is a sentence for people (``0/4 nodes can run it: 3 nodes: UNIQUE hostname;
1 node: insufficient memory (needs 512 MB)``), with counts, node names and sizes in it: as a
Prometheus label it would make a series per sentence. ``reason_kind`` maps it to one of
``KINDS``, by the scheduler's filters (``theseus.scheduler.filters``: the most frequent
rejection, the first in the sentence) and the reconciler's own waits (restart backoff,
dependencies). ``theseus.server.metrics_state`` counts pending tasks by kind at scrape time.
"""

from __future__ import annotations

from theseus.model.constraints import Operator

UNPLACED = "unplaced"  # not looked at by a pass yet (no reason written)
KINDS = (
    UNPLACED,
    "no_ready_nodes",
    "cpus",
    "memory",
    "host_ports",
    "pod_driver",
    "host_gates",
    "constraint",
    "sticky_node",
    "backoff",
    "dependency",
    "other",
)

_FILTERS = (
    ("insufficient cpus", "cpus"),
    ("insufficient memory", "memory"),
    ("insufficient host ports", "host_ports"),
    ("pods need", "pod_driver"),
)
_GATES = ("host volume", "no host volume", "privileged", "cap_add", "is not allowed")
_OPERATORS = frozenset(op.value for op in Operator)  # a constraint's reason starts with one


def reason_kind(reason: str | None) -> str:
    """One of ``KINDS`` for a pending task's ``pending_reason``."""
    if not reason:
        return UNPLACED
    if reason.startswith("restart backoff"):
        return "backoff"
    if reason.startswith("waiting for dependency"):
        return "dependency"
    if reason.startswith("waiting for node"):
        return "sticky_node"
    if reason == "no ready nodes":
        return "no_ready_nodes"
    _, sep, rest = reason.partition(" nodes can run it: ")
    if sep:
        # "3 nodes: UNIQUE hostname; 1 node: ...": the first is the most frequent.
        first = rest.split("; ", 1)[0]
        reason = first.split(": ", 1)[1] if ": " in first else first
    return _filter_kind(reason)


def _filter_kind(reason: str) -> str:
    for prefix, kind in _FILTERS:
        if reason.startswith(prefix):
            return kind
    if reason.split(" ", 1)[0] in _OPERATORS:
        return "constraint"
    if any(marker in reason for marker in _GATES):
        return "host_gates"
    return "other"
