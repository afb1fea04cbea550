"""The sample store as Prometheus metrics, with cAdvisor's names (``container_*``).

``TaskMetrics`` is a ``prometheus_client`` custom collector: at each scrape it turns every
task's latest sample into metric families, so nothing is kept twice and a forgotten task
disappears from the output with its ring. The agent registers it in its registry and serves
that at ``GET /metrics`` (``theseus.agent.http``). One series per container: a single
container's task has ``container=""``, a pod has one per member (so ``sum by (task)`` is the
pod's total) and its network counters on its first member only (its members share one
network namespace; counting them per member would multiply them). Only the tasks read at the
last pass are exported: a stopped task's series end. Labels: ``service``,
``group``, ``labels`` (the group's labels, comma-separated), ``task``, ``container``,
``node``. A figure that was not measured has no sample rather than a 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from theseus.agent.stats.samples import SampleStore, TaskMeta, TaskSample, Usage

LABELS = ["service", "group", "labels", "task", "container", "node"]


@dataclass(frozen=True)
class _Spec:
    name: str  # cAdvisor's (a counter's without ``_total``: prometheus_client adds it)
    field: str  # the ``Reading``'s
    help: str
    counter: bool = False


_SPECS = (
    _Spec("container_cpu_usage_seconds_total", "cpu_seconds", "Cumulative CPU time consumed", True),
    _Spec("container_cpu_user_seconds_total", "cpu_user_seconds", "Cumulative user CPU time", True),
    _Spec(
        "container_cpu_system_seconds_total",
        "cpu_system_seconds",
        "Cumulative system CPU time",
        True,
    ),
    _Spec(
        "container_cpu_cfs_periods_total", "cpu_periods", "Elapsed CFS enforcement periods", True
    ),
    _Spec(
        "container_cpu_cfs_throttled_periods_total",
        "cpu_throttled_periods",
        "Throttled CFS enforcement periods",
        True,
    ),
    _Spec(
        "container_cpu_cfs_throttled_seconds_total",
        "cpu_throttled_seconds",
        "Total time the container was throttled",
        True,
    ),
    _Spec(
        "container_memory_usage_bytes", "memory_usage_bytes", "Memory usage, page cache included"
    ),
    _Spec(
        "container_memory_working_set_bytes",
        "memory_working_set_bytes",
        "Memory usage minus inactive file pages",
    ),
    _Spec("container_memory_rss", "memory_rss_bytes", "Anonymous memory (RSS)"),
    _Spec("container_memory_cache", "memory_cache_bytes", "Page cache"),
    _Spec("container_memory_swap", "memory_swap_bytes", "Swap usage"),
    _Spec("container_oom_events_total", "oom_kills", "Processes killed for lack of memory", True),
    _Spec("container_processes", "processes", "Number of processes"),
    _Spec(
        "container_network_receive_bytes_total",
        "network_rx_bytes",
        "Cumulative bytes received",
        True,
    ),
    _Spec(
        "container_network_transmit_bytes_total", "network_tx_bytes", "Cumulative bytes sent", True
    ),
    _Spec(
        "container_network_receive_packets_total",
        "network_rx_packets",
        "Cumulative packets received",
        True,
    ),
    _Spec(
        "container_network_transmit_packets_total",
        "network_tx_packets",
        "Cumulative packets sent",
        True,
    ),
)


class TaskMetrics(Collector):
    """Every task's latest sample, at each scrape."""

    def __init__(self, store: SampleStore, node: str) -> None:
        self.store = store
        self.node = node

    def describe(self) -> list[Metric]:
        return []  # the families depend on the tasks of the moment: nothing to check early

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for spec in _SPECS:
            kind = CounterMetricFamily if spec.counter else GaugeMetricFamily
            families[spec.field] = kind(spec.name, spec.help, labels=LABELS)
        limit = GaugeMetricFamily(
            "container_spec_memory_limit_bytes", "Memory limit (0: none)", labels=LABELS
        )
        cores = GaugeMetricFamily(
            "theseus_task_cpu_cores",
            "CPU cores used over the last sampling interval",
            labels=LABELS,
        )
        seen = GaugeMetricFamily(
            "container_last_seen", "When the agent last read the container", labels=LABELS
        )
        current = self.store.current
        for meta, sample in self.store.latest():
            if current is not None and meta.task_id not in current:
                continue  # not running at the last pass: its series end, as cAdvisor's do
            for container, usage in _containers(sample):
                values = self._labels(meta, container)
                reading = usage.reading
                for spec in _SPECS:
                    value = getattr(reading, spec.field)
                    if value is not None:
                        families[spec.field].add_metric(values, float(value))
                limit.add_metric(values, float(reading.memory_limit_bytes or 0))
                if usage.cpu_cores is not None:
                    cores.add_metric(values, usage.cpu_cores)
                seen.add_metric(values, sample.time)
        yield from families.values()
        yield limit
        yield cores
        yield seen

    def _labels(self, meta: TaskMeta, container: str) -> list[str]:
        return [
            meta.service,
            meta.group,
            ",".join(meta.labels),
            meta.task_id,
            container,
            self.node,
        ]


def _containers(sample: TaskSample) -> list[tuple[str, Usage]]:
    if not sample.members:
        return [("", sample.usage)]
    return list(sample.members.items())


def task_registry(store: SampleStore, node: str) -> CollectorRegistry:
    """A registry of its own per agent (several agents may share a process: hollow agents,
    tests), holding the tasks' metrics; control-plane metrics may be registered beside."""
    registry = CollectorRegistry()
    registry.register(TaskMetrics(store, node))
    return registry
