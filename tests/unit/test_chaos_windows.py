"""The test bed chaos run's measure of the time a group ran over its instances."""

from __future__ import annotations

from tests.chaos.windows import OverInstances, counted


def test_a_window_opens_over_instances_and_closes_back_at_them() -> None:
    windows = OverInstances()
    windows.sample(0.0, {"a": 2}, {"a": 2})
    windows.sample(1.0, {"a": 2}, {"a": 3})
    windows.sample(2.0, {"a": 2}, {"a": 3})
    windows.sample(4.5, {"a": 2}, {"a": 2})
    assert (windows.longest, windows.longest_service, windows.windows) == (3.5, "a", 1)


def test_the_longest_of_several_windows_and_services_is_kept() -> None:
    windows = OverInstances()
    windows.sample(0.0, {"a": 1, "b": 1}, {"a": 2, "b": 1})
    windows.sample(1.0, {"a": 1, "b": 1}, {"a": 1, "b": 2})
    windows.sample(5.0, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    assert (windows.longest, windows.longest_service, windows.windows) == (4.0, "b", 2)


def test_a_removed_group_with_containers_left_is_over_and_an_open_window_ends_with_the_run() -> (
    None
):
    windows = OverInstances()
    windows.sample(0.0, {}, {"gone": 1})
    assert windows.finish(2.5) == 2.5
    assert windows.opened == {}


def test_scaling_up_is_never_over() -> None:
    windows = OverInstances()
    windows.sample(0.0, {"a": 1}, {"a": 1})
    windows.sample(1.0, {"a": 3}, {"a": 2})
    assert windows.finish(2.0) == 0.0 and windows.windows == 0


def test_containers_of_tasks_set_to_stop_do_not_count() -> None:
    containers = [("a", "t1"), ("a", "t2"), ("b", "t3")]
    assert counted(containers, stopping={"t2"}) == {"a": 1, "b": 1}
