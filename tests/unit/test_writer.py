"""The API's writes on the in-memory store: a change decided on a stale view is refused by
its guards and decided again (optimistic concurrency), and ``POST /deploy?dry_run=true``
(``theseus plan``) refuses exactly what ``POST /deploy`` refuses, with the same answer,
because both take one path (``theseus.server.writes.decide_group_changes``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.kit.app import inprocess_api
from tests.kit.builders import make_group, make_spec, make_task
from theseus.api.schemas import TaskReport
from theseus.model.groups import GroupKey
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskStatus
from theseus.reconciler.deploy import (
    GroupChangePlan,
    plan_group,
    plan_removal,
    plan_restart,
    plan_scale,
)
from theseus.reconciler.deployments import cancel_writes, previous_version, rollback_change
from theseus.server import client_index
from theseus.server.writes import MAX_GROUP_CHANGES, Writer, decide_group_changes
from theseus.store import keys
from theseus.store.base import Entry
from theseus.store.cache import StateCache
from theseus.store.memory import MemoryStore

WEB = 'web/["dev"]'


def scaler(instances: int, calls: list[int]) -> Any:
    def planner(state: ClusterState) -> list[GroupChangePlan]:
        calls.append(instances)
        return [plan_scale(state.groups[WEB], instances, 2.0)]

    return planner


async def test_a_change_decided_on_a_stale_view_is_decided_again(
    store: MemoryStore, cache: StateCache
) -> None:
    writer = Writer(store, cache, liveness_timeout=3)
    await writer.apply_group_changes(
        lambda state: [plan_group("web", make_spec(instances=1), state.groups, 1.0)]
    )
    calls: list[int] = []
    # Both decide on the same view; the second to commit finds the group changed under it.
    first, second = await asyncio.gather(
        writer.apply_group_changes(scaler(3, calls)),
        writer.apply_group_changes(scaler(5, calls)),
    )
    assert store.refused == 1
    assert calls == [3, 5, 5]  # the refused one was decided again, on the new view
    assert [c.action for c in first + second] == ["scaled", "scaled"]
    assert cache.state.groups[WEB].instances == 5
    versions = cache.state.versions[WEB]
    assert [versions[n].spec.instances for n in sorted(versions)] == [1, 3, 5]


# --- plan and deploy: one path ------------------------------------------------------------

WEB_SPEC = {"image": "theseus/busybox:latest", "instances": 1, "cpus": 0.1, "mem": 32}


def too_many_groups() -> dict[str, Any]:
    return {"deploy": {f"s{i}": WEB_SPEC for i in range(MAX_GROUP_CHANGES + 1)}}


REFUSED: dict[str, dict[str, Any]] = {
    "too many groups": too_many_groups(),
    "a dependency cycle": {
        "deploy": {
            "a": {**WEB_SPEC, "dependencies": ["b"]},
            "b": {**WEB_SPEC, "dependencies": ["a"]},
        }
    },
    "an unknown dependency": {"deploy": {"a": {**WEB_SPEC, "dependencies": ["nowhere"]}}},
    "an invalid constraint": {"deploy": {"a": {**WEB_SPEC, "constraints": [["hostname", "NEAR"]]}}},
    "a removal that a remaining service needs": {"remove": {"db": {}}},
}


async def changes_of_groups(store: MemoryStore) -> list[Entry]:
    """What a deploy writes (groups, their versions and deployments), as the store holds it;
    the leader's own writes (tasks, the registry) go on meanwhile and are left out."""
    entries: list[Entry] = []
    for prefix in (keys.GROUPS, keys.VERSIONS, keys.DEPLOYMENTS):
        entries += (await store.load(prefix, prefix[:-1] + "0"))[1]
    return entries


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, MemoryStore]]:
    """A whole server (cache, leader, writer, routes) on one in-memory store."""
    store = MemoryStore()
    async with inprocess_api(store=store) as client:
        yield client, store


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_plan_refuses_exactly_what_deploy_refuses(
    api: tuple[httpx.AsyncClient, MemoryStore], case: str
) -> None:
    client, store = api
    needed = {"deploy": {"db": WEB_SPEC, "web": {**WEB_SPEC, "dependencies": ["db"]}}}
    assert (await client.post("/deploy", json=needed)).status_code == 200
    before = await changes_of_groups(store)
    planned = await client.post("/deploy", params={"dry_run": "true"}, json=REFUSED[case])
    applied = await client.post("/deploy", json=REFUSED[case])
    assert planned.status_code == applied.status_code
    assert planned.status_code in (413, 422)
    assert planned.json() == applied.json()
    assert planned.json()["message"]
    assert await changes_of_groups(store) == before, "a refused document must change nothing"


async def test_plan_accepts_what_deploy_accepts(api: tuple[httpx.AsyncClient, MemoryStore]) -> None:
    client, store = api
    document = {"deploy": {f"s{i}": WEB_SPEC for i in range(MAX_GROUP_CHANGES)}}
    planned = await client.post("/deploy", params={"dry_run": "true"}, json=document)
    assert planned.status_code == 200 and planned.json()["dry_run"] is True
    assert await changes_of_groups(store) == [], "a plan writes nothing"
    applied = await client.post("/deploy", json=document)
    assert applied.status_code == 200
    assert [c["action"] for c in applied.json()["changes"]] == ["created"] * MAX_GROUP_CHANGES
    key = GroupKey.of("s0", []).key
    assert json.loads(store.value(f"/theseus/groups/{key}") or b"{}")["service"] == "s0"


# --- agents' reports ------------------------------------------------------------------------


