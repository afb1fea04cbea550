"""The server's Prometheus metrics: one ``ServerMetrics`` per server, its own registry.

``GET /metrics`` (``theseus.server.app``) renders ``ServerMetrics.registry`` in Prometheus's
text format. Each server app makes its own ``CollectorRegistry`` and hands it explicitly to
whoever counts (the leader, the request middleware, the metered store), rather than
registering on ``prometheus_client``'s global default: several servers run in one process in
the unit tests (``tests/unit/test_writer.py``) and in ``theseus.cluster``-less set-ups, and
the default registry would refuse the second server's metrics as duplicates (and mix their
counts). The process's own figures (CPU, memory, file descriptors, Python's GC) are added to
each registry.

What is counted where, kept cheap on the hot paths (a counter's ``inc`` is a lock and an add):

* the leader (``theseus.server.leader``): each pass's duration and its commit's, the tasks
  it placed, the terms it won; whether this server leads is read at scrape time;
* ``theseus.server.request_metrics``: every HTTP request by route template and status;
* ``theseus.server.metered_store``: every etcd request's latency by operation;
* the heartbeat route: heartbeats received;
* ``theseus.server.metrics_state``: tasks by state, pending tasks by reason, deployments by
  status, nodes by status, computed from the cache when scraped, never on a change.

docs/observability.md lists every metric with its labels.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from a millisecond (a heartbeat, a small pass) to the tens of seconds a long-poll
# or a 10,000-task pass may take.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ETCD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def process_registry() -> CollectorRegistry:
    """A registry of its own, with the process's figures (CPU, memory, fds, GC, Python).
    Counters and histograms go without their ``_created`` series (a process-wide switch of
    ``prometheus_client``): they would double the scrape for a timestamp nobody graphs."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format (``CONTENT_TYPE``)."""
    return generate_latest(registry)


class ServerMetrics:
    """The instruments of one server. ``is_leader`` is read at scrape time (set by the app
    once its leader exists)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else process_registry()
        r = self.registry
        self.reconcile_pass = Histogram(
            "theseus_reconcile_pass_duration_seconds",
            "One reconcile pass of the leader: the snapshot, the plan and its encoding "
            "(not the commit).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_commit = Histogram(
            "theseus_reconcile_commit_duration_seconds",
            "The commit of one pass's plan to etcd (passes that changed something).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.passes = Counter(
            "theseus_reconcile_passes",
            "Reconcile passes of the leader, by where they ran: a forked child process (those "
            "with many placements to make, or over very many tasks) or the leader's worker "
            "thread; and by scope: over all groups, or only those that changed since the last "
            "pass.",
            ["where", "scope"],
            registry=r,
        )
        self.placements = Counter(
            "theseus_placements",
            "Tasks placed on a node by this server's reconcile passes (committed).",
            registry=r,
        )
        self.elections = Counter(
            "theseus_leader_elections",
            "Terms this server won: times it became the leader.",
            registry=r,
        )
        self.leader = Gauge(
            "theseus_is_leader", "1 while this server is the leader, else 0.", registry=r
        )
        self.heartbeats = Counter(
            "theseus_heartbeats_received",
            "Agents' heartbeats received, by outcome (ok; unknown_node: the node is not "
            "registered or was declared lost, and registers again).",
            ["outcome"],
            registry=r,
        )
        self.requests = Counter(
            "theseus_api_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "theseus_api_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template (long-polls "
            "included: their time is mostly waiting).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.etcd_duration = Histogram(
            "theseus_etcd_request_duration_seconds",
            "Latency of the server's requests to etcd, by operation.",
            ["operation"],
            buckets=ETCD_BUCKETS,
            registry=r,
        )
        self.etcd_failures = Counter(
            "theseus_etcd_request_failures",
            "Requests to etcd that failed (etcd unavailable), by operation.",
            ["operation"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "theseus_event_loop_lag_seconds",
            "How late the server's event loop came round to a timer it sets every 100 ms: "
            "what every request, heartbeat and watch event waited on top of its own work.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.agent_turns_waiting = Gauge(
            "theseus_agent_turns_waiting",
            "Agents' assignment answers and report batches parked for their turn: they take "
            "turns behind the rest of the event loop's work (theseus.server.agent_turns).",
            registry=r,
        )
        self.task_reports = Counter(
            "theseus_task_reports_received",
            "Agents' reports of their tasks, by outcome (written: it changed the task's "
            "status; unchanged; unknown_task: this server's view has no such task, which is "
            "gone or not seen yet, and the report is dropped; other_node: an agent reported "
            "another node's task, and it is dropped).",
            ["outcome"],
            registry=r,
        )
        self.node_ttl_changes = Counter(
            "theseus_node_ttl_changes",
            "Nodes given a new TTL at a heartbeat, as the cluster's size called for "
            "(theseus.server.heartbeats); each is a write of the node's alive key.",
            registry=r,
        )
        self.nodes_lost = Counter(
            "theseus_nodes_declared_lost",
            "Nodes this server, leading, declared lost: no server heard them for their TTL "
            "(theseus.server.liveness). Their tasks are then replaced.",
            registry=r,
        )
        self.compactions = Counter(
            "theseus_etcd_compactions",
            "Compactions of etcd's history made by this server (the leader compacts every "
            "--etcd-compaction-interval: theseus.server.compaction).",
            registry=r,
        )
        self.compacted_revision = Gauge(
            "theseus_etcd_compacted_revision",
            "The revision before which this server last compacted etcd's history (0: never).",
            registry=r,
        )
        self.reports_written = self.task_reports.labels("written")
        self.reports_unchanged = self.task_reports.labels("unchanged")
        self.reports_of_unknown_tasks = self.task_reports.labels("unknown_task")
        self.reports_of_other_nodes = self.task_reports.labels("other_node")
        self.heartbeat_ok = self.heartbeats.labels("ok")
        self.heartbeat_unknown = self.heartbeats.labels("unknown_node")

    def lead_by(self, is_leader: Callable[[], bool]) -> None:
        """Read ``is_leader`` at each scrape."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)
