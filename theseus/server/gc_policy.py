"""How a long-lived process with a big heap keeps Python's garbage collector from stalling it.

CPython's cyclic collector examines every tracked object in a full (generation 2) collection.
A server that mirrors 50,000 tasks, with 5,000 agents' long-polls in flight, holds about three
million of them: each full collection then held the GIL for 1-3 s and, at 5,000 nodes, they
took 92 of the server's 207 s of CPU during a deploy (bench/scale.py, BENCHMARKS.md). The
event loop answered no heartbeat meanwhile and the leader lease's keep-alive thread woke
seconds late: the nodes' leases ran out and the leader stepped down, again and again.

Those objects are not garbage: the cluster's state, its memos, the long-polls. So, as
Instagram does with ``gc.freeze`` and as the Python documentation suggests for long-lived
heaps, the objects that survive a collection are moved to the permanent generation, which
later collections skip: each collection examines only what was created since the last one,
once, and the collector's work follows what the process allocates, not the size of its heap.

Survivors of every collection, young ones included (until the fifteenth session of issue 17,
only a full collection's). An object that lived through a young collection was then examined
again by a middle one and a full one before being frozen: at 5,000 nodes the collector's
pauses took 4.5-5.8 s of a deploy's 20-25 s of server CPU, 1.2-1.7 s now (BENCHMARKS.md).
``gc.freeze`` also zeroes the generations' counts, so the collector never starts a middle or
full collection by itself any more.

What this costs: an object that lived through a collection and later becomes garbage inside a
reference cycle is not freed until the whole heap is examined again (objects outside cycles are
freed by their reference counts, frozen or not). A thread of the policy's own does that every
``thaw_interval`` (10 minutes): a full collection that first thaws everything, so that what
such cycles hold is bounded by what ten minutes make. That collection pauses the process for
as long as a full collection of its heap takes (1-3 s at 50,000 tasks), once per interval. How
much it is worth: during 5,000-node deploys under the old policy, the server's full
collections found no objects in cycles in 4 runs of 7, and 15,006 in each of the other 3
(``python_gc_objects_collected_total`` on ``/metrics``).

``FreezeSurvivors.install`` is called once per server process by ``theseus.server.serve`` (and
by bench/hollow.py, whose processes hold many agents); ``PAUSES`` and ``FROZEN`` are shown on
each server's ``/metrics`` (``theseus.server.app``). ``decide`` is the pure part.

``made_old`` is for a few big containers made again and again that live long enough to meet a
young collection: the leader's snapshot of the state before each pass (``theseus.server.leader``)
copies dicts of 50,000 entries, and the young collection after it examined every entry, 3-8 ms
a pass (BENCHMARKS.md, issue 17's eighteenth session). Made under ``made_old``, they go to the
permanent generation at once. They are not in cycles, so their reference counts free them.
"""

from __future__ import annotations

import enum
import gc
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Gauge, Histogram

THAW_INTERVAL = 600.0  # seconds between two full examinations of the whole heap

T = TypeVar("T")

PAUSES = Histogram(
    "theseus_gc_pause_seconds",
    "Time this process's cyclic garbage collector held the GIL (event loop included), by "
    "generation (2: a full collection)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FROZEN = Gauge(
    "theseus_gc_frozen_objects",
    "Objects in the permanent generation: survivors of a collection, which later "
    "collections skip until the next thaw",
)
FROZEN.set_function(gc.get_freeze_count)
COLLECTORS = (PAUSES, FROZEN)


class Step(enum.Enum):
    NOTHING = "nothing"
    THAW = "thaw"  # before a full collection: examine the frozen objects too, this time
    FREEZE = "freeze"  # after any collection: its survivors are skipped from now on


def decide(phase: str, generation: int, now: float, thawed_at: float, interval: float) -> Step:
    """What to do at one of the collector's callbacks (pure)."""
    if phase == "stop":
        return Step.FREEZE
    if generation == 2 and now - thawed_at >= interval:
        return Step.THAW
    return Step.NOTHING


class FreezeSurvivors:
    """The policy, installed as a ``gc.callbacks`` entry of this process, with its thread of
    thaws."""

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
        self._stopping = threading.Event()
        self._thawing: threading.Thread | None = None
        self.thaws = 0

    def install(self, thaw_thread: bool = True) -> None:
        """Installed, and what the process holds so far (its modules, classes and functions,
        most of its objects at start) frozen at once by a first full collection; with
        ``thaw_thread``, the thread that examines the whole heap every ``thaw_interval``."""
        gc.callbacks.append(self._callback)
        _installed.append(self)
        gc.collect()
        if thaw_thread:
            self._thawing = threading.Thread(target=self._thaw_now_and_then, daemon=True)
            self._thawing.name = "gc thaws"
            self._thawing.start()

    def uninstall(self) -> None:
        """Removed, and everything frozen is examined again by the next collections."""
        self._stopping.set()
        if self._thawing is not None:
            self._thawing.join()
            self._thawing = None
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self in _installed:
            _installed.remove(self)
        gc.unfreeze()

    def _thaw_now_and_then(self) -> None:
        # The collector starts no full collection by itself any more (``gc.freeze`` zeroes
        # the counts that would): this one thaws, being due (``decide``).
        while not self._stopping.wait(self._interval):
            gc.collect()

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


_installed: list[FreezeSurvivors] = []  # the policy of this process, once installed


def made_old(make: Callable[[], T]) -> T:
    """``make()``, with what it made put straight in the permanent generation when the policy
    is installed (without it, nothing would ever examine them again: just ``make()``).

    A young collection first takes what was young before (its survivors frozen as after any
    other), so that only ``make``'s objects skip the young collections. ``make`` must not
    leave garbage in cycles: it would wait for the next thaw."""
    if not _installed:
        return make()
    gc.collect(0)
    made = make()
    gc.freeze()
    return made


def _observe(generation: int, seconds: float) -> None:
    PAUSES.labels(str(generation)).observe(seconds)
