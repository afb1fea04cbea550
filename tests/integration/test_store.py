"""The etcd adapter against a real etcd: guarded commits, range watch, shared lease stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.cluster import Cluster, new_cluster
from theseus.store.etcd import CreateRevisionIs, Delete, EtcdStore, ModRevisionIs, Put

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


async def test_guarded_commits_apply_atomically_or_not_at_all(etcd_only: Cluster) -> None:
    store = await connected(etcd_only)
    try:
        first = await store.commit(
            [Put("/t/a", b"1"), Put("/t/b", b"1")], [ModRevisionIs("/t/a", 0)]
        )
        assert first is not None
        stale = await store.commit([Put("/t/a", b"2"), Delete("/t/b")], [ModRevisionIs("/t/a", 0)])
        assert stale is None
        assert (await store.get("/t/a")).value == b"1"  # type: ignore[union-attr]
        assert await store.get("/t/b") is not None  # nothing of the refused commit applied
        entry = await store.get("/t/a")
        assert entry is not None
        ok = await store.commit(
            [Put("/t/a", b"3")], [CreateRevisionIs("/t/a", entry.create_revision)]
        )
        assert ok is not None and ok > first
    finally:
        await store.close()


async def test_range_watch_resumes_from_a_revision(etcd_only: Cluster) -> None:
    store = await connected(etcd_only)
    try:
        start = await store.commit([Put("/services/x", b"1")])
        assert start is not None
        await store.commit([Put("/theseus/y", b"2"), Put("/zzz", b"ignored")])
        seen = []
        async for change in store.watch("/services/", "/theseus0", start):
            seen.append((change.key, change.value))
            if len(seen) == 2:
                break
        assert seen == [("/services/x", b"1"), ("/theseus/y", b"2")]
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
