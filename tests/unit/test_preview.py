"""``theseus plan``: what a deploy would do, from the reconciler's own first pass (pure)."""

from __future__ import annotations

from tests.kit.builders import make_group, make_node, make_spec, make_state, make_task, running
from theseus.model.spec import parse_deploy_document
from theseus.reconciler.deploy import plan_document
from theseus.reconciler.preview import preview, spec_diff

NODES = [make_node("n1"), make_node("n2")]


def test_a_new_group_shows_where_its_tasks_would_go_and_what_would_wait() -> None:
    state = make_state([], NODES)
    doc = parse_deploy_document(
        {"deploy": {"web": {"image": "x", "instances": 3, "constraints": [["hostname", "UNIQUE"]]}}}
    )
    changes = plan_document(doc, state.groups, 100.0)
    (result,) = preview(state, changes, 100.0).values()
    assert dict(result.placed) == {"n1": 1, "n2": 1}
    assert dict(result.pending) == {"0/2 nodes can run it: 2 nodes: UNIQUE hostname": 1}
    assert state.groups == {} and state.tasks == {}  # nothing changed


def test_an_update_shows_its_diff_and_first_step() -> None:
    group = make_group(instances=2, environment={"A": "1"})
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    state = make_state([group], NODES, tasks, running(tasks))
    spec = make_spec(instances=2, environment={"A": "2", "B": "x"})
    doc = parse_deploy_document({"deploy": {"web": spec.model_dump(mode="json")}})
    (result,) = preview(state, plan_document(doc, state.groups, 100.0), 100.0).values()
    assert result.diff == [("environment.A", "1", "2"), ("environment.B", None, "x")]
    assert sum(result.placed.values()) == 1 and result.stopping == 0  # one at a time


def test_scale_down_and_removal_show_what_would_stop() -> None:
    group = make_group(instances=2)
    tasks = [make_task(group, "n1"), make_task(group, "n2")]
    state = make_state([group], NODES, tasks, running(tasks))
    spec = group.spec.model_dump(mode="json") | {"instances": 1}
    scaled = preview(
        state,
        plan_document(parse_deploy_document({"deploy": {"web": spec}}), state.groups, 1.0),
        1.0,
    )
    assert [r.stopping for r in scaled.values()] == [1]
    removal = parse_deploy_document({"remove": {"web": {"labels": group.labels}}})
    removed = preview(state, plan_document(removal, state.groups, 1.0), 1.0)
    assert [r.stopping for r in removed.values()] == [2]


def test_spec_diff_names_nested_fields() -> None:
    old, new = make_spec(), make_spec(upgrade_strategy={"maximum_over_capacity": 0.5}, cpus=0.2)
    assert spec_diff(old, new) == [
        ("cpus", 0.1, 0.2),
        ("upgrade_strategy.maximum_over_capacity", 0.0, 0.5),
    ]
