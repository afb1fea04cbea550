"""The chaos run's invariants: each broken promise is reported, a settled cluster passes."""

from __future__ import annotations

from tests.chaos.invariants import REMOVED, Expectations, Observation, TaskView, check


def settled() -> tuple[Observation, Expectations]:
    tasks = [TaskView("a.1", "a", "run", "running"), TaskView("a.2", "a", "run", "running")]
    seen = Observation(
        groups={"a": 2}, tasks=tasks, registry={"a": {"a.1", "a.2"}}, containers=["a.1", "a.2"]
    )
    expected = Expectations()
    expected.acked("a", 2)
    expected.acked("b", REMOVED)
    return seen, expected


def test_a_settled_cluster_keeps_every_promise() -> None:
    assert check(*settled()) == []


def test_too_few_running_tasks() -> None:
    seen, expected = settled()
    seen.tasks[1] = TaskView("a.2", "a", "run", "starting")
    seen.registry["a"] = {"a.1"}
    seen.containers = ["a.1"]
    assert check(seen, expected) == ["a: 1 running of 2 tasks, wants 2"]


def test_registry_must_equal_the_running_tasks() -> None:
    seen, expected = settled()
    seen.registry["a"] = {"a.1", "a.9"}
    assert check(seen, expected) == ["a: registry 1 [a.9] extra, 1 [a.2] missing"]


def test_orphan_and_duplicate_containers() -> None:
    seen, expected = settled()
    seen.containers += ["a.2", "z.1"]
    assert check(seen, expected) == [
        "task a.2 runs in 2 containers",
        "container of z.1 runs, but no running task owns it",
    ]


def test_an_acknowledged_deploy_must_be_reflected() -> None:
    seen, expected = settled()
    expected.acked("a", 3)
    assert check(seen, expected) == ["a: 2 instances, but the acknowledged state is 3 instances"]
    expected.acked("a", REMOVED)
    assert check(seen, expected)[-1] == "a: 2 instances, but the acknowledged state is removed"


def test_an_unanswered_call_may_or_may_not_have_been_applied() -> None:
    seen, expected = settled()
    expected.acked("a", 4)
    expected.unanswered("a", 2)
    assert check(seen, expected) == []
    expected.acked("a", 4)  # a later answer settles it
    assert check(seen, expected) != []


def test_tasks_of_a_removed_group() -> None:
    seen, expected = settled()
    seen.tasks.append(TaskView("b.1", "b", "run", "running"))
    seen.containers.append("b.1")
    assert "b: 1 tasks of a removed group" in check(seen, expected)
