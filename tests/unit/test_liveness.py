"""Node liveness without a lease per node (``theseus.server.liveness``): each server writes
the nodes it heard, every cache marks them heard, and the leader deletes the ``alive`` key of
a node no server heard for its TTL. On the in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.builders import make_group, make_node
from tests.kit.leader import make_leader
from tests.kit.wait import wait_until_async
from theseus.api.schemas import NodeRegistration
from theseus.server.liveness import HeardReporter, lost_nodes
from theseus.server.writes import Writer
from theseus.store import keys
from theseus.store.base import Put, StoreUnavailable
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, encode, node_put
from theseus.store.heard import heard_nodes, heard_value
from theseus.store.memory import MemoryStore


def ttl_of(node: str) -> int:
    return {"big": 30}.get(node, 3)


def test_a_node_unheard_for_its_ttl_is_lost_and_one_heard_within_it_is_not() -> None:
    heard = {"quiet": 96.0, "chatty": 99.5, "big": 80.0}
    lost = lost_nodes(["quiet", "chatty", "big"], heard, ttl_of, 100.0, 0.0, grace=4.0)
    assert lost == ["quiet"]  # 4 s unheard, TTL 3; big has 30
    # Never heard (alive before the election): counted from the floor.
    assert lost_nodes(["new"], {}, ttl_of, 100.0, heard_floor=98.0, grace=0.0) == []
    assert lost_nodes(["new"], {}, ttl_of, 101.5, heard_floor=98.0, grace=0.0) == ["new"]


def test_nothing_is_lost_within_the_grace_of_an_election_or_a_stall() -> None:
    heard = {"quiet": 10.0}
    # Leading since 95 (or stalled until then): the node's silence before counts from 95.
    assert lost_nodes(["quiet"], heard, ttl_of, 98.9, heard_floor=95.0, grace=4.0) == []
    assert lost_nodes(["quiet"], heard, ttl_of, 99.5, heard_floor=95.0, grace=4.0) == ["quiet"]


def test_a_heard_record_is_a_list_of_names_and_anything_else_is_refused() -> None:
    assert heard_nodes(heard_value({"b", "a"})) == ["a", "b"]
    for bad in (b'{"a": 1}', b"[1]", b"nope"):
        with pytest.raises(ValueError):
            heard_nodes(bad)


async def test_the_nodes_a_server_heard_reach_every_cache(
    store: MemoryStore, cache: StateCache
) -> None:
    alive = await store.commit([alive_put("n1", 0.0, 3)])
    assert alive is not None and await cache.wait_for_revision(alive)
    first = cache.heard.at["n1"]  # written: a sign of life
    assert cache.heard.alive_revisions["n1"] == alive
    reporter = HeardReporter(store, "host:5000")
    await reporter.heard("n1")
    assert heard_nodes(store.value(keys.heard_key("host:5000")) or b"") == ["n1"]
    await wait_until_async(lambda: cache.heard.at["n1"] > first, 5, "n1 heard again")
    gone = await store.commit([Put(keys.alive_key("n1"), b"")])  # any write of the key...
    assert gone is not None and await cache.wait_for_revision(gone)
    assert cache.heard.alive_revisions["n1"] == gone  # ...is the revision that guards it


async def test_heartbeats_share_a_record_and_are_answered_once_etcd_has_it(
    store: MemoryStore,
) -> None:
    reporter = HeardReporter(store, "host:5000")
    await asyncio.gather(*(reporter.heard(f"n{i}") for i in range(50)))
    assert store.calls["commit"] == store.prompt_commits == 1  # heartbeats wait on it
    assert len(heard_nodes(store.value(keys.heard_key("host:5000")) or b"")) == 50
    store.faults.fail("commit", times=1)
    with pytest.raises(StoreUnavailable):  # not in etcd: not answered with success
        await asyncio.gather(reporter.heard("n1"), reporter.heard("n2"))
    await reporter.heard("n3")  # the next record is written as ever
    assert heard_nodes(store.value(keys.heard_key("host:5000")) or b"") == ["n3"]


async def test_a_heartbeat_whose_agent_hung_up_leaves_the_others_answered(
    store: MemoryStore,
) -> None:
    reporter = HeardReporter(store, "host:5000")
    store.faults.hang("commit")
    gone = asyncio.ensure_future(reporter.heard("n1"))
    stays = asyncio.ensure_future(reporter.heard("n2"))
    await store.faults.wait_hanging("commit")
    gone.cancel()
    store.faults.heal()
    await stays
    assert heard_nodes(store.value(keys.heard_key("host:5000")) or b"") == ["n1", "n2"]


async def test_a_heartbeat_to_a_server_cut_off_from_etcd_fails(
    store: MemoryStore, cache: StateCache
) -> None:
    writer = Writer(store, cache, 3, heard=HeardReporter(store, "host:5000"))
    await writer.register_node(
        NodeRegistration(name="n1", address="127.0.0.2", agent_port=5051, cpus=1, mem=512)
    )
    assert await writer.heartbeat("n1") is not None
    store.faults.fail("commit")
    with pytest.raises(StoreUnavailable):
        await writer.heartbeat("n1")


async def test_the_leader_deletes_the_alive_key_of_a_node_no_server_heard(
    store: MemoryStore, cache: StateCache
) -> None:
    group = make_group("web", instances=2)
    written = await store.commit(
        [
            Put(keys.group_key(group.group_key.key), encode(group)),
            *(node_put(make_node(name)) for name in ("chatty", "quiet")),
            *(alive_put(name, 0.0, 1) for name in ("chatty", "quiet")),
        ]
    )
    assert written is not None and await cache.wait_for_revision(written)
    reporter = HeardReporter(store, "host:5000")
    leader, metrics = make_leader(store, cache)
    running = asyncio.create_task(leader.run())

    async def heartbeats() -> None:
        while True:
            await reporter.heard("chatty")
            await asyncio.sleep(0.2)

    beating = asyncio.create_task(heartbeats())
    try:
        await wait_until_async(lambda: "quiet" not in cache.state.alive, 10, "quiet lost")
        assert "chatty" in cache.state.alive
        assert metrics.registry.get_sample_value("theseus_nodes_declared_lost_total") == 1
        # Its tasks go to the node still heard.
        await wait_until_async(
            lambda: (
                {t.node for t in cache.state.tasks.values() if t.desired == "run"} == {"chatty"}
            ),
            10,
            "every task on chatty",
        )
    finally:
        beating.cancel()
        running.cancel()
        await asyncio.gather(beating, running, return_exceptions=True)


async def test_a_node_that_registered_again_keeps_its_alive_key(
    store: MemoryStore, cache: StateCache
) -> None:
    """The leader's deletion is guarded by the key's revision as its cache saw it: a
    registration written in between (here, the cache's revision of the key differs from
    etcd's) refuses it."""
    written = await store.commit([node_put(make_node("n1")), alive_put("n1", 0.0, 1)])
    assert written is not None and await cache.wait_for_revision(written)
    leader, metrics = make_leader(store, cache)
    cache.heard.alive_revisions["n1"] = written + 1
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(lambda: store.refused > 0, 10, "the deletion refused")
        assert "n1" in cache.state.alive
        assert metrics.registry.get_sample_value("theseus_nodes_declared_lost_total") == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_heartbeat_answered_after_the_leader_looked_keeps_its_node(
    store: MemoryStore, cache: StateCache
) -> None:
    """The deletion is guarded by every heard record's revision as the cache has it too: a
    record written since (here, one the cache's revision of it is older than) refuses it."""
    written = await store.commit([node_put(make_node("n1")), alive_put("n1", 0.0, 1)])
    record = await store.commit([Put(keys.heard_key("other:5000"), heard_value({"n2"}))])
    assert written is not None and record is not None
    assert await cache.wait_for_revision(record)
    leader, metrics = make_leader(store, cache)
    cache.heard.record_revisions[keys.heard_key("other:5000")] = record - 1
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(lambda: store.refused > 0, 10, "the deletion refused")
        assert "n1" in cache.state.alive
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
