"""How a long-lived process with a big heap keeps Python's garbage collector from stalling it.

CPython's cyclic collector examines every tracked object in a full (generation 2) collection.
A server that mirrors 50,000 tasks, with 5,000 agents' long-polls in flight, holds about three
million of them: each full collection then held the GIL for 1-3 s and, at 5,000 nodes, they
took 92 of the server's 207 s of CPU during a deploy (bench/scale.py, BENCHMARKS.md). The
event loop answered no heartbeat meanwhile and the leader lease's keep-alive thread woke
seconds late: the nodes' leases ran out and the leader stepped down, again and again.

Those objects are not garbage: the cluster's state, its memos, the long-polls. So, as
Instagram does with ``gc.freeze`` and as the Python documentation suggests for long-lived
heaps, the objects that survive a full collection are moved to the permanent generation,
which later collections skip: the next full collection examines only what was created since,
and the collector's work follows what the process allocates, not the size of its heap.

What this costs: an object frozen while alive that later becomes garbage inside a reference
cycle is not freed until it is examined again (objects outside cycles are freed by their
reference counts, frozen or not). So every ``thaw_interval`` (10 minutes) the next full
collection first thaws everything and examines the whole heap once, which bounds what such
cycles can hold to what ten minutes make. That one collection pauses as long as before.

The middle generation is collected every ``MIDDLE_EVERY`` (3) young collections instead of
CPython's 10 (``shorten_middle_generation``, the server only). Its collections are then
smaller, and cheaper per object examined; survivors reach the old generation sooner, so full
collections come twice as often, each half as long. At 5,000 nodes, in four interleaved pairs
of runs (BENCHMARKS.md, issue 17, thirteenth session), the collector's pauses went 4.6-4.9 s
→ 3.9-4.0 s (10 → 5) and 4.0-4.2 s → 3.3-3.5 s (5 → 3); a full collection took 20 ms on
average instead of 50. At 50 it was the other way: 25 ms per middle collection, 330 per full.

``FreezeSurvivors.install`` is called once per server process by ``theseus.server.serve`` (and by
bench/hollow.py, whose processes hold many agents); ``PAUSES`` and ``FROZEN`` are shown on
each server's ``/metrics`` (``theseus.server.app``). ``decide`` is the pure part.
"""

from __future__ import annotations

import enum
import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge, Histogram

THAW_INTERVAL = 600.0  # seconds between two full examinations of the whole heap
MIDDLE_EVERY = 3  # young collections per collection of the middle generation (CPython: 10)

PAUSES = Histogram(
    "theseus_gc_pause_seconds",
    "Time this process's cyclic garbage collector held the GIL (event loop included), by "
    "generation (2: a full collection)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FROZEN = Gauge(
    "theseus_gc_frozen_objects",
    "Objects in the permanent generation: survivors of a full collection, which later "
    "collections skip until the next thaw",
)
FROZEN.set_function(gc.get_freeze_count)
COLLECTORS = (PAUSES, FROZEN)


class Step(enum.Enum):
    NOTHING = "nothing"
    THAW = "thaw"  # before a full collection: examine the frozen objects too, this time
    FREEZE = "freeze"  # after a full collection: its survivors are skipped from now on


def decide(phase: str, generation: int, now: float, thawed_at: float, interval: float) -> Step:
    """What to do at one of the collector's callbacks (pure)."""
    if generation != 2:
        return Step.NOTHING  # young collections are cheap: they see only new objects
    if phase == "start":
        return Step.THAW if now - thawed_at >= interval else Step.NOTHING
    return Step.FREEZE


class FreezeSurvivors:
    """The policy, installed as a ``gc.callbacks`` entry of this process."""

    def __init__(
        self,
        thaw_interval: float = THAW_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        on_pause: Callable[[int, float], None] | None = None,
    ) -> None:
        self._interval = thaw_interval
        self._clock = clock
        self._on_pause = on_pause if on_pause is not None else _observe
        self._thawed_at = clock()
        self._started = 0.0
        self.thaws = 0

    def install(self) -> None:
        """Installed, and what the process holds so far (its modules, classes and functions,
        most of its objects at start) frozen at once by a first full collection."""
        gc.callbacks.append(self._callback)
        gc.collect()

    def uninstall(self) -> None:
        """Removed, and everything frozen is examined again by the next collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        gc.unfreeze()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whatever thread allocated: nothing heavy, and no lock
        # this thread may already hold (no logging). The histogram's locks each guard one
        # float addition, which allocates nothing that could start a collection inside them.
        generation = info["generation"]
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._on_pause(generation, time.perf_counter() - self._started)
        step = decide(phase, generation, self._clock(), self._thawed_at, self._interval)
        if step is Step.THAW:
            # Merged into the oldest generation, which the starting collection examines.
            gc.unfreeze()
            self._thawed_at = self._clock()
            self.thaws += 1
        elif step is Step.FREEZE:
            gc.freeze()


def shorten_middle_generation() -> None:
    """The middle generation collected every ``MIDDLE_EVERY`` young collections."""
    young, _, old = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_EVERY, old)


def _observe(generation: int, seconds: float) -> None:
    PAUSES.labels(str(generation)).observe(seconds)
