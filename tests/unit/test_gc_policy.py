"""The garbage-collection policy: survivors of a full collection are frozen, and the whole heap
is examined again once per thaw interval (``theseus.server.gc_policy``). Uses this process's real
collector, restored after each test."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from theseus.server.gc_policy import FreezeSurvivors, Step, decide


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(clock: Clock) -> Iterator[tuple[FreezeSurvivors, list[tuple[int, float]]]]:
    pauses: list[tuple[int, float]] = []
    installed = FreezeSurvivors(
        thaw_interval=600.0, clock=clock, on_pause=lambda g, s: pauses.append((g, s))
    )
    installed.install()
    try:
        yield installed, pauses
    finally:
        installed.uninstall()
        gc.collect()


def test_decisions() -> None:
    assert decide("start", 0, now=5.0, thawed_at=0.0, interval=1.0) is Step.NOTHING
    assert decide("stop", 1, now=5.0, thawed_at=0.0, interval=1.0) is Step.NOTHING
    assert decide("start", 2, now=5.0, thawed_at=4.5, interval=1.0) is Step.NOTHING
    assert decide("start", 2, now=5.0, thawed_at=4.0, interval=1.0) is Step.THAW
    assert decide("stop", 2, now=5.0, thawed_at=4.5, interval=1.0) is Step.FREEZE


def test_survivors_of_a_full_collection_are_frozen_and_later_ones_skip_them(
    policy: tuple[FreezeSurvivors, list[tuple[int, float]]],
) -> None:
    _, pauses = policy
    kept = [Cycle() for _ in range(1000)]
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    # The next full collection sees only what was made since: the frozen ones stay frozen.
    gc.collect()
    assert gc.get_freeze_count() >= frozen
    assert [g for g, _ in pauses].count(2) == 3 and all(s >= 0 for _, s in pauses)


def test_a_frozen_cycle_is_freed_at_the_next_thaw(
    clock: Clock, policy: tuple[FreezeSurvivors, list[tuple[int, float]]]
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


def test_uninstall_thaws_everything(clock: Clock) -> None:
    installed = FreezeSurvivors(clock=clock, on_pause=lambda g, s: None)
    installed.install()
    assert gc.get_freeze_count() > 0, "what the process held at start is frozen at once"
    installed.uninstall()
    assert gc.get_freeze_count() == 0
    assert installed._callback not in gc.callbacks


class Plain:
    pass
