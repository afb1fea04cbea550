"""Admission of registrations (``theseus.server.admission``): the pure ``retry_after``, the
limit and the lag that refuse, and a whole in-process server answering 429 with Retry-After
while its registration places are taken, as heartbeats of registered nodes still pass."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.kit.app import inprocess_server
from tests.kit.wait import wait_until_async
from theseus.agent.backoff import retrying
from theseus.api.client import ApiError
from theseus.api.schemas import NodeRegistration
from theseus.server.admission import RETRY_MAX, Admission, Overloaded, retry_after
from theseus.server.config import ServerConfig
from theseus.store.memory import MemoryStore


def test_retry_after_is_the_time_to_finish_those_in_line() -> None:
    assert retry_after(0, 100.0) == 1  # never sooner than a second
    assert retry_after(500, 100.0) == 5
    assert retry_after(100, 0.0) == 5  # not measured yet: the assumed rate
    assert retry_after(10_000, 50.0) == RETRY_MAX


async def test_registrations_wait_in_line_then_are_turned_away_and_a_lag_refuses() -> None:
    lag = 0.0
    admission = Admission(loop_lag=lambda: lag, limit=2, max_waiting=1, queue_wait=0.2)
    held = asyncio.Event()
    release = asyncio.Event()

    async def register() -> None:
        async with admission.registration():
            held.set()
            await release.wait()

    first, second = asyncio.ensure_future(register()), asyncio.ensure_future(register())
    await wait_until_async(lambda: admission.in_progress == 2, 2, "both places held")
    in_line = asyncio.ensure_future(register())  # waits for a place...
    await wait_until_async(lambda: admission.waiting == 1, 2, "one in line")
    with pytest.raises(Overloaded, match="1 registrations are waiting") as refused:
        async with admission.registration():  # ...and the line is full
            pass
    assert refused.value.retry_after >= 1
    release.set()  # places free: the one in line gets one
    async with asyncio.timeout(2):
        await asyncio.gather(first, second, in_line)
    assert admission.in_progress == admission.waiting == 0
    # A line that does not move within queue_wait: turned away.
    release.clear()
    holders = [asyncio.ensure_future(register()) for _ in range(2)]
    await wait_until_async(lambda: admission.in_progress == 2, 2, "both places held")
    with pytest.raises(Overloaded):
        async with admission.registration():
            pass
    release.set()
    await asyncio.gather(*holders)
    lag = 2.0
    with pytest.raises(Overloaded, match="event loop is 2.0s behind"):
        async with admission.registration():
            pass


def registration(name: str, address: str) -> dict[str, object]:
    return {"name": name, "address": address, "agent_port": 5051, "cpus": 1, "mem": 512}


async def test_a_server_refuses_registrations_beyond_its_places_but_not_heartbeats() -> None:
    async with inprocess_server(ServerConfig(max_registering=2), MemoryStore()) as (app, api):
        answer = await api.post("/v1/agent/register", json=registration("steady", "127.0.0.2"))
        assert answer.status_code == 200, answer.text
        # Registrations of new nodes stay in progress (as when etcd is slow to take them).
        writer = app.state.ctx.writer
        register, release, held = writer._register_node, asyncio.Event(), []

        async def slow_register(node: NodeRegistration) -> object:
            held.append(node.name)
            await release.wait()
            return await register(node)

        writer._register_node = slow_register
        pending = [
            asyncio.ensure_future(
                api.post("/v1/agent/register", json=registration(f"n{i}", f"127.0.0.{3 + i}"))
            )
            for i in range(2)
        ]
        await wait_until_async(lambda: len(held) == 2, 5, "both registrations in progress")
        # Both places are taken; the registered node is kept alive all the same.
        beat = await api.post("/v1/agent/steady/heartbeat")
        assert beat.status_code == 200, beat.text
        refused = await api.post("/v1/agent/register", json=registration("n9", "127.0.0.9"))
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "registrations are waiting" in refused.json()["message"]  # after its 5 s in line
        release.set()
        answers: list[httpx.Response] = await asyncio.gather(*pending)
        assert [a.status_code for a in answers] == [200, 200]
        again = await api.post("/v1/agent/register", json=registration("n9", "127.0.0.9"))
        assert again.status_code == 200, again.text
        nodes = (await api.get("/v1/nodes")).json()["nodes"]
        assert sorted(n["name"] for n in nodes) == ["n0", "n1", "n9", "steady"]


async def test_an_agent_registers_again_after_the_time_a_429_said() -> None:
    tries: list[float] = []

    async def register() -> str:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) < 3:
            raise ApiError(429, "too many registrations", [], retry_after=0.2)
        return "registered"

    assert await retrying("register", register) == "registered"
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:], strict=False)]
    assert all(gap >= 0.1 - 0.01 for gap in gaps), gaps  # 0.2 s with jitter of ±50 %

    async def refused() -> str:
        raise ApiError(403, "not this node's certificate", [])

    with pytest.raises(ApiError):
        await retrying("register", refused)


async def test_a_lagging_loop_asks_for_a_short_wait_whatever_the_line() -> None:
    admission = Admission(loop_lag=lambda: 0.8, limit=2)
    admission.waiting = 1_000  # a long line: its time would be the maximum
    with pytest.raises(Overloaded) as refused:
        async with admission.registration():
            pass
    assert refused.value.retry_after == 2  # twice the lag, not the line's time
