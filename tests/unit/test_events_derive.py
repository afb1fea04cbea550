"""The pure derivation of events from state changes, and the window that numbers them
(``theseus.server.events``): what each change means, that two feeds given the same history
give the same events with the same ids, and that a reader before the window is told so."""

from __future__ import annotations

from typing import Any

from tests.kit.builders import make_group, make_node, make_state, make_status, make_task
from theseus.model.deployments import DeploymentRecord
from theseus.model.nodes import NodeControl
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskState
from theseus.security.records import AuditRecord
from theseus.server.events.derive import derive
from theseus.server.events.feed import AFTER_ALL, EventFeed, Gap
from theseus.store import keys


def _types(key: str, before: object, after: object, state: ClusterState | None = None) -> list[str]:
    return [d.type for d in derive(key, before, after, None, state or make_state())]


def test_task_lifecycle_from_statuses() -> None:
    group = make_group()
    task = make_task(group, node="n1")
    state = make_state([group], [make_node()], [task])
    key = keys.status_key(task.id)
    starting = make_status(task, TaskState.STARTING)
    running = make_status(task, TaskState.RUNNING)
    assert _types(key, None, starting, state) == ["TaskStarting"]
    assert _types(key, starting, running, state) == ["TaskStarted"]
    assert _types(key, running, running, state) == []  # a repeated report is no event
    exited = make_status(task, TaskState.EXITED, exit_code=3)
    [event] = derive(key, running, exited, None, state)
    assert (event.type, event.service, event.payload["exit_code"]) == ("TaskExited", "web", 3)
    assert event.payload["oom_killed"] is False and "code 3" in event.message
    lost = make_status(task, TaskState.LOST, message="node n1 lost")
    assert _types(key, running, lost, state) == ["TaskLost"]
    failed = make_status(task, TaskState.FAILED, message="no such image")
    [event] = derive(key, starting, failed, None, state)
    assert event.type == "TaskFailed" and "no such image" in event.message


def test_an_oom_kill_says_so() -> None:
    group = make_group()
    task = make_task(group)
    running = make_status(task, TaskState.RUNNING)
    oom = make_status(task, TaskState.EXITED, exit_code=137, oom_killed=True)
    [event] = derive(keys.status_key(task.id), running, oom, None, make_state([group], [], [task]))
    assert event.payload == {"node": "n1", "state": "exited", "exit_code": 137, "oom_killed": True}
    assert "killed for memory (OOM)" in event.message


def test_health_flips() -> None:
    task = make_task(make_group())
    key = keys.status_key(task.id)
    unknown = make_status(task, TaskState.RUNNING)
    healthy = make_status(task, TaskState.RUNNING, healthy=True)
    sick = make_status(task, TaskState.RUNNING, healthy=False, health_message="HTTP 500")
    assert _types(key, unknown, healthy) == ["TaskHealthy"]
    assert _types(key, healthy, healthy) == []
    [event] = derive(key, healthy, sick, None, make_state())
    assert event.type == "TaskUnhealthy" and "HTTP 500" in event.message


def test_placement_failure_and_kill_from_task_records() -> None:
    group = make_group()
    pending = make_task(group, node=None, pending_reason="0/2 nodes can run it: memory")
    key = keys.task_key(pending.id)
    [event] = derive(key, None, pending, None, make_state())
    assert (event.topic, event.type) == ("scheduling", "PlacementFailed")
    assert event.payload["reason"] == "0/2 nodes can run it: memory"
    assert _types(key, pending, pending) == []  # the same reason again is no new event
    placed = pending.model_copy(update={"node": "n2", "pending_reason": None})
    assert _types(key, pending, placed) == ["TaskPlaced"]
    stopping = placed.model_copy(update={"desired": Desired.STOP, "stop_reason": "scaled down"})
    [event] = derive(key, placed, stopping, None, make_state())
    assert event.type == "TaskKilled" and "scaled down" in event.message


def test_groups_deployments_nodes() -> None:
    group = make_group(instances=2)
    key = keys.group_key(group.group_key.key)
    assert _types(key, None, group) == ["GroupCreated"]
    scaled = group.model_copy(update={"spec": group.spec.model_copy(update={"instances": 5})})
    assert _types(key, group, scaled) == ["GroupScaled"]
    assert _types(key, group, None) == ["GroupRemoved"]
    deployment = _deployment()
    dkey = keys.deployment_key(deployment.id)
    assert _types(dkey, None, deployment) == ["DeploymentStarted"]
    step = deployment.model_copy(update={"ready": 1})
    assert _types(dkey, deployment, step) == ["DeploymentStep"]
    done = step.model_copy(update={"ready": 2, "status": "successful"})
    assert _types(dkey, step, done) == ["DeploymentSucceeded"]
    failed = step.model_copy(update={"status": "failed", "message": "deadline"})
    assert _types(dkey, step, failed) == ["DeploymentFailed"]
    revert = _deployment(kind="revert")
    assert _types(dkey, None, revert) == ["DeploymentReverted"]
    alive = keys.alive_key("n1")
    assert _types(alive, None, 7) == ["NodeReady"]
    assert _types(alive, 7, 7) == []
    assert _types(alive, 7, None) == ["NodeLost"]
    node = make_node()
    assert _types(keys.node_key("n1"), node, None) == ["NodeRemoved"]
    control = keys.control_key("n1")
    draining = NodeControl(schedulable=False, drain=True, updated_at=5.0)
    assert _types(control, None, draining) == ["NodeDraining"]
    ineligible = NodeControl(schedulable=False, updated_at=5.0)
    assert _types(control, None, ineligible) == ["NodeIneligible"]


