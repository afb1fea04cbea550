"""What the agent knows of its tasks' use of the machine: readings, samples, their rings.

Pure data and arithmetic, no I/O. ``Reading`` is one container's figures at one time
(cumulative counters and gauges, ``None`` for what was not measured); the collector
(``theseus.agent.stats.collector``) turns two successive readings into a ``Usage`` (adds the
CPU rate) and records a ``TaskSample`` per task and pass in the ``SampleStore``: a bounded
ring per task (``Ring``; about an hour), held in memory only and never sent to etcd. The
agent's HTTP routes and its Prometheus collector read the store; ``sample_json`` is the
wire form (``theseus.api.schemas.TaskStatsSample``).
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Reading:
    """One container's (or process tree's) figures at one time; ``None``: not measured.

    The wire's ``theseus.api.schemas.ContainerUsage`` has the same fields (and the CPU rate,
    ``cpu_cores``), repeated rather than shared: this stays a slotted dataclass that the
    collector builds for every container at every pass without validation, and the wire
    model keeps its field order. A unit test keeps the two in step."""

    cpu_seconds: float | None = None  # cumulative CPU time, all CPUs
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    cpu_periods: int | None = None  # CFS enforcement periods (with a CPU limit)
    cpu_throttled_periods: int | None = None
    cpu_throttled_seconds: float | None = None
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_cache_bytes: int | None = None
    memory_swap_bytes: int | None = None
    memory_limit_bytes: int | None = None  # None: no limit
    oom_kills: int | None = None
    processes: int | None = None
    network_rx_bytes: int | None = None
    network_tx_bytes: int | None = None
    network_rx_packets: int | None = None
    network_tx_packets: int | None = None


READING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Reading))
_INTEGRAL = tuple(f.type == "int | None" for f in dataclasses.fields(Reading))
_NETWORK = tuple(name for name in READING_FIELDS if name.startswith("network_"))
_SUMMED = tuple(name for name in READING_FIELDS if name not in _NETWORK)


@dataclass(frozen=True, slots=True)
class Usage:
    """A reading and the CPU rate since the one before (``None`` for the first)."""

    cpu_cores: float | None
    reading: Reading


@dataclass(frozen=True, slots=True)
class TaskSample:
    """One task at one time: its total and, for a pod, each member's (``members`` is empty
    for a single container)."""

    time: float  # wall clock
    usage: Usage
    members: Mapping[str, Usage] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskMeta:
    """Who a task is, for the labels of its metrics."""

    task_id: str
    service: str
    group: str
    labels: tuple[str, ...] = ()


def cpu_cores(
    previous: Reading | None, previous_at: float | None, current: Reading, now: float
) -> float | None:
    """CPU cores used between two readings (monotonic times); ``None`` without a previous
    reading, or when the counter went back (the container was replaced)."""
    if previous is None or previous_at is None or now <= previous_at:
        return None
    before, after = previous.cpu_seconds, current.cpu_seconds
    if before is None or after is None or after < before:
        return None
    return (after - before) / (now - previous_at)


def total(usages: Iterable[Usage]) -> Usage:
    """A pod's total: figures summed over its members (``None`` only when no member
    measured it; a limit only when every member has one); network counters taken once,
    since the members share one network namespace."""
    usages = list(usages)
    if len(usages) == 1:
        return usages[0]
    values: dict[str, Any] = {}
    for name in _SUMMED:
        measured = [getattr(u.reading, name) for u in usages]
        known = [v for v in measured if v is not None]
        if name == "memory_limit_bytes" and len(known) < len(measured):
            values[name] = None
        else:
            values[name] = sum(known) if known else None
    for name in _NETWORK:
        values[name] = next(
            (getattr(u.reading, name) for u in usages if getattr(u.reading, name) is not None),
            None,
        )
    cores = [u.cpu_cores for u in usages if u.cpu_cores is not None]
    return Usage(sum(cores) if cores else None, Reading(**values))


# A stored sample: its time and one array of doubles per container (``_pack``): an hour of
# samples of 100 tasks takes about a third of the memory that the objects would (NaN stands for
# "not measured"; every counter is exact as a double up to 2^53).
_Packed = tuple[float, "array[float]", tuple[tuple[str, "array[float]"], ...]]


def _pack_usage(usage: Usage) -> array[float]:
    reading = usage.reading
    values = [usage.cpu_cores, *(getattr(reading, name) for name in READING_FIELDS)]
    return array("d", (math.nan if v is None else v for v in values))


def _unpack_usage(values: array[float]) -> Usage:
    fields: dict[str, Any] = {}
    for name, value, integral in zip(READING_FIELDS, values[1:], _INTEGRAL, strict=True):
        fields[name] = None if math.isnan(value) else (int(value) if integral else value)
    cores = values[0]
    return Usage(None if math.isnan(cores) else cores, Reading(**fields))


def _pack(sample: TaskSample) -> _Packed:
    members = tuple((name, _pack_usage(u)) for name, u in sample.members.items())
    return (sample.time, _pack_usage(sample.usage), members)


def _unpack(packed: _Packed) -> TaskSample:
    at, usage, members = packed
    return TaskSample(at, _unpack_usage(usage), {n: _unpack_usage(u) for n, u in members})


class Ring:
    """The last ``capacity`` samples of one task, oldest first (stored packed)."""

    def __init__(self, capacity: int) -> None:
        self._samples: deque[_Packed] = deque(maxlen=max(1, capacity))

    def append(self, sample: TaskSample) -> None:
        self._samples.append(_pack(sample))

    def since(self, after: float | None = None, limit: int | None = None) -> list[TaskSample]:
        """The samples newer than ``after`` (wall clock; all with ``None``), at most the
        ``limit`` newest of them."""
        chosen = [p for p in self._samples if after is None or p[0] > after]
        if limit is not None and limit > 0:
            chosen = chosen[-limit:]
        return [_unpack(p) for p in chosen]

    def latest(self) -> TaskSample | None:
        return _unpack(self._samples[-1]) if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)


@dataclass(frozen=True, slots=True)
class NodeTotals:
    """What this node's tasks used at the last pass."""

    time: float
    cpu_cores: float
    memory_bytes: int  # working sets
    tasks: int


