"""``MemoryStore`` keeps the store contract (``tests/kit/store_contract.py``, which the
integration tests run against etcd too), and what tests do to it: leases that run out,
compaction, broken watches, failing and hanging calls."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.store_contract import CHECKS, Check
from theseus.store.base import HistoryCompacted, Put, StoreUnavailable
from theseus.store.memory import MemoryStore


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_the_store_contract(store: MemoryStore, check: Check) -> None:
    await check(store, "/contract/")


async def test_a_lease_not_refreshed_runs_out_with_its_keys() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(1)
    await store.commit([Put("/alive/n1", b"1", lease=lease)])
    watching = store.watch("/alive/", "/alive0", store.revision + 1)
    async with asyncio.timeout(3):
        gone = await anext(watching)
    assert gone.key == "/alive/n1" and gone.value is None
    assert await store.refresh_lease(lease) is False
    await watching.aclose()


async def test_compacted_history_and_broken_watches_are_said(store: MemoryStore) -> None:
    for i in range(3):
        await store.commit([Put(f"/k/{i}", b"1")])
    store.compact(2)
    with pytest.raises(HistoryCompacted):
        await anext(store.watch("/k/", "/k0", 2))
    watching = store.watch("/k/", "/k0", 3)
    assert (await anext(watching)).key == "/k/2"
    store.break_watches()
    with pytest.raises(StoreUnavailable):
        await anext(watching)


async def test_injected_failures_and_hangs(store: MemoryStore) -> None:
    store.faults.fail("commit", times=2)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.commit([Put("/x", b"1")])
    assert await store.commit([Put("/x", b"1")]) is not None
    store.faults.hang("get")
    hanging = asyncio.ensure_future(store.get("/x"))
    await store.faults.wait_hanging("get")
    assert not hanging.done()
    store.faults.heal()
    async with asyncio.timeout(1):
        entry = await hanging
    assert entry is not None and entry.value == b"1"
    with pytest.raises(ValueError, match="unknown store calls"):
        store.faults.fail("put")
