"""Rollout writes as etcd operations (``theseus.server.rollouts``), and the cache mirroring
them back into ``ClusterState.versions`` / ``deployments``."""

from __future__ import annotations

from typing import cast

from tests.kit.builders import make_spec
from theseus.model.state import ClusterState
from theseus.reconciler.deploy import plan_group, plan_removal
from theseus.reconciler.deployments import GroupWrite, group_writes, track
from theseus.server.rollouts import encode_writes
from theseus.store import keys
from theseus.store.cache import StateCache
from theseus.store.etcd import Change, Delete, EtcdStore, ModRevisionIs, Put

GROUP = 'web/["dev"]'


def commit(cache: StateCache, writes: list[GroupWrite]) -> list[ModRevisionIs]:
    """Encode, check the guards against the cache, and play the watch events back."""
    ops, guards = encode_writes(cache.state, writes)
    revision = cache.state.revision + 1
    for op in ops:
        value = op.value if isinstance(op, Put) else None
        assert isinstance(op, (Put, Delete))
        cache._apply(Change(op.key, value, revision, revision, 0))
    return cast(list[ModRevisionIs], guards)


def deploy(cache: StateCache, now: float, **spec: object) -> list[ModRevisionIs]:
    change = plan_group("web", make_spec(**spec), cache.state.groups, now)
    _, writes = group_writes(cache.state, [change], now)
    return commit(cache, writes)


def test_versions_and_deployments_round_trip_through_the_cache() -> None:
    cache = StateCache(cast(EtcdStore, None))
    guards = deploy(cache, 1.0, instances=1)
    state: ClusterState = cache.state
    [first] = state.deployments.values()
    assert {(g.key, g.revision) for g in guards} == {
        (keys.group_key(GROUP), 0),
        (keys.deployment_key(first.id), 0),
    }
    assert state.groups[GROUP].version_number == 1
    assert state.versions[GROUP][1].spec == state.groups[GROUP].spec
    guards = deploy(cache, 2.0, instances=2)
    # The API guards only what it writes: the group and its new deployment. The running one
    # is the leader's to end (it writes its progress; the two must not contend).
    assert {g.key for g in guards} == {keys.group_key(GROUP)} | {
        keys.deployment_key(d) for d in state.deployments if d != first.id
    }
    tracked = track(state, 2.5)
    assert ModRevisionIs(keys.deployment_key(first.id), 1) in commit(cache, tracked.writes)
    assert state.deployments[first.id].status == "superseded"
    assert state.deployment_revisions[first.id] == 3
    assert sorted(state.versions[GROUP]) == [1, 2]
    removal = plan_removal(state.groups[GROUP].group_key, state.groups)
    _, writes = group_writes(state, [removal], 3.0)
    commit(cache, writes)
    assert GROUP not in state.groups and GROUP not in state.versions
    commit(cache, track(state, 3.5).writes)
    assert all(not d.running for d in state.deployments.values())


def test_version_keys_parse_back() -> None:
    key = keys.version_key('web/["a/b","dev"]', 12)
    assert keys.parse_version_key(key) == ('web/["a/b","dev"]', 12)
    assert keys.parse_version_key(keys.VERSIONS + "junk") is None