class SampleStore:
    """Every task's ring, by task id, with who each task is."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, Ring] = {}
        self._meta: dict[str, TaskMeta] = {}
        self.totals: NodeTotals | None = None
        # The tasks read at the last pass (None: not known, all of them): the others have
        # stopped running here, and their samples are only history.
        self.current: frozenset[str] | None = None

    def record(self, meta: TaskMeta, sample: TaskSample) -> None:
        ring = self._rings.get(meta.task_id)
        if ring is None:
            ring = self._rings[meta.task_id] = Ring(self.capacity)
        self._meta[meta.task_id] = meta
        ring.append(sample)

    def keep_only(self, task_ids: Iterable[str]) -> None:
        """Forget the tasks not in ``task_ids`` (the runner forgot them)."""
        keep = set(task_ids)
        for task_id in [t for t in self._rings if t not in keep]:
            del self._rings[task_id]
            self._meta.pop(task_id, None)

    def get(self, task_id: str) -> tuple[TaskMeta, Ring] | None:
        ring = self._rings.get(task_id)
        return None if ring is None else (self._meta[task_id], ring)

    def latest(self) -> Iterator[tuple[TaskMeta, TaskSample]]:
        for task_id, ring in self._rings.items():
            sample = ring.latest()
            if sample is not None:
                yield self._meta[task_id], sample

    def __len__(self) -> int:
        return len(self._rings)


def node_totals(now: float, samples: Iterable[TaskSample]) -> NodeTotals:
    """The sum over the samples of one pass (CPU not yet known counts as 0)."""
    cores, memory, count = 0.0, 0, 0
    for sample in samples:
        count += 1
        cores += sample.usage.cpu_cores or 0.0
        memory += sample.usage.reading.memory_working_set_bytes or 0
    return NodeTotals(now, cores, memory, count)


def usage_json(usage: Usage) -> dict[str, Any]:
    return {"cpu_cores": usage.cpu_cores, **dataclasses.asdict(usage.reading)}


def sample_json(sample: TaskSample) -> dict[str, Any]:
    """The wire form (``theseus.api.schemas.TaskStatsSample``)."""
    body = {"time": sample.time, **usage_json(sample.usage)}
    body["members"] = {name: usage_json(u) for name, u in sample.members.items()}
    return body


def task_json(
    meta: TaskMeta, node: str, interval: float, samples: list[TaskSample]
) -> dict[str, Any]:
    """The wire form (``theseus.api.schemas.TaskStats``)."""
    return {
        "task_id": meta.task_id,
        "service": meta.service,
        "group": meta.group,
        "labels": list(meta.labels),
        "node": node,
        "interval": interval,
        "samples": [sample_json(s) for s in samples],
    }
