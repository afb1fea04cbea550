"""Client failover between several servers: the pure order (``ServerList``) and both clients
against fake servers behind an ``httpx.MockTransport``."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from theseus.api.agent_client import AsyncServerClient
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.api.failover import ServerList, parse_addresses

A, B, C = "http://a:5000", "http://b:5001", "http://c:5002"
HEALTH = {"leader": False, "revision": 7, "cluster_id": "c1"}


def test_addresses_parse_from_lists_and_comma_separated_strings() -> None:
    assert parse_addresses(f"{A}, {B}/,{A}") == [A, B]
    assert parse_addresses([A, f"{B},{C}"]) == [A, B, C]
    assert parse_addresses("127.0.0.1:5000") == ["http://127.0.0.1:5000"]
    with pytest.raises(ValueError):
        parse_addresses(" , ")


def test_the_order_starts_at_the_current_server_and_moves_on_only_from_it() -> None:
    servers = ServerList([A, B, C])
    assert servers.attempts() == [A, B, C]
    servers.failed(A)
    assert servers.current == B and servers.attempts() == [B, C, A]
    servers.failed(A)  # a late failure of a call that started on A: already moved on
    assert servers.current == B
    servers.worked(C)
    assert servers.attempts() == [C, A, B]
    servers.failed(C)
    assert servers.current == A  # wraps around


Handler = Callable[[httpx.Request], httpx.Response]


class FakeServers:
    """Each host answers through its own handler; records which hosts were asked."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.host}:{request.url.port}"
        self.asked.append(host)
        return self.handlers[host](request)


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def healthy(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=HEALTH)


def no_etcd(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"message": "etcd unavailable: no leader", "details": []})


def client(fake: FakeServers, addresses: str | list[str]) -> ServerClient:
    return ServerClient(addresses, transport=httpx.MockTransport(fake))


def test_a_dead_server_is_skipped_and_the_client_stays_with_the_next() -> None:
    fake = FakeServers({A: down, B: healthy})
    with client(fake, f"{A},{B}") as c:
        assert c.health().cluster_id == "c1"
        assert c.health().cluster_id == "c1"
        assert c.address == B
    assert fake.asked == [A, B, B]  # A was tried once, then the client stayed with B


def test_a_server_without_etcd_hands_over_to_the_next() -> None:
    fake = FakeServers({A: no_etcd, B: healthy})
    with client(fake, [A, B]) as c:
        assert c.health().revision == 7
    assert fake.asked == [A, B]


def test_a_refusal_is_an_answer_not_a_failure() -> None:
    fake = FakeServers(
        {A: lambda r: httpx.Response(404, json={"message": "no task x"}), B: healthy}
    )
    with client(fake, [A, B]) as c, pytest.raises(ApiError) as caught:
        c.task("x")
    assert caught.value.status == 404
    assert fake.asked == [A]


def test_when_no_server_answers_the_error_names_them_all() -> None:
    fake = FakeServers({A: down, B: down})
    with client(fake, [A, B]) as c, pytest.raises(ServerUnreachable) as caught:
        c.health()
    assert caught.value.address == f"{A},{B}"
    assert fake.asked == [A, B]


def test_when_every_server_lost_etcd_the_last_answer_is_raised() -> None:
    fake = FakeServers({A: down, B: no_etcd})
    with client(fake, [A, B]) as c, pytest.raises(ApiError) as caught:
        c.health()
    assert caught.value.status == 503 and "etcd unavailable" in caught.value.message


def test_one_server_behaves_as_before() -> None:
    fake = FakeServers({A: no_etcd})
    with client(fake, A) as c, pytest.raises(ApiError):
        c.health()
    assert fake.asked == [A]


def test_a_deploy_is_sent_again_to_the_next_server() -> None:
    bodies: list[bytes] = []

    def accept(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"result": {"status": 200}, "changes": []})

    fake = FakeServers({A: down, B: accept})
    with client(fake, [A, B]) as c:
        c.deploy("deploy: {}")
    assert bodies == [b"deploy: {}"]


def test_log_streams_fail_over_before_the_first_line() -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"one\ntwo\n")

    fake = FakeServers({A: down, B: logs})
    with client(fake, [A, B]) as c:
        assert list(c.logs("t.1")) == ["one", "two"]
        assert c.address == B


async def test_the_async_client_fails_over_and_stays() -> None:
    fake = FakeServers({A: down, B: no_etcd, C: healthy})
    c = AsyncServerClient([A, B, C], transport=httpx.MockTransport(fake))
    try:
        await c.heartbeat("node-1")
        await c.heartbeat("node-1")
    finally:
        await c.aclose()
    assert fake.asked == [A, B, C, C]
    assert c.address == C


async def test_the_async_client_raises_when_no_server_answers() -> None:
    fake = FakeServers({A: down, B: down})
    c = AsyncServerClient(f"{A},{B}", transport=httpx.MockTransport(fake))
    try:
        with pytest.raises(ServerUnreachable):
            await c.heartbeat("node-1")
    finally:
        await c.aclose()


def cut_off(request: httpx.Request) -> httpx.Response:
    """The request was sent; the server died before it answered."""
    raise httpx.RemoteProtocolError("server disconnected without a response", request=request)


def rolled_back(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"result": {"status": 200}, "changes": []})


def test_a_rollback_to_the_previous_version_is_never_sent_twice() -> None:
    fake = FakeServers({A: cut_off, B: rolled_back})
    with client(fake, [A, B]) as c, pytest.raises(ServerUnreachable):
        c.rollback("web")  # A may have rolled back already: B would go one further
    assert fake.asked == [A]
    fake = FakeServers({A: down, B: rolled_back})
    with client(fake, [A, B]) as c:
        c.rollback("web")  # A was never reached: B may do it
    assert fake.asked == [A, B]
    fake = FakeServers({A: cut_off, B: rolled_back})
    with client(fake, [A, B]) as c:
        c.rollback("web", version=3)  # to a named version: the same result twice over
    assert fake.asked == [A, B]


async def test_the_async_client_does_not_resend_a_cancel_either() -> None:
    fake = FakeServers({A: cut_off, B: rolled_back})
    async_client = AsyncServerClient([A, B], transport=httpx.MockTransport(fake))
    try:
        with pytest.raises(ServerUnreachable):
            await async_client.cancel_deployment("d-1")
    finally:
        await async_client.aclose()
    assert fake.asked == [A]