async def test_reports_are_answered_before_the_cache_applies_them_and_build_on_each_other(
    store: MemoryStore,
) -> None:
    """A report's request returns once etcd has its status, not once the cache has (which at
    5,000 nodes lagged seconds): here the cache follows nothing at all. The task's next
    report still builds on the status written before: ``started_at`` stays the first
    report's time, and ``was_healthy`` is kept."""
    cache = StateCache(store)  # never run: it stays behind every write
    task = make_task(make_group("web"), node="n1")
    cache.state.tasks[task.id] = task
    writer = Writer(store, cache, liveness_timeout=3)
    first = [TaskReport(task_id=task.id, state="running", container_id="c1", at=10.0)]
    healthy = [
        TaskReport(task_id=task.id, state="running", container_id="c1", healthy=True, at=20.0)
    ]
    again = [TaskReport(task_id=task.id, state="running", container_id="c1", at=30.0)]
    exchanges = [client_index.Exchange(asked=None) for _ in range(3)]
    written_counts = []
    for batch, exchange in zip((first, healthy, again), exchanges, strict=True):
        with client_index.handling(exchange):
            written_counts.append(await asyncio.wait_for(writer.record_reports(batch), 1.0))
    assert written_counts == [1, 1, 0]  # the third changes nothing: it is not written
    # Each answer that wrote carries the revision it wrote at (``theseus.api.peer_index``).
    assert [e.written for e in exchanges] == [store.revision - 1, store.revision, None]
    written = TaskStatus.model_validate_json(store.value(keys.STATUS + task.id) or b"")
    assert written.started_at == 10.0 and written.was_healthy
    assert written.healthy is True  # a re-report without a verdict keeps the last one
    assert task.id not in cache.state.statuses


async def test_a_client_that_reads_by_index_gets_its_write_answered_before_the_cache_has_it(
    store: MemoryStore,
) -> None:
    """With ``X-Theseus-Index`` (``server/client_index``) a group change is answered once etcd
    has it: here the cache follows nothing, and the answer still comes, with the revision it
    was committed at. Without the header, the same write waits for the cache."""
    cache = StateCache(store)  # never run: it stays behind every write
    writer = Writer(store, cache, liveness_timeout=3)

    def web(instances: int) -> Callable[[ClusterState], list[GroupChangePlan]]:
        return lambda state: [plan_group("web", make_spec(instances=instances), {}, 1.0)]

    exchange = client_index.Exchange(asked=0)
    with client_index.handling(exchange):
        await asyncio.wait_for(writer.apply_group_changes(web(1)), timeout=1.0)
    assert exchange.written == store.revision
    assert store.value(keys.group_key(WEB)) is not None
    assert cache.revision < store.revision
    without_index = asyncio.create_task(writer.apply_group_changes(web(2)))
    done, _ = await asyncio.wait([without_index], timeout=0.5)
    assert not done, "a write without an index did not wait for the cache"
    without_index.cancel()


async def test_a_persons_writes_are_committed_promptly_and_the_agents_are_not(
    store: MemoryStore,
) -> None:
    """A deploy or a node's control is a prompt commit (``Store.commit``: through etcd's HTTP
    gateway, half the rounds of a busy event loop); an agent's report, of which a deploy
    brings thousands, is not (the gateway costs etcd more)."""
    cache = StateCache(store)
    task = make_task(make_group("web"), node="n1")
    cache.state.tasks[task.id] = task
    writer = Writer(store, cache, liveness_timeout=3)
    change = lambda state: [plan_group("web", make_spec(instances=2), {}, 1.0)]  # noqa: E731
    with client_index.handling(client_index.Exchange(asked=0)):
        await asyncio.wait_for(writer.apply_group_changes(change), timeout=1.0)
    assert (store.prompt_commits, store.calls["commit"]) == (1, 1)
    report = [TaskReport(task_id=task.id, state="running", container_id="c1", at=10.0)]
    with client_index.handling(client_index.Exchange(asked=None)):
        assert await asyncio.wait_for(writer.record_reports(report), 1.0) == 1
    assert (store.prompt_commits, store.calls["commit"]) == (1, 2)
    cache_follows = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(writer.set_node_control("n1", None), timeout=1.0)
    finally:
        cache_follows.cancel()
    assert (store.prompt_commits, store.calls["commit"]) == (2, 3)


async def test_deciding_a_write_changes_nothing_in_the_state_it_reads(
    store: MemoryStore, cache: StateCache
) -> None:
    """The writer decides on the cache's own state, not on a copy (``Writer._apply``): every
    decision, of each kind of write, must leave that state as it was. Only etcd, through the
    cache's watch, changes it."""
    writer = Writer(store, cache, liveness_timeout=3)
    for instances in (2, 3):  # two versions: a rollback has one to go back to
        spec = make_spec(instances=instances, image=f"web:{instances}")
        await writer.apply_group_changes(
            lambda s, spec=spec: [plan_group("web", spec, s.groups, 1.0)]
        )
    state = cache.state
    group = state.groups[WEB]
    deployment = max(state.deployments.values(), key=lambda d: d.to_version)
    planners: list[Any] = [
        lambda s: [plan_group("web", make_spec(instances=4), s.groups, 5.0)],
        lambda s: [plan_group("api", make_spec(instances=1), s.groups, 5.0)],
        lambda s: [plan_scale(group, 7, 5.0)],
        lambda s: [plan_restart(group, 5.0)],
        lambda s: [plan_removal(group.group_key, s.groups)],
        lambda s: [rollback_change(s, group, previous_version(s, group), 5.0, "rollback")],
    ]
    for planner in planners:
        before = state.copy()
        decide_group_changes(planner, state, 5.0)
        assert state == before
    before = state.copy()
    cancel_writes(state, deployment.id, False, 5.0, lambda: "d-new")
    assert state == before
