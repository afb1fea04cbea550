"""Rollout writes as store operations (``theseus.store.encoding``), committed to the in-memory
store, and the cache mirroring them back into ``ClusterState.versions`` / ``deployments``."""

from __future__ import annotations

from tests.kit.builders import make_spec
from theseus.model.state import ClusterState
from theseus.reconciler.deploy import plan_group, plan_removal
from theseus.reconciler.deployments import GroupWrite, group_writes, track
from theseus.store import keys
from theseus.store.base import Guard
from theseus.store.cache import StateCache
from theseus.store.commit import single
from theseus.store.encoding import encode_group_writes
from theseus.store.memory import MemoryStore

GROUP = 'web/["dev"]'


async def commit(store: MemoryStore, cache: StateCache, writes: list[GroupWrite]) -> list[Guard]:
    """Encode as one transaction, commit it (its guards must hold) and wait for the cache."""
    txn = single(encode_group_writes(cache.state, writes))
    assert txn is not None
    revision = await store.commit(txn.ops, txn.guards)
    assert revision is not None, "a guard did not hold"
    await cache.wait_for_revision(revision)
    return list(txn.guards)


async def deploy(store: MemoryStore, cache: StateCache, now: float, **spec: object) -> list[Guard]:
    change = plan_group("web", make_spec(**spec), cache.state.groups, now)
    _, writes = group_writes(cache.state, [change], now)
    return await commit(store, cache, writes)


async def test_versions_and_deployments_round_trip_through_the_cache(
    store: MemoryStore, cache: StateCache
) -> None:
    guards = await deploy(store, cache, 1.0, instances=1)
    state: ClusterState = cache.state
    [first] = state.deployments.values()
    assert {(g.key, g.revision) for g in guards} == {
        (keys.group_key(GROUP), 0),
        (keys.deployment_key(first.id), 0),
    }
    assert state.groups[GROUP].version_number == 1
    assert state.versions[GROUP][1].spec == state.groups[GROUP].spec
    guards = await deploy(store, cache, 2.0, instances=2)
    # The API guards only what it writes: the group and its new deployment. The running one
    # is the leader's to end (it writes its progress; the two must not contend).
    assert {g.key for g in guards} == {keys.group_key(GROUP)} | {
        keys.deployment_key(d) for d in state.deployments if d != first.id
    }
    tracked = track(state, 2.5)
    guards = await commit(store, cache, tracked.writes)
    assert (keys.deployment_key(first.id), 1) in {(g.key, g.revision) for g in guards}
    assert state.deployments[first.id].status == "superseded"
    assert state.deployment_revisions[first.id] == 3
    assert sorted(state.versions[GROUP]) == [1, 2]
    removal = plan_removal(state.groups[GROUP].group_key, state.groups)
    _, writes = group_writes(state, [removal], 3.0)
    await commit(store, cache, writes)
    assert GROUP not in state.groups and GROUP not in state.versions
    await commit(store, cache, track(state, 3.5).writes)
    assert all(not d.running for d in state.deployments.values())


def test_version_keys_parse_back() -> None:
    key = keys.version_key('web/["a/b","dev"]', 12)
    assert keys.parse_version_key(key) == ('web/["a/b","dev"]', 12)
    assert keys.parse_version_key(keys.VERSIONS + "junk") is None
