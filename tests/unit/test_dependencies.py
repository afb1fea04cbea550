"""Dependencies between services: deploy-time checks, start order and stop order (pure)."""

from __future__ import annotations

from typing import Any

from tests.kit.builders import (
    apply_plan,
    created,
    make_group,
    make_node,
    make_state,
    make_status,
    make_task,
    plan_of,
    running,
    stopped,
)
from theseus.model.deployments import DeploymentRecord
from theseus.model.groups import GroupRecord
from theseus.model.spec import parse_deploy_document
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.dependencies import dependency_errors
from theseus.reconciler.deploy import plan_document

NODES = [make_node("n1"), make_node("n2"), make_node("n3")]


def errors_for(groups: list[GroupRecord], document: dict[str, Any]) -> dict[str, str]:
    existing = {g.group_key.key: g for g in groups}
    changes = plan_document(parse_deploy_document(document), existing, 1.0)
    return {e["path"]: e["message"] for e in dependency_errors(existing, changes)}


def service(image: str = "i", **spec: Any) -> dict[str, Any]:
    return {"image": image, **spec}


def test_dependencies_on_services_in_the_document_or_deployed_are_accepted() -> None:
    assert errors_for([], {"deploy": {"db": service(), "web": service(dependencies=["db"])}}) == {}
    db = make_group("db")
    assert errors_for([db], {"deploy": {"web": service(links=["db"])}}) == {}


def test_an_unknown_dependency_is_named_by_its_path() -> None:
    errors = errors_for([], {"deploy": {"web": service(dependencies=["db"])}})
    assert errors == {"deploy.web.dependencies": "no service 'db' is deployed"}


def test_a_service_cannot_need_itself_nor_a_cycle() -> None:
    errors = errors_for([], {"deploy": {"web": service(dependencies=["web"])}})
    assert errors == {"deploy.web.dependencies": "web cannot depend on itself"}
    cache = make_group("cache", dependencies=["web"])
    errors = errors_for(
        [cache],
        {"deploy": {"db": service(dependencies=["cache"]), "web": service(dependencies=["db"])}},
    )
    assert errors == {"deploy.web.dependencies": "a dependency cycle: cache -> web -> db -> cache"}


def test_removing_a_needed_service_is_refused_unless_its_dependents_go_too() -> None:
    db, web = make_group("db"), make_group("web", dependencies=["db"])
    errors = errors_for([db, web], {"remove": {"db": {"labels": ["dev"]}}})
    assert errors == {"remove.db": "web depends on it"}
    both = {"remove": {"db": {"labels": ["dev"]}, "web": {"labels": ["dev"]}}}
    assert errors_for([db, web], both) == {}


def test_a_change_that_adds_no_need_is_charged_with_no_old_problem() -> None:
    db, web = make_group("db"), make_group("web", dependencies=["db"])
    scaled = {"deploy": {"web": service(labels=["dev"], dependencies=["db"], instances=3)}}
    assert errors_for([db, web], scaled) == {}
    # A cycle written around the API (by hand, in etcd) does not block an unrelated scale,
    # but any change that adds a need is checked against the whole graph again.
    a, b = make_group("a", dependencies=["b"]), make_group("b", dependencies=["a"])
    assert errors_for([a, b, db, web], scaled) == {}
    more = {"deploy": {"web": service(labels=["dev"], dependencies=["db", "a"])}}
    assert errors_for([a, b, db, web], more) == {
        "deploy.a.dependencies": "a dependency cycle: a -> b -> a"
    }
    # A need kept from before must still be deployed.
    assert errors_for([web], scaled) == {"deploy.web.dependencies": "no service 'db' is deployed"}


