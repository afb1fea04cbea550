"""The etcd adapter against a real etcd: the store contract (``tests/kit/store_contract.py``, which
``MemoryStore`` passes too) and the shared lease keep-alive stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.cluster import Cluster, new_cluster
from tests.kit.store_contract import CHECKS, Check
from theseus.store.etcd import EtcdStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = new_cluster(Path(tmp_path_factory.mktemp("etcd-only")))
    try:
        cluster.start_etcd()
        yield cluster
    finally:
        cluster.stop()


async def connected(cluster: Cluster) -> EtcdStore:
    store = EtcdStore([f"127.0.0.1:{cluster.etcd_port}"])
    await store.connect()
    return store


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_the_store_contract(etcd_only: Cluster, check: Check) -> None:
    """The checks ``MemoryStore`` passes in the unit tests, against the real thing."""
    store = await connected(etcd_only)
    try:
        await check(store, f"/contract/{check.__name__}/")
    finally:
        await store.close()


async def test_lease_refreshes_share_one_stream_and_report_expiry(etcd_only: Cluster) -> None:
    store = await connected(etcd_only)
    try:
        leases = [await store.grant_lease(5) for _ in range(50)]
        results = await asyncio.gather(*(store.refresh_lease(lease) for lease in leases * 6))
        assert all(results) and len(results) == 300
        await store.revoke_lease(leases[0])
        assert await store.refresh_lease(leases[0]) is False
        assert await store.refresh_lease(leases[1]) is True
    finally:
        await store.close()
