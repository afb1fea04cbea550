"""A stall is never blamed on the nodes: the leader's watch of its own stalls and the grace it
gives node losses (``theseus.server.stall``), and the reconciler's handling of spared nodes
(their tasks neither lost, nor replaced, nor unregistered; nothing new placed on them)."""

from __future__ import annotations

from tests.kit.builders import created, make_group, make_node, make_state, make_task, plan_of
from tests.kit.builders import running as running_statuses
from tests.kit.clock import ManualClock
from theseus.model.tasks import TaskState
from theseus.reconciler.registry import desired_registry
from theseus.server.stall import StallWatch, spared_nodes

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]


def test_a_late_tick_is_a_stall_and_a_timely_one_is_not() -> None:
    clock = ManualClock()
    watch = StallWatch(tick=0.1, stall=1.0, clock=clock)
    clock.now += 0.15
    assert watch.check() is None
    clock.now += 1.05  # under a second late
    assert watch.check() is None
    clock.now += 15.0  # SIGSTOP, or a loop held up by a huge request
    assert watch.check() == clock.now
    stalled_end = clock.now
    clock.now += 0.1
    assert watch.check() == stalled_end  # the last stall is remembered


def test_after_a_stall_every_absent_node_waits_out_the_grace() -> None:
    absent = frozenset({"n1", "n2"})
    spared = spared_nodes(
        absent, frozenset(), now=52.0, leading_since=0.0, last_stall_end=50.0, grace=4.0
    )
    assert spared == absent
    later = spared_nodes(
        absent, frozenset(), now=54.0, leading_since=0.0, last_stall_end=50.0, grace=4.0
    )
    assert later == frozenset()


def test_after_an_election_only_the_nodes_gone_already_wait() -> None:
    """Those went while no leader watched (the only server restarted); one that goes after the
    election had servers to heartbeat to, and is lost at once."""
    absent, before = frozenset({"n1", "n2"}), frozenset({"n1"})
    spared = spared_nodes(
        absent, before, now=12.0, leading_since=10.0, last_stall_end=None, grace=4.0
    )
    assert spared == {"n1"}
    assert spared_nodes(absent, before, 14.0, 10.0, None, 4.0) == frozenset()


def test_tasks_of_a_spared_node_are_neither_lost_nor_replaced_nor_unregistered() -> None:
    group = make_group(instances=2)
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    state = make_state([group], NODES, tasks, running_statuses(tasks), lost={"n1"})
    state.spared = frozenset({"n1"})
    plan = plan_of(state)
    assert not plan.status_puts and not created(plan, state)
    assert state.task_state(tasks[0]) is TaskState.RUNNING
    registered = desired_registry(state)
    assert all(any(t.id in key for key in registered) for t in tasks), sorted(registered)


def test_nothing_new_is_placed_on_a_spared_node() -> None:
    group = make_group(instances=3)
    state = make_state([group], NODES, [], {}, lost={"n1"})
    state.spared = frozenset({"n1"})
    placed = created(plan_of(state), state)
    assert len(placed) == 3 and all(t.node in {"n2", "n3"} for t in placed)


def test_once_the_grace_is_over_the_node_is_lost_as_ever() -> None:
    group = make_group(instances=1)
    task = make_task(group, "n1")
    state = make_state([group], NODES, [task], running_statuses([task]), lost={"n1"})
    plan = plan_of(state)  # spared: none
    assert plan.status_puts[task.id].state is TaskState.LOST


def test_one_stall_is_no_lag_and_a_loop_that_keeps_falling_behind_is() -> None:
    clock = ManualClock(0.0)
    watch = StallWatch(tick=0.1, stall=1.0, clock=clock)

    def tick_after(seconds: float) -> None:
        clock.now += seconds
        watch.ticked()

    tick_after(15.1)  # a 15 s stall (SIGSTOP): one late tick
    assert watch.last_stall_end == clock.now
    assert watch.lag() == 0.0  # agents registering again just after it are taken on
    for _ in range(5):  # then every tick 0.7 s late: a loop that keeps falling behind
        tick_after(0.8)
    assert abs(watch.lag() - 0.7) < 1e-9
    tick_after(0.1)  # on time again
    assert watch.lag() < 1e-9


def test_a_stall_not_noted_yet_ends_now_for_whoever_asks_first() -> None:
    """The leader's sweep of lost nodes may run before the watch's tick after a stall: asked,
    the watch counts the stall as ending now, and notes nothing (its tick still measures the
    loop's lateness)."""
    clock = ManualClock()
    watch = StallWatch(tick=0.1, stall=1.0, clock=clock)
    clock.now += 0.15
    assert watch.stall_end() is None
    clock.now += 15.0
    assert watch.stall_end() == clock.now
    assert watch.last_stall_end is None  # not noted
    assert watch.check() == clock.now  # the tick notes it