def test_dependents_wait_until_their_dependency_has_its_healthy_capacity() -> None:
    db = make_group("db", instances=2)
    web = make_group("web", instances=2, dependencies=["db"])
    state = make_state([db, web], NODES)
    plan = plan_of(state)
    new = created(plan, state)
    assert {t.service for t in new if t.node} == {"db"}
    waiting = [t for t in new if t.service == "web"]
    assert len(waiting) == 2 and all(t.node is None for t in waiting)
    assert waiting[0].pending_reason == "waiting for dependency db: 0 of 2 tasks ready"
    apply_plan(state, plan)  # db's tasks run now
    plan = plan_of(state)
    placed = [t for t in plan.task_puts.values() if t.service == "web" and t.node]
    assert len(placed) == 2 and all(t.pending_reason is None for t in placed)


def test_a_dependency_with_failing_health_checks_holds_its_dependents() -> None:
    checked = [{"protocol": "COMMAND", "command": "true", "interval_seconds": 1}]
    db = make_group("db", instances=1, health_checks=checked)
    web = make_group("web", instances=1, dependencies=["db"])
    db_task = make_task(db, "n1")
    unhealthy = make_status(db_task, TaskState.RUNNING, healthy=False)
    state = make_state([db, web], NODES, [db_task], [unhealthy])
    (waiting,) = created(plan_of(state), state)
    assert waiting.node is None
    assert waiting.pending_reason == "waiting for dependency db: 0 of 1 tasks ready"
    state.statuses[db_task.id] = make_status(db_task, TaskState.RUNNING, healthy=True)
    (placed,) = created(plan_of(state), state)
    assert placed.node is not None


def test_removed_dependencies_stop_after_their_dependents() -> None:
    db, web = make_group("db", instances=1), make_group("web", instances=1, dependencies=["db"])
    tasks = [make_task(db, "n1"), make_task(web, "n2")]
    state = make_state([], NODES, tasks, running(tasks))  # both groups were just removed
    plan = plan_of(state)
    assert [t.service for t in stopped(plan)] == ["web"]
    apply_plan(state, plan)  # web's task reports stopped
    assert all(t.desired is Desired.RUN for t in state.tasks.values() if t.service == "db")
    assert [t.service for t in stopped(plan_of(state))] == ["db"]


def deploying(group: GroupRecord, deployment_id: str) -> DeploymentRecord:
    return DeploymentRecord(
        id=deployment_id,
        group=group.group_key.key,
        service=group.service,
        labels=group.labels,
        kind="update",
        from_version=1,
        to_version=2,
        digest=group.version,
        instances=group.instances,
        started_at=0.0,
        updated_at=0.0,
        deadline=600.0,
        progress_deadline_seconds=600.0,
        auto_revert=True,
    )


def test_a_dependents_rollout_waits_for_its_dependencys_deployment() -> None:
    db = make_group("db", instances=1)
    web = make_group("web", instances=1, dependencies=["db"])
    db_task = make_task(db, "n1")
    state = make_state([db, web], NODES, [db_task], running([db_task]))
    state.deployments = {"d-db": deploying(db, "d-db"), "d-web": deploying(web, "d-web")}
    (waiting,) = created(plan_of(state), state)
    assert waiting.pending_reason == "waiting for dependency db: deployment d-db"
    # A web task that only replaces a dead one waits for capacity, not for db's rollout.
    del state.deployments["d-web"]
    (placed,) = created(plan_of(state), state)
    assert placed.node is not None
    # And once db's deployment has finished, web's rollout goes on.
    state.deployments = {"d-web": deploying(web, "d-web")}
    (placed,) = created(plan_of(state), state)
    assert placed.node is not None


def test_a_dependency_that_no_longer_exists_holds_nothing_back() -> None:
    """Only deploys, scales, removes and rollbacks are checked; a revert or a cancel writes
    the previous spec as it was, and may name a service removed since. Its tasks start:
    waiting for a service nobody will deploy again would hang the revert."""
    web = make_group("web", instances=2, dependencies=["gone"])
    state = make_state([web], NODES)
    plan = plan_of(state)
    placed = [t for t in created(plan, state) if t.node]
    assert len(placed) == 2 and all(t.pending_reason is None for t in placed)
