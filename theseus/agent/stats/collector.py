"""The agent's stats loop: every ``interval`` seconds, read every running task's cgroups
(or process group) and record one sample per task in the ``SampleStore``.

Owned by the agent (``theseus.agent.agent``), which runs ``StatsCollector.run`` beside its
other loops and hands ``store`` to its HTTP routes, its Prometheus collector and its
heartbeat (the node's totals). Which processes belong to a task is asked of the driver
(``StatsSource.stats_targets``: one Docker inspect per container) once, when the task is
first seen running or its handle changes, never at every pass; the Docker stats API is never
called (it takes 1-2 s per call on this machine; reading the cgroup files takes well under a
millisecond). The files are read in a worker thread so that a slow filesystem cannot hold up
the event loop. ``cost_seconds`` is the CPU time the passes took (bench/stats.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from theseus.agent.decide import Phase
from theseus.agent.drivers.base import StatsSource, StatsTarget
from theseus.agent.runner import TaskRunner
from theseus.agent.stats.reader import ContainerReader, is_cgroup_v2, process_groups
from theseus.agent.stats.samples import (
    Reading,
    SampleStore,
    TaskMeta,
    TaskSample,
    Usage,
    cpu_cores,
    node_totals,
    total,
)
from theseus.api.schemas import NodeUsage

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0
MIN_INTERVAL = 1.0
DEFAULT_RETENTION = 3600.0  # about an hour of samples per task


@dataclass(frozen=True)
class Running:
    """A task running on this node, as the collector needs it."""

    meta: TaskMeta
    handle: str
    members: int = 1  # processes expected: a pod's members, else 1


# One task's readings of a pass: its wall time, and each member's reading and monotonic time.
_TaskReadings = tuple[float, dict[str, tuple[Reading, float]]]

TaskLister = Callable[[], tuple[list[Running], Collection[str]]]
"""The running tasks, and every task id the runner still knows (the others' samples go)."""


@dataclass
class _Watched:
    handle: str
    containers: list[ContainerReader] = field(default_factory=list)
    trees: list[StatsTarget] = field(default_factory=list)
    complete: bool = True  # every expected member found; else asked again next pass


class StatsCollector:
    def __init__(
        self,
        source: StatsSource | None,
        tasks: TaskLister,
        interval: float = DEFAULT_INTERVAL,
        retention: float = DEFAULT_RETENTION,
        v2: bool | None = None,
    ) -> None:
        self.source = source
        self.tasks = tasks
        self.interval = max(MIN_INTERVAL, interval)
        self.store = SampleStore(math.ceil(retention / self.interval))
        self.v2 = is_cgroup_v2() if v2 is None else v2
        self._watched: dict[str, _Watched] = {}
        # (task, member) -> its previous reading and the monotonic time it was taken
        self._previous: dict[tuple[str, str], tuple[Reading, float]] = {}
        self.passes = 0
        self.cost_seconds = 0.0  # CPU time of the passes (this thread and the reader's)

    @classmethod
    def of(cls, runner: TaskRunner, interval: float, retention: float) -> StatsCollector:
        """The collector of ``runner``'s tasks, through its driver (none: nothing measured)."""
        driver = runner.driver
        source = driver if isinstance(driver, StatsSource) else None
        return cls(source, runner_tasks(runner), interval, retention)

    def usage(self) -> NodeUsage | None:
        """What the tasks used at the last pass, for the heartbeat (``theseus nodes``)."""
        totals = self.store.totals
        if totals is None:
            return None
        # Clamped: a value the server's schema refuses would fail the heartbeat itself.
        return NodeUsage(
            time=max(0.0, totals.time),
            cpu_cores=max(0.0, totals.cpu_cores),
            memory_bytes=max(0, totals.memory_bytes),
            tasks=totals.tasks,
        )

    async def run(self) -> None:
        if self.source is None:  # a driver without processes to measure (sim): no passes
            await asyncio.Event().wait()
        while True:
            try:
                await self.collect_once()
            except Exception:  # a bad pass must not end the loop: the next one may do
                log.exception("collecting task stats failed")
            await asyncio.sleep(self.interval)

    async def collect_once(self) -> None:
        started = time.thread_time()
        running, known = self.tasks()
        await self._resolve(running)
        current = {r.meta.task_id: r for r in running}
        watched = {t: w for t, w in self._watched.items() if t in current}
        worker_started = time.thread_time()
        readings: dict[str, _TaskReadings] = {}
        worker_cost = 0.0
        if watched:  # no thread hop for an idle node
            readings, worker_cost = await asyncio.to_thread(self._read_all, watched)
        resumed = time.thread_time()
        self._record(current, readings)
        self.store.keep_only(known)
        self._previous = {k: v for k, v in self._previous.items() if k[0] in current}
        self.passes += 1
        self.cost_seconds += (worker_started - started) + worker_cost
        self.cost_seconds += time.thread_time() - resumed

    async def _resolve(self, running: list[Running]) -> None:
        """Find the processes of tasks first seen running (or with a new handle)."""
        ids = {r.meta.task_id for r in running}
        for task_id in [t for t in self._watched if t not in ids]:
            del self._watched[task_id]
        if self.source is None:
            return
        for task in running:
            watched = self._watched.get(task.meta.task_id)
            if watched is not None and watched.handle == task.handle and watched.complete:
                continue
            try:
                targets = await self.source.stats_targets(task.handle)
            except Exception as exc:  # the backend is away: try again next pass
                log.debug("no stats targets for %s: %s", task.meta.task_id, exc)
                continue
            self._watched[task.meta.task_id] = _Watched(
                task.handle,
                [ContainerReader(t, self.v2) for t in targets if not t.tree],
                [t for t in targets if t.tree],
                complete=len(targets) >= task.members,
            )

    def _read_all(self, watched: dict[str, _Watched]) -> tuple[dict[str, _TaskReadings], float]:
        """Every watched task's readings (task → wall time, member → reading, monotonic
        time) and the CPU time this took (in the worker thread). Each task's time is that
        of its reading, not of the pass's end: a sample's time is when it was true."""
        started = time.thread_time()
        groups = process_groups({t.pid for w in watched.values() for t in w.trees})
        readings: dict[str, _TaskReadings] = {}
        for task_id, entry in watched.items():
            wall = time.time()
            members: dict[str, tuple[Reading, float]] = {}
            for reader in entry.containers:
                reading = reader.read()
                if reading is None:
                    entry.complete = False  # gone or replaced: ask the driver again
                    continue
                members[reader.target.member] = (reading, time.monotonic())
            for tree in entry.trees:
                group = groups.get(tree.pid)
                if group is not None:
                    members[tree.member] = (group, time.monotonic())
            if members:
                readings[task_id] = (wall, members)
        return readings, time.thread_time() - started

    def _record(
        self,
        current: dict[str, Running],
        readings: dict[str, _TaskReadings],
    ) -> None:
        recorded: list[TaskSample] = []
        for task_id, (wall, members) in readings.items():
            usages: dict[str, Usage] = {}
            for member, (reading, at) in members.items():
                before = self._previous.get((task_id, member))
                previous, previous_at = before if before is not None else (None, None)
                usages[member] = Usage(cpu_cores(previous, previous_at, reading, at), reading)
                self._previous[(task_id, member)] = (reading, at)
            single = list(usages) == [""]
            sample = TaskSample(
                wall, total(usages.values()), {} if single else dict(sorted(usages.items()))
            )
            self.store.record(current[task_id].meta, sample)
            recorded.append(sample)
        self.store.totals = node_totals(time.time(), recorded)
        self.store.current = frozenset(readings)


def runner_tasks(runner: TaskRunner) -> TaskLister:
    """The running tasks of ``runner`` (with a container and an assignment), and the ones
    it knows."""

    def tasks() -> tuple[list[Running], Collection[str]]:
        assigned = runner.assigned or {}
        running: list[Running] = []
        for task_id, slot in runner.slots.items():
            assignment = assigned.get(task_id)
            if slot.phase is not Phase.RUNNING or slot.handle is None or assignment is None:
                continue
            meta = TaskMeta(task_id, assignment.service, assignment.group, tuple(assignment.labels))
            members = len(assignment.spec.containers or []) or 1
            running.append(Running(meta, slot.handle, members))
        return running, list(runner.slots)

    return tasks
