"""Where a late event loop was (``theseus.server.loop_sampler``), and the stall watch that
logs it with the lateness and observes every tick's lateness (``theseus.server.stall``)."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter

import pytest

from tests.kit.clock import ManualClock
from tests.kit.wait import wait_until
from theseus.server.loop_sampler import LoopSampler, describe, summary
from theseus.server.stall import StallWatch


def held_up(release: threading.Event) -> None:
    """Stands for a callback that holds the loop."""
    release.wait(10)


def test_a_stack_is_named_by_its_innermost_frame_and_theseus_frames_above_it() -> None:
    """A clock called from inside the stall watch: its own frame, then the watch's."""
    stacks: list[str] = []

    def clock() -> float:
        stacks.append(describe(sys._getframe()))
        return 100.0

    StallWatch(clock=clock).check()
    inside = stacks[-1]
    innermost, *callers = inside.split(" < ")
    assert innermost.startswith("test_a_stack_is_named_by_its_innermost_frame_and_theseus_")
    assert "test_loop_sampler.py:" in innermost
    assert callers and callers[0].startswith("StallWatch.check (theseus/server/stall.py:")
    assert describe(None) == "(no Python frame)"


def test_the_summary_gives_each_stack_its_share() -> None:
    assert summary(Counter({"a (x.py:1)": 3, "b (y.py:2)": 1})) == (
        "75% in a (x.py:1); 25% in b (y.py:2)"
    )
    assert summary(Counter()) == ""


def test_the_sampler_sees_a_held_thread_only_while_it_is_late() -> None:
    """A real thread held in a function: sampled once its loop is late, not before."""
    release = threading.Event()
    held = threading.Thread(target=held_up, args=(release,), daemon=True)
    held.start()
    assert held.ident is not None
    clock = ManualClock()
    last_seen = clock.now
    sampler = LoopSampler(held.ident, lambda: last_seen, after=0.2, clock=clock)
    try:
        clock.now += 0.1  # on time: nothing sampled
        sampler.look()
        assert sampler.take() == Counter()
        clock.now += 1.0  # late from now on
        sampler.look()
        sampler.look()
        (stack,) = sampler.take()
        assert stack.startswith("Condition.wait (threading.py:")  # inside ``held_up``
        assert sampler.take() == Counter()  # taken: the next lateness starts afresh
    finally:
        release.set()
        held.join(5)


def test_the_samplers_thread_looks_by_itself() -> None:
    clock = ManualClock()
    sampler = LoopSampler(threading.get_ident(), lambda: 0.0, period=0.01, clock=clock)
    sampler.start()  # the loop was last seen 100 s ago
    try:
        wait_until(lambda: sum(sampler._counts.values()) >= 3, 5.0, "samples of a late loop")
    finally:
        sampler.stop()


def test_a_late_tick_is_logged_with_where_the_loop_was(caplog: pytest.LogCaptureFixture) -> None:
    clock, seen = ManualClock(), []
    watch = StallWatch(tick=0.1, stall=1.0, slow=0.25, clock=clock, observe=seen.append)

    class Sampled(LoopSampler):
        def take(self) -> Counter[str]:
            return Counter({"group_info (theseus/server/views.py:80)": 4})

    watch.sampler = Sampled(0, lambda: clock.now)
    caplog.set_level(logging.INFO, logger="theseus.server.stall")
    clock.now += 0.15
    watch.ticked()  # on time (50 ms late): not logged
    clock.now += 0.5
    watch.ticked()  # 0.4 s late: logged, with where
    clock.now += 2.1
    watch.ticked()  # a stall
    assert seen == pytest.approx([0.05, 0.4, 2.0])
    late, stalled = [r.getMessage() for r in caplog.records]
    assert late == (
        "this server's event loop came round 0.40s late; "
        "it was 100% in group_info (theseus/server/views.py:80)"
    )
    assert stalled.startswith("this server's event loop was stalled for 2.0s")
    assert stalled.endswith("it was 100% in group_info (theseus/server/views.py:80)")