def test_audit_records_and_registry_entries() -> None:
    record = AuditRecord(
        at=5.0, who="token:ci", token_id="t1", method="POST", path="/deploy", status=200
    )
    [event] = derive(keys.AUDIT + "x", None, None, record.model_dump_json().encode(), make_state())
    assert (event.topic, event.payload["who"], event.time) == ("audit", "token:ci", 5.0)
    assert derive(keys.AUDIT + "x", None, None, None, make_state()) == []  # expiry
    scale = record.model_copy(update={"path": "/v1/groups/web/scale"})
    [event] = derive(keys.AUDIT + "y", None, None, scale.model_dump_json().encode(), make_state())
    assert event.service == "web"
    entry = keys.REGISTRY + "web/x"
    assert _types(entry, None, b"{}") == ["RegistryAdded"]
    assert _types(entry, b"{}", None) == ["RegistryRemoved"]


def _deployment(**overrides: Any) -> DeploymentRecord:
    fields: dict[str, Any] = {
        "id": "d-1",
        "group": "web/[]",
        "service": "web",
        "labels": [],
        "kind": "update",
        "from_version": 1,
        "to_version": 2,
        "digest": "x",
        "instances": 2,
        "started_at": 1.0,
        "updated_at": 1.0,
        "deadline": 100.0,
        "progress_deadline_seconds": 60.0,
        "auto_revert": True,
    }
    return DeploymentRecord.model_validate(fields | overrides)


def _history(feed: EventFeed) -> None:
    """A small history, fed as the cache would: two changes at revision 11, one at 12."""
    feed.reloaded(10)
    alive = keys.alive_key
    feed.changed(alive("a"), 11, None, 1, b"")
    feed.changed(alive("b"), 11, None, 2, b"")
    feed.changed(keys.node_key("a"), 11, make_node("a"), make_node("a"), b"")  # no event
    feed.changed(alive("a"), 12, 1, None, None)


def test_two_feeds_of_one_history_agree_on_ids() -> None:
    one = EventFeed(make_state, clock=lambda: 1.0)
    two = EventFeed(make_state, clock=lambda: 2.0)
    _history(one)
    _history(two)
    ids = [i.event.id for i in one.items()]
    assert ids == ["11-0", "11-1", "12-0"] == [i.event.id for i in two.items()]
    assert [i.event.type for i in one.items()] == ["NodeReady", "NodeReady", "NodeLost"]


def test_reading_resumes_after_an_event_or_an_index() -> None:
    feed = EventFeed(make_state)
    _history(feed)
    after_first = feed.read((11, 0))
    assert not isinstance(after_first, Gap)
    assert [i.event.id for i in after_first] == ["11-1", "12-0"]
    after_index = feed.read((11, AFTER_ALL))
    assert not isinstance(after_index, Gap)
    assert [i.event.id for i in after_index] == ["12-0"]
    assert feed.read((12, AFTER_ALL)) == []
    assert feed.read((99, AFTER_ALL)) == []  # from a server further on: nothing yet


def test_a_position_before_the_window_is_a_gap() -> None:
    feed = EventFeed(make_state)
    _history(feed)
    assert feed.read((9, AFTER_ALL)) == Gap(10)
    feed.reloaded(20)  # a reload: what happened in between was not seen
    assert feed.read((12, AFTER_ALL)) == Gap(20)


def test_a_full_window_drops_whole_revisions() -> None:
    feed = EventFeed(make_state, capacity=2)
    _history(feed)  # 3 events: the first one goes, and with it the rest of revision 11
    assert [i.event.id for i in feed.items()] == ["12-0"]
    assert feed.start == 11
    assert feed.read((10, AFTER_ALL)) == Gap(11)
    assert feed.read((11, 0)) == Gap(11)  # resuming inside a dropped revision: told so


def test_routine_events_do_not_push_notable_ones_out_of_the_keepers_reach() -> None:
    """A deploy's routine events (placements, starts) pass through the window faster than
    the keeper flushes; the notable ones stay in a ring of their own until it has kept them
    (at 5,000 nodes the keeper logged "events ... left the window before they were kept")."""
    feed = EventFeed(make_state, capacity=2)
    _history(feed)  # NodeReady twice at 11, NodeLost at 12: all notable
    for revision in range(13, 23):  # a flood of routine ones
        feed.changed(keys.REGISTRY + f"web/{revision}", revision, None, b"{}", b"{}")
    assert feed.read((10, AFTER_ALL)) == Gap(20)  # the window moved on
    kept = feed.read_notable((10, AFTER_ALL))
    assert not isinstance(kept, Gap)
    assert [i.event.type for i in kept] == ["NodeReady", "NodeReady", "NodeLost"]
    assert feed.notable_start == 10
    small = EventFeed(make_state, notable_capacity=2)
    _history(small)  # that ring has its bound too, and says so the same way
    assert small.read_notable((10, AFTER_ALL)) == Gap(11)
