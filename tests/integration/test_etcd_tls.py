"""etcd authenticates its clients (issue 12, point 5), against real etcd members started with
TLS and ``--client-cert-auth`` through the launcher (``tests/kit/cluster.py``):

- the store contract holds over TLS, and the lease stream is shared there too;
- etcd refuses a client without a certificate (plain gRPC, TLS without a client certificate,
  HTTP), one whose certificate another CA signed, and the store refuses a member whose
  certificate it cannot verify;
- three members talk TLS to each other (peer client-cert auth), and the store fails over
  when the member it uses is killed: writes, leases and watches carry on on another member,
  and the killed member rejoins its peers when restarted;
- a real ``theseus server`` given ``--etcd-cacert/--etcd-cert/--etcd-key`` answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aetcd.rpc
import grpc
import httpx
import pytest

from tests.kit.cluster import Cluster, new_cluster
from tests.kit.store_contract import CHECKS, Check
from tests.kit.wait import wait_until, wait_until_async
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.security.files import PkiDir
from theseus.security.pki import Role, create_ca, issue
from theseus.security.tls import client_context
from theseus.store.base import Change, Put, StoreUnavailable
from theseus.store.etcd import EtcdStore
from theseus.store.etcd_tls import EtcdTls

pytestmark = pytest.mark.integration


def tls_cluster(root: Path) -> Cluster:
    pki = PkiDir(root / "pki")
    pki.write_ca(create_ca(root.name))
    cluster = new_cluster(root)
    cluster.use_etcd_tls(pki)
    return cluster


@pytest.fixture(scope="module")
def one_member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = tls_cluster(Path(tmp_path_factory.mktemp("etcd-tls")))
    try:
        cluster.start_etcd()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def three_members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = tls_cluster(Path(tmp_path_factory.mktemp("etcd-tls-3")))
    try:
        cluster.start_etcd_members(3)
        yield cluster
    finally:
        cluster.stop()


def credentials(cluster: Cluster) -> EtcdTls:
    assert cluster.etcd_tls is not None
    return EtcdTls.from_files(*cluster.etcd_tls)


async def connected(cluster: Cluster, timeout: int = 5) -> EtcdStore:
    store = EtcdStore(cluster.etcd_endpoints, timeout=timeout, tls=credentials(cluster))
    await store.connect()
    return store


# --- one member ---------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_the_store_contract_holds_over_tls(one_member: Cluster, check: Check) -> None:
    store = await connected(one_member)
    try:
        await check(store, f"/contract/{check.__name__}/")
    finally:
        await store.close()


async def test_lease_refreshes_share_one_stream_over_tls(one_member: Cluster) -> None:
    store = await connected(one_member)
    try:
        leases = [await store.grant_lease(5) for _ in range(20)]
        results = await asyncio.gather(*(store.refresh_lease(lease) for lease in leases * 5))
        assert all(results) and len(results) == 100
        await store.revoke_lease(leases[0])
        assert await store.refresh_lease(leases[0]) is False
    finally:
        await store.close()


async def refused(store: EtcdStore) -> str:
    """The error a store that etcd (or the store itself) refuses gets on connecting."""
    try:
        with pytest.raises(StoreUnavailable) as error:
            await store.connect()
            await store.get("/anything")
    finally:
        await store.close()
    return str(error.value)


async def test_a_plain_client_is_refused(one_member: Cluster) -> None:
    await refused(EtcdStore([f"127.0.0.1:{one_member.etcd_port}"], timeout=2))


async def test_a_tls_client_without_a_certificate_is_refused(one_member: Cluster) -> None:
    assert one_member.etcd_tls is not None
    ca = one_member.etcd_tls.cacert.read_bytes()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{one_member.etcd_port}", grpc.ssl_channel_credentials(root_certificates=ca)
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await aetcd.rpc.MaintenanceStub(channel).Status(aetcd.rpc.StatusRequest(), timeout=3)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


def test_its_http_side_refuses_a_client_without_a_certificate(one_member: Cluster) -> None:
    assert one_member.etcd_tls is not None
    no_cert = client_context(ca_pem=one_member.etcd_tls.cacert.read_bytes())
    url = f"https://127.0.0.1:{one_member.etcd_port}/health"
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=no_cert, timeout=3)
    assert (
        httpx.get(
            url,
            verify=client_context(PkiDir(one_member.etcd_tls.cacert.parent), "etcd-client"),
            timeout=3,
        ).status_code
        == 200
    )


async def test_a_certificate_from_another_ca_is_refused(one_member: Cluster) -> None:
    other = issue(create_ca("other"), name="etcd-client", role=Role.CLIENT, addresses=[], days=1)
    ours = credentials(one_member)
    await refused(EtcdStore(one_member.etcd_endpoints, timeout=2, tls=EtcdTls(ours.ca, *other)))


async def test_the_store_refuses_a_member_it_cannot_verify(one_member: Cluster) -> None:
    """Mutual: a client trusting another CA does not talk to our member."""
    ours = credentials(one_member)
    other_ca = create_ca("other").cert
    tls = EtcdTls(other_ca, ours.cert, ours.key)
    await refused(EtcdStore(one_member.etcd_endpoints, timeout=2, tls=tls))


# --- three members ------------------------------------------------------------------------


async def test_three_tls_members_fail_over_with_writes_leases_and_watches(
    three_members: Cluster,
) -> None:
    cluster = three_members
    store = await connected(cluster, timeout=3)
    try:
        start = await store.commit([Put("/ha/before", b"1")])
        assert start is not None
        # A prompt commit (through the member's HTTP gateway) keeps its connection open:
        # after the kill it is the first to find the member gone.
        assert await store.commit([Put("/ha/prompt", b"1")], prompt=True) is not None
        lease = await store.grant_lease(30)
        used = store.endpoint
        victim = next(n for n, port in cluster.etcd_members.items() if used.endswith(f":{port}"))
        cluster.kill(victim)

        async def written() -> int | None:
            try:
                return await store.commit([Put("/ha/after", b"2")], prompt=True)
            except StoreUnavailable:
                return None

        await wait_until_async(written, 20, "a prompt write through another member", 0.1)
        assert store.endpoint != used, "the store moved to another member"
        after = await store.commit([Put("/ha/after", b"3")])  # and gRPC's commits with it
        assert after is not None
        assert await store.refresh_lease(lease) is True  # the lease belongs to the cluster
        seen: list[Change] = []
        async with asyncio.timeout(10):
            async for change in store.watch("/ha/", "/ha0", start):
                seen.append(change)
                if change.revision == after:
                    break
        keys = [c.key for c in seen]
        assert keys[:2] == ["/ha/before", "/ha/prompt"] and set(keys[2:]) == {"/ha/after"}
    finally:
        await store.close()
    # The killed member rejoins its peers over TLS, and serves clients again.
    cluster.restart(victim)
    cluster.wait_etcd_member(victim)
    member = f"https://127.0.0.1:{cluster.etcd_members[victim]}"
    alone = EtcdStore([member], tls=credentials(cluster))
    try:
        entry = await wait_until_async(
            lambda: alone.get("/ha/after"), 20, f"{victim} to catch up", 0.1
        )
        assert entry is not None and entry.value == b"3"
    finally:
        await alone.close()


def health(url: str) -> bool:
    try:
        with ServerClient(url, timeout=2.0) as client:
            return client.health().leader
    except (ServerUnreachable, ApiError):
        return False


def test_a_server_with_the_tls_flags_answers(three_members: Cluster) -> None:
    three_members.start_server()  # waits for /v1/health; the server stops with the fixture
    argv = three_members.processes["server"].argv
    endpoints = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--etcd"]
    assert len(endpoints) == 3 and all(e.startswith("https://") for e in endpoints)
    assert {"--etcd-cacert", "--etcd-cert", "--etcd-key"} <= set(argv)
    wait_until(lambda: health(three_members.server_url), 20, "the server to lead")
    with ServerClient(three_members.server_url) as client:
        assert client.health().cluster_id


def test_peers_refuse_a_client_without_a_member_certificate(three_members: Cluster) -> None:
    """Raft traffic is TLS with client certificates too (``--peer-client-cert-auth``)."""
    argv = three_members.processes["etcd-1"].argv
    peer = argv[argv.index("--listen-peer-urls") + 1]
    assert three_members.etcd_tls is not None and peer.startswith("https://")
    pki = PkiDir(three_members.etcd_tls.cacert.parent)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{peer}/members", verify=client_context(ca_pem=pki.read_ca()), timeout=3)
    as_peer = client_context(pki, "etcd-etcd-2")
    assert httpx.get(f"{peer}/members", verify=as_peer, timeout=3).status_code == 200
