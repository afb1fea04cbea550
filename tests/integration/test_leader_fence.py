"""A stale leader cannot write: against a real etcd, a leader deposed behind its back (its
lease gone while its keep-alive and its watch hang) still believes it leads, and etcd refuses
its commit because the fence (the create revision of its leader key) no longer holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.cluster import Cluster, new_cluster
from tests.kit.wait import wait_until_async
from theseus.reconciler.reconcile import Plan
from theseus.server.leader import Leader
from theseus.store import keys
from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore
from theseus.store.leadership import Leadership

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = new_cluster(Path(tmp_path_factory.mktemp("fence")))
    try:
        cluster.start_etcd()
        yield cluster
    finally:
        cluster.stop()


class StuckLeadership(Leadership):
    """A leadership whose lease keep-alive hangs (a partition, a long pause): nothing tells
    it that its lease is gone."""

    async def keep_alive(self, lease: int, granted: float) -> None:
        await asyncio.Event().wait()


async def cancel(tasks: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
    """Cancel and wait; again if need be (on Python 3.11, ``asyncio.wait_for`` can swallow a
    cancellation that coincides with its result; library code may still use it)."""
    pending = set(tasks)
    for _ in range(5):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=2)
        if not pending:
            break
    return pending


async def test_a_deposed_leader_that_believes_it_leads_cannot_write(etcd_only: Cluster) -> None:
    endpoint = [f"127.0.0.1:{etcd_only.etcd_port}"]
    store_a, store_b = EtcdStore(endpoint), EtcdStore(endpoint)
    await store_a.connect()
    await store_b.connect()
    cache_a, cache_b = StateCache(store_a), StateCache(store_b)
    stale = Leader(store_a, cache_a, StuckLeadership(store_a, cache_a, "a"))
    current = Leader(store_b, cache_b, Leadership(store_b, cache_b, "b"))
    tasks = {
        "cache-a": asyncio.create_task(cache_a.run()),
        "cache-b": asyncio.create_task(cache_b.run()),
        "a": asyncio.create_task(stale.run()),
    }
    try:
        await wait_until_async(lambda: stale.is_leader, 10, "a leads", interval=0.05)
        tasks.pop("cache-a").cancel()  # a's watch hangs too: its view stays as it is

        # etcd drops a's lease (as when it expires) and with it the leader key; b is elected.
        entry = await store_b.get(keys.LEADER)
        assert entry is not None and entry.value == b"a"
        await store_b.revoke_lease(entry.lease)
        tasks["b"] = asyncio.create_task(current.run())
        await wait_until_async(lambda: current.is_leader, 10, "b leads", interval=0.05)
        assert stale.is_leader, "the stale leader still believes it leads"

        key = "/services/fenced/[]/containers/fenced.1/info"
        plan = Plan(registry_puts={key: b'{"written_by": "a stale leader"}'})
        assert await stale.commit(plan) is None, "etcd took the stale leader's write"
        assert await store_b.get(key) is None
        # The same write from the current leader goes through: the refusal is the fence's.
        assert await current.commit(plan) is not None
    finally:
        pending = await cancel(list(tasks.values()))
        await store_a.close()
        await store_b.close()
        assert not pending, f"cancelled tasks still run: {pending}"
