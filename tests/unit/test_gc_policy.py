"""The garbage-collection policy: survivors of every collection are frozen, and the whole heap
is examined again once per thaw interval, by a thread of the policy's own
(``theseus.server.gc_policy``). Uses this process's real collector, restored after each
test."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from tests.kit.clock import ManualClock
from theseus.server.gc_policy import FreezeSurvivors, Step, decide, made_old


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def policy(clock: ManualClock) -> Iterator[tuple[FreezeSurvivors, list[tuple[int, float]]]]:
    pauses: list[tuple[int, float]] = []
    installed = FreezeSurvivors(
        thaw_interval=600.0, clock=clock, on_pause=lambda g, s: pauses.append((g, s))
    )
    installed.install(thaw_thread=False)  # thaws when the test's clock says so
    try:
        yield installed, pauses
    finally:
        installed.uninstall()
        gc.collect()


def test_decisions() -> None:
    assert decide("start", 0, now=5.0, thawed_at=0.0, interval=1.0) is Step.NOTHING
    assert decide("start", 1, now=5.0, thawed_at=0.0, interval=1.0) is Step.NOTHING
    assert decide("stop", 0, now=5.0, thawed_at=0.0, interval=1.0) is Step.FREEZE
    assert decide("stop", 1, now=5.0, thawed_at=4.5, interval=1.0) is Step.FREEZE
    assert decide("start", 2, now=5.0, thawed_at=4.5, interval=1.0) is Step.NOTHING
    assert decide("start", 2, now=5.0, thawed_at=4.0, interval=1.0) is Step.THAW
    assert decide("stop", 2, now=5.0, thawed_at=4.5, interval=1.0) is Step.FREEZE


def test_survivors_of_any_collection_are_frozen_and_later_ones_skip_them(
    policy: tuple[FreezeSurvivors, list[tuple[int, float]]],
) -> None:
    _, pauses = policy
    kept = [Cycle() for _ in range(1000)]
    gc.collect(0)  # a young collection
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    # The next collections see only what was made since: the frozen ones stay frozen.
    gc.collect()
    assert gc.get_freeze_count() >= frozen
    generations = [g for g, _ in pauses]  # the install's, young ones, this one
    assert generations[0] == generations[-1] == 2 and set(generations[1:-1]) == {0}
    assert all(s >= 0 for _, s in pauses)


def test_the_collector_starts_only_young_collections_by_itself(
    policy: tuple[FreezeSurvivors, list[tuple[int, float]]],
) -> None:
    # Freezing zeroes the generations' counts, so no middle or full collection ever comes
    # due: the whole heap is examined again only by the policy's thread.
    _, pauses = policy
    pauses.clear()
    threshold = gc.get_threshold()[0]
    kept = [[Cycle() for _ in range(threshold)] for _ in range(50)]
    assert len(kept) == 50
    assert pauses and {g for g, _ in pauses} == {0}


def test_a_frozen_cycle_is_freed_at_the_next_thaw(
    clock: ManualClock, policy: tuple[FreezeSurvivors, list[tuple[int, float]]]
) -> None:
    installed, _ = policy
    cycle = Cycle()
    gone = weakref.ref(cycle)
    gc.collect()  # it survives (still referred to here): frozen
    del cycle
    gc.collect()
    assert gone() is not None, "a frozen cycle waits for the thaw"
    clock.now += 600.0
    gc.collect()
    assert gone() is None and installed.thaws == 1
    # Frozen again after the thaw's collection, and no second thaw before the interval.
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert installed.thaws == 1


def test_garbage_outside_cycles_is_freed_while_frozen(
    policy: tuple[FreezeSurvivors, list[tuple[int, float]]],
) -> None:
    holder = Cycle()
    plain = Plain()
    holder.child = plain  # type: ignore[attr-defined]
    gone = weakref.ref(plain)
    gc.collect()  # both frozen
    del plain
    holder.child = None  # type: ignore[attr-defined]
    assert gone() is None, "reference counting frees it at once, frozen or not"


def test_the_thread_examines_the_whole_heap_every_interval() -> None:
    installed = FreezeSurvivors(thaw_interval=0.05, on_pause=lambda g, s: None)
    installed.install()
    try:
        cycle = Cycle()
        gone = weakref.ref(cycle)
        gc.collect(0)  # it survives (still referred to here): frozen
        assert gc.get_freeze_count() > 0
        del cycle
        deadline = time.monotonic() + 10.0
        while gone() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone() is None, "the thread's thaw freed the cycle"
        assert installed.thaws >= 1
    finally:
        installed.uninstall()
    assert not any(t.name == "gc thaws" for t in threading.enumerate())


def test_uninstall_thaws_everything(clock: ManualClock) -> None:
    installed = FreezeSurvivors(clock=clock, on_pause=lambda g, s: None)
    installed.install()
    assert gc.get_freeze_count() > 0, "what the process held at start is frozen at once"
    installed.uninstall()
    assert gc.get_freeze_count() == 0
    assert installed._callback not in gc.callbacks


class Plain:
    pass


def young(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=0))


def test_what_is_made_old_skips_the_young_collections(
    policy: tuple[FreezeSurvivors, list[tuple[int, float]]],
) -> None:
    before = Plain()  # young when made_old starts: collected (here, kept and frozen) first
    made = made_old(lambda: {n: [n] for n in range(100)})
    assert not young(made) and not any(young(made[n]) for n in (0, 99))
    assert not young(before)
    fresh = {"after": [1]}  # made afterwards: young, as ever
    assert young(fresh)


def test_without_the_policy_nothing_is_frozen() -> None:
    gc.collect()  # and no young collection due during what follows (100 objects)
    frozen = gc.get_freeze_count()
    made = made_old(lambda: {n: [n] for n in range(100)})
    assert young(made) and gc.get_freeze_count() == frozen
