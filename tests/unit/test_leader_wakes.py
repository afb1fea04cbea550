"""What wakes the leader for a pass (``theseus.store.key_roles.plans_from``, the cache's
``work_revision``): a change it plans from, not a live node's TTL changed, nor the registry,
nor the access keys, nor the servers' heard records. On the in-memory store."""

from __future__ import annotations

import asyncio
import time

from tests.kit.builders import make_group, make_node
from tests.kit.leader import commit_groups_and_live_node, make_leader
from tests.kit.wait import wait_until_async
from theseus.model import registry
from theseus.server.leader import TICK
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, node_put
from theseus.store.key_roles import plans_from
from theseus.store.memory import MemoryStore


def test_a_ttl_changed_the_registry_the_access_keys_and_heard_records_are_not_planned_from() -> (
    None
):
    assert not plans_from(keys.ALIVE + "n1", live_set_changed=False)
    assert not plans_from(keys.heard_key("host:5000"), live_set_changed=False)
    assert plans_from(keys.ALIVE + "n1", live_set_changed=True)  # a node joined or was lost
    assert not plans_from(registry.PREFIX + "web/x", live_set_changed=False)
    assert not plans_from(keys.ACL + "tokens/abc", live_set_changed=False)
    for key in (keys.TASKS + "t1", keys.STATUS + "t1", keys.NODES + "n1", keys.LEADER):
        assert plans_from(key, live_set_changed=False), key
    assert plans_from(keys.group_key("web"), live_set_changed=False)


async def test_the_cache_counts_a_new_live_node_as_work_and_its_new_ttl_not(
    store: MemoryStore, cache: StateCache
) -> None:
    node = make_node("n1")
    joined = await store.commit([node_put(node), alive_put(node.name, 0.0, 30)])
    assert joined is not None
    assert await cache.wait_for_work(joined - 1, timeout=5.0)
    assert cache.work_revision == joined
    # The heartbeat that gives the node a longer TTL (``Writer.heartbeat``).
    replaced = await store.commit([alive_put(node.name, 1.0, 90)])
    assert replaced is not None and await cache.wait_for_revision(replaced)
    assert cache.lease_ttls[node.name] == 90
    assert cache.work_revision == joined
    assert not await cache.wait_for_work(joined, timeout=0.05)
    entry = await store.commit([Put(registry.PREFIX + "web/x", b"{}")])
    assert entry is not None and await cache.wait_for_revision(entry)
    assert cache.work_revision == joined


async def test_ttls_changed_do_not_wake_the_leader(store: MemoryStore, cache: StateCache) -> None:
    """Twenty TTLs changed within about 0.5 s: each woke the leader for a pass before; now
    only its once-a-second tick runs one (``leader.TICK``)."""
    node = make_node("n1")
    await commit_groups_and_live_node(store, [make_group("web", instances=1)], node)
    leader, _ = make_leader(store, cache)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(lambda: len(cache.state.tasks) == 1, 10, "the task placed")
        before, started = leader.passes, time.monotonic()
        last = 0
        for ttl in range(31, 51):
            replaced = await store.commit([alive_put(node.name, 0.0, ttl)])
            assert replaced is not None
            last = replaced
            await asyncio.sleep(0.02)
        assert await cache.wait_for_revision(last)
        ticks = 1 + int((time.monotonic() - started) / TICK)  # a slow machine's extra ticks
        assert leader.passes - before <= ticks < 20
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
