"""What a deploy document changes per group."""

from __future__ import annotations

from tests.kit.builders import make_group, make_spec
from theseus.model.spec import parse_deploy_document
from theseus.reconciler.deploy import change_action, plan_document, plan_scale


def actions(doc: dict[str, object], groups: dict[str, object]) -> list[str]:
    parsed = parse_deploy_document(doc)
    return [c.action for c in plan_document(parsed, groups, 10.0)]  # type: ignore[arg-type]


def test_created_unchanged_scaled_updated_removed_absent() -> None:
    group = make_group("web", instances=3)
    spec = group.spec.model_dump()
    groups = {group.group_key.key: group}
    assert actions({"deploy": {"api": spec}}, groups) == ["created"]
    assert actions({"deploy": {"web": spec}}, groups) == ["unchanged"]
    assert actions({"deploy": {"web": {**spec, "instances": 5}}}, groups) == ["scaled"]
    assert actions({"deploy": {"web": {**spec, "image": "other"}}}, groups) == ["updated"]
    assert actions({"remove": {"web": {"labels": spec["labels"]}}}, groups) == ["removed"]
    assert actions({"remove": {"web": {"labels": ["nope"]}}}, groups) == ["absent"]


def test_reordered_labels_are_the_same_group() -> None:
    group = make_group("web", labels=["a", "b"])
    spec = {**group.spec.model_dump(), "labels": ["b", "a"]}
    assert actions({"deploy": {"web": spec}}, {group.group_key.key: group}) == ["unchanged"]


def test_update_keeps_new_instances_and_scale_keeps_version() -> None:
    group = make_group("web", instances=3)
    parsed = parse_deploy_document(
        {"deploy": {"web": {**group.spec.model_dump(), "image": "x", "instances": 7}}}
    )
    (change,) = plan_document(parsed, {group.group_key.key: group}, 1.0)
    assert change.record is not None and change.record.instances == 7
    assert change.record.version != group.version
    scaled = plan_scale(group, 9, 2.0)
    assert scaled.record is not None and scaled.record.version == group.version
    assert plan_scale(group, 3, 2.0).action == "unchanged"


def test_settings_that_restart_nothing_are_configured_not_scaled() -> None:
    existing = make_group(instances=2)
    for change in ({"sticky": True}, {"dependencies": ["db"]}, {"instances": 3, "sticky": True}):
        spec = make_spec(**change)
        assert change_action(existing, spec, spec.version()) == "configured", change
    scaled = make_spec(instances=5)
    assert change_action(existing, scaled, scaled.version()) == "scaled"
    updated = make_spec(environment={"A": "1"})
    assert change_action(existing, updated, updated.version()) == "updated"
