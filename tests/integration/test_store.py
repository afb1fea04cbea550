"""The etcd adapter against a real etcd: the store contract (``tests/kit/store_contract.py``, which
``MemoryStore`` passes too), the shared lease keep-alive stream, and the watch read by a thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aetcd
import grpc  # type: ignore[import-untyped]
import pytest

from tests.kit.cluster import Cluster, new_cluster
from tests.kit.store_contract import CHECKS, Check
from theseus.store.etcd import EtcdStore, open_watch
from theseus.store.etcd_tls import parse_endpoint

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


WATCHED = 300  # revisions written while the loop is busy


async def test_the_watch_hands_over_at_once_what_arrived_while_the_loop_was_busy(
    etcd_only: Cluster,
) -> None:
    """The etcd watch is read by a thread of its own (``theseus.store.etcd_watch``): what
    arrived while the event loop was busy is taken whole in its next turn, where gRPC's
    asyncio API took two or three loop rounds per message. At 5,000 nodes that was the
    difference between a watch seconds behind etcd and one that keeps up with it."""
    address = f"127.0.0.1:{etcd_only.etcd_port}"
    writes = grpc.insecure_channel(address)
    kv = aetcd.rpc.KVStub(writes)
    first = kv.Put(aetcd.rpc.PutRequest(key=b"/busy/0", value=b"0")).header.revision
    stream = open_watch(parse_endpoint(address, None), None, "/busy/", "/busy0", first)
    changes = stream.changes()
    try:
        assert (await anext(changes)).key == "/busy/0"
        # From here on the loop is busy: this test writes, one revision each, then waits for
        # the watch's thread to have read them all, without giving the loop a turn.
        for number in range(1, WATCHED + 1):
            kv.Put(aetcd.rpc.PutRequest(key=f"/busy/{number}".encode(), value=b"x"))
        deadline = time.monotonic() + 10
        while stream.buffered < WATCHED:
            assert time.monotonic() < deadline, f"the thread read {stream.buffered}/{WATCHED}"
            time.sleep(0.005)  # noqa: ASYNC251 (the loop is meant to be busy here)
        rounds = 0

        def count_a_round() -> None:
            nonlocal rounds
            rounds += 1

        asyncio.get_running_loop().call_soon(count_a_round)  # runs at the loop's next round
        keys = [(await anext(changes)).key for _ in range(WATCHED)]
        assert rounds == 0, "the loop turned while the watch handed over what had arrived"
        assert keys == [f"/busy/{number}" for number in range(1, WATCHED + 1)]
    finally:
        await changes.aclose()
        writes.close()
    assert stream.join(timeout=5), "the watch's thread outlived its stream"
