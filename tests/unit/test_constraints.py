"""Marathon's constraint operators, case by case (README.md's ``constraints`` key), their
validation, and how the placer and the reconciler use them."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.kit.builders import make_group, make_node, make_spec, make_state, make_task, running
from theseus.model.constraints import Constraint
from theseus.model.spec import SpecError, parse_deploy_document
from theseus.reconciler.reconcile import reconcile
from theseus.scheduler.constraints import accepts, spread_victims
from theseus.scheduler.placement import Holding, Placement, Placer, Unplaceable


def rule(*parts: str) -> Constraint:
    return Constraint.model_validate(list(parts))


# (constraint, node's value, placed per value, instances, distinct values) -> accepted
CASES = [
    # UNIQUE: no task of the group has the value yet
    (("hostname", "UNIQUE"), "n1", {}, 3, 3, True),
    (("hostname", "UNIQUE"), "n1", {"n1": 1}, 3, 3, False),
    (("hostname", "UNIQUE"), "n2", {"n1": 1}, 3, 3, True),
    # CLUSTER with a value: exactly that value
    (("rack", "CLUSTER", "r1"), "r1", {}, 3, 2, True),
    (("rack", "CLUSTER", "r1"), "r2", {}, 3, 2, False),
    # CLUSTER without a value: whatever the first placed task got
    (("rack", "CLUSTER"), "r2", {}, 3, 2, True),
    (("rack", "CLUSTER"), "r2", {"r1": 1}, 3, 2, False),
    (("rack", "CLUSTER"), "r1", {"r1": 2}, 3, 2, True),
    # MAX_PER: fewer than N per value
    (("rack", "MAX_PER", "2"), "r1", {"r1": 1}, 9, 2, True),
    (("rack", "MAX_PER", "2"), "r1", {"r1": 2}, 9, 2, False),
    # LIKE / UNLIKE: full-string regexes
    (("rack", "LIKE", "r[12]"), "r1", {}, 1, 3, True),
    (("rack", "LIKE", "r[12]"), "r10", {}, 1, 3, False),
    (("rack", "LIKE", "r"), "r1", {}, 1, 3, False),
    (("rack", "UNLIKE", "r[12]"), "r3", {}, 1, 3, True),
    (("rack", "UNLIKE", "r[12]"), "r2", {}, 1, 3, False),
    # IS: equality, numbers as 0.### HALF_EVEN
    (("zone", "IS", "a"), "a", {}, 1, 2, True),
    (("zone", "IS", "a"), "b", {}, 1, 2, False),
    (("gpu", "IS", "0.8"), "0.80", {}, 1, 2, True),
    (("gpu", "IS", "0.8"), "0.8001", {}, 1, 2, True),
    (("gpu", "IS", "0.8"), "0.81", {}, 1, 2, False),
    # GROUP_BY: 5 instances over 2 racks -> 3 + 2
    (("rack", "GROUP_BY", "2"), "r1", {}, 5, 2, True),
    (("rack", "GROUP_BY", "2"), "r2", {"r1": 1}, 5, 2, True),
    (("rack", "GROUP_BY", "2"), "r1", {"r1": 2, "r2": 2}, 5, 2, True),
    (("rack", "GROUP_BY", "2"), "r2", {"r1": 3, "r2": 2}, 5, 2, False),
    (("rack", "GROUP_BY", "2"), "r3", {"r1": 1, "r2": 1}, 5, 2, False),
    # GROUP_BY without a count: as many groups as the nodes offer values
    (("rack", "GROUP_BY"), "r3", {"r1": 1, "r2": 1}, 6, 3, True),
    (("rack", "GROUP_BY"), "r1", {"r1": 2, "r2": 1, "r3": 1}, 6, 3, False),
]


@pytest.mark.parametrize(("parts", "value", "placed", "instances", "groups", "expected"), CASES)
def test_operator(
    parts: tuple[str, ...],
    value: str,
    placed: dict[str, int],
    instances: int,
    groups: int,
    expected: bool,
) -> None:
    counts: Counter[str | None] = Counter(placed)
    assert accepts(rule(*parts), value, counts, instances, groups) is expected


@pytest.mark.parametrize(
    "parts",
    [
        ("rack", "UNIQUE"),
        ("rack", "CLUSTER", "r1"),
        ("rack", "GROUP_BY"),
        ("rack", "MAX_PER", "1"),
        ("rack", "LIKE", ".*"),
        ("rack", "IS", "r1"),
    ],
)
def test_only_unlike_accepts_a_node_without_the_attribute(parts: tuple[str, ...]) -> None:
    assert not accepts(rule(*parts), None, Counter(), 3, 3)
    assert accepts(rule("rack", "UNLIKE", "r1"), None, Counter(), 3, 3)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (["hostname"], "must be a list [field, OPERATOR]"),
        (["hostname", "SOMETIMES"], "unknown operator 'SOMETIMES'"),
        (["rack", "LIKE"], "LIKE needs a value"),
        (["rack", "MAX_PER", "two"], "MAX_PER takes a whole number"),
        (["rack", "UNIQUE", "x"], "UNIQUE takes no value"),
        (["rack", "LIKE", "("], "is not a regex"),
    ],
)
def test_bad_constraints_are_named_by_path(constraint: list[str], message: str) -> None:
    raw = {"deploy": {"web": {"image": "x", "constraints": [["hostname", "UNIQUE"], constraint]}}}
    with pytest.raises(SpecError) as caught:
        parse_deploy_document(raw)
    (error,) = caught.value.errors
    assert error["path"] == "deploy.web.constraints.1" and message in error["message"]


def test_operators_are_case_insensitive_and_round_trip_as_lists() -> None:
    spec = make_spec(constraints=[["hostname", "unique"], ["rack", "GROUP_BY", 2]])
    assert spec.model_dump(mode="json")["constraints"] == [
        ["hostname", "UNIQUE"],
        ["rack", "GROUP_BY", "2"],
    ]


RACKS = [
    make_node("n1", attributes={"rack": "r1"}),
    make_node("n2", attributes={"rack": "r1"}),
    make_node("n3", attributes={"rack": "r2"}),
    make_node("n4"),
]


def test_unplaceable_reason_counts_nodes_per_reason() -> None:
    big, small = make_spec(mem=3000, ports={}), make_spec(mem=64, ports={})
    holdings = [Holding(n, "other", big, {}) for n in ("n1", "n2", "n3")]
    holdings.append(Holding("n4", "g", small, {}))
    unique = make_spec(constraints=[["hostname", "UNIQUE"]], mem=2000, ports={})
    result = Placer(RACKS, holdings).place("t", "g", unique)
    assert isinstance(result, Unplaceable)
    assert result.reason == (
        "0/4 nodes can run it: 3 nodes: insufficient memory (needs 2000 MB); "
        "1 node: UNIQUE hostname"
    )


def test_group_by_spreads_evenly_over_racks() -> None:
    placer = Placer(RACKS[:3], [])
    spec = make_spec(constraints=[["rack", "GROUP_BY"]], instances=4, ports={})
    nodes = [placer.place(f"t{i}", "g", spec) for i in range(4)]
    racks = Counter("r2" if isinstance(p, Placement) and p.node == "n3" else "r1" for p in nodes)
    assert all(isinstance(p, Placement) for p in nodes) and racks == {"r1": 2, "r2": 2}


def test_binpack_fills_one_node_before_the_next() -> None:
    placer = Placer([make_node("n1"), make_node("n2")], [])
    spec = make_spec(placement_strategy="binpack", cpus=0.5, ports={})
    nodes = [
        p.node for i in range(4) if isinstance(p := placer.place(f"t{i}", "g", spec), Placement)
    ]
    assert nodes == ["n1", "n1", "n1", "n1"]
    spread = Placer([make_node("n1"), make_node("n2")], [])
    assert {
        p.node
        for i in range(2)
        if isinstance(p := spread.place(f"s{i}", "g", make_spec()), Placement)
    } == {"n1", "n2"}


def test_spread_victims_take_from_the_most_loaded_value() -> None:
    tasks = ["a1", "a2", "a3", "b1"]
    assert spread_victims(tasks, lambda t: t[0], 2) == ["a1", "a2"]
    assert spread_victims(tasks, lambda t: t[0], 3) == ["a1", "a2", "a3"]


def test_group_by_scale_down_keeps_the_spread_even() -> None:
    group = make_group(instances=2, constraints=[["rack", "GROUP_BY"]], ports={})
    tasks = [make_task(group, n, created_at=float(i)) for i, n in enumerate(["n1", "n2", "n3"])]
    tasks.append(make_task(group, "n3", created_at=9.0))
    state = make_state([group], RACKS[:3], tasks, running(tasks))
    plan = reconcile(state, 100.0)
    stopped = {t.node for t in plan.task_puts.values() if t.desired.value == "stop"}
    # 2 on r1 (n1, n2) and 2 on r2 (n3, n3): one from each rack goes, not two from one.
    assert len(stopped) == 2 and "n3" in stopped
