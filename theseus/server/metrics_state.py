"""Gauges of the cluster's state, computed when Prometheus scrapes, from the server's cache.

Tasks by state, pending tasks by reason, deployments by status, nodes by status and groups
are facts of the cluster, which every server's cache (``theseus.store.cache``) holds: they are
counted here in one sweep over a snapshot of the cache's state at each scrape (the counts are
of one revision; the sweep took 0.4-1 s at 50,000 tasks, so ``/metrics`` is rendered in a
worker thread, ``theseus.server.app``), rather than kept up to date on every change, which
would put work on the reconcile pass and on every commit the cache applies. Every value of
each label is always exported (0 when none), so a series does not vanish when its count
drops to nothing.

``state_figures`` is pure (unit-tested on made-up states); ``ClusterStateCollector`` is the
``prometheus_client`` collector that ``theseus.server.app`` registers with the server's
registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from theseus.model.deployments import DeploymentStatus
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.pending import KINDS, reason_kind

NODE_STATUSES = ("ready", "draining", "ineligible", "down")
DEPLOYMENT_STATUSES: tuple[str, ...] = get_args(DeploymentStatus)


@dataclass
class StateFigures:
    revision: int = 0
    tasks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (state, desired)
    pending: Counter[str] = field(default_factory=Counter)  # reason kind
    deployments: Counter[str] = field(default_factory=Counter)  # status
    nodes: Counter[str] = field(default_factory=Counter)  # status
    groups: int = 0


def node_status(state: ClusterState, node: str) -> str:
    if node not in state.alive:
        return "down"
    if state.draining(node):
        return "draining"
    return "ready" if state.schedulable(node) else "ineligible"


def state_figures(state: ClusterState) -> StateFigures:
    """The counts of one state (one pass over its tasks, nodes and deployments)."""
    figures = StateFigures(revision=state.revision, groups=len(state.groups))
    for task in state.tasks.values():
        observed = state.task_state(task)
        figures.tasks[(observed.value, task.desired.value)] += 1
        if observed is TaskState.PENDING and task.desired is Desired.RUN:
            figures.pending[reason_kind(task.pending_reason)] += 1
    for deployment in state.deployments.values():
        figures.deployments[deployment.status] += 1
    for node in state.nodes:
        figures.nodes[node_status(state, node)] += 1
    return figures


class ClusterStateCollector(Collector):
    """Reads ``state()`` at each scrape: the snapshot of the cache that ``/metrics`` took for
    it (``theseus.server.app``), or None (nothing counted)."""

    def __init__(self, state: Callable[[], ClusterState | None]) -> None:
        self._state = state

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families(StateFigures()))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._state()
        if state is None:  # the server is starting: no cache yet
            return iter(())
        return iter(self._families(state_figures(state)))

    @staticmethod
    def _families(figures: StateFigures) -> list[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "theseus_tasks",
            "Tasks by observed state and desired state (run, or stop: being stopped, or "
            "kept as history).",
            labels=["state", "desired"],
        )
        for task_state in TaskState:
            for desired in Desired:
                count = figures.tasks.get((task_state.value, desired.value), 0)
                tasks.add_metric([task_state.value, desired.value], count)
        pending = GaugeMetricFamily(
            "theseus_pending_tasks",
            "Tasks meant to run that have no node, by the kind of their pending reason.",
            labels=["reason"],
        )
        for kind in KINDS:
            pending.add_metric([kind], figures.pending.get(kind, 0))
        deployments = GaugeMetricFamily(
            "theseus_deployments",
            "Deployments kept in etcd (the running ones and the recent finished ones), by status.",
            labels=["status"],
        )
        for status in DEPLOYMENT_STATUSES:
            deployments.add_metric([status], figures.deployments.get(status, 0))
        nodes = GaugeMetricFamily(
            "theseus_nodes",
            "Registered nodes, by status (down: registered, its lease expired).",
            labels=["status"],
        )
        for status in NODE_STATUSES:
            nodes.add_metric([status], figures.nodes.get(status, 0))
        groups = GaugeMetricFamily("theseus_groups", "Groups deployed.", value=figures.groups)
        revision = GaugeMetricFamily(
            "theseus_state_revision",
            "The etcd revision this server's cache has applied.",
            value=figures.revision,
        )
        return [tasks, pending, deployments, nodes, groups, revision]
