"""What the agent's client puts on the wire (``AsyncServerClient._send`` hands requests to the
transport past ``httpx.AsyncClient``): its token, httpx's default headers, each call's
timeout, its parameters and body; and that an answer's body is read before it returns."""

from __future__ import annotations

import json

import httpx
import pytest

from theseus.api.agent_client import HEARTBEAT_FAILOVER_TIMEOUT, AsyncServerClient
from theseus.api.client import ApiError
from theseus.api.schemas import NodeUsage

A, B = "http://a:5000", "http://b:5001"
HEARTBEAT = {"ok": True, "heartbeat_interval": 10.0, "liveness_timeout": 30}
NO_TASKS = {"node": "n1", "index": 7, "tasks": []}


class Recorder:
    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer


def client(recorder: Recorder, addresses: str | list[str] = A) -> AsyncServerClient:
    return AsyncServerClient(
        addresses, timeout=7.0, transport=httpx.MockTransport(recorder), token="s3cret"
    )


def timeouts(request: httpx.Request) -> set[float]:
    return set(request.extensions["timeout"].values())


@pytest.mark.asyncio
async def test_a_heartbeat_carries_the_token_the_default_headers_and_the_client_timeout() -> None:
    recorder = Recorder(httpx.Response(200, json=HEARTBEAT))
    answer = await client(recorder).heartbeat("n1")
    assert answer.heartbeat_interval == 10.0
    (request,) = recorder.requests
    assert request.method == "POST" and str(request.url) == f"{A}/v1/agent/n1/heartbeat"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["user-agent"].startswith("python-httpx/")
    assert request.headers["accept-encoding"]
    assert timeouts(request) == {7.0}
    assert request.content == b""  # no usage: no body, as from older agents


@pytest.mark.asyncio
async def test_with_several_servers_a_heartbeat_gives_up_sooner() -> None:
    recorder = Recorder(httpx.Response(200, json=HEARTBEAT))
    usage = NodeUsage(time=1.0, cpu_cores=0.5, memory_bytes=64, tasks=1)
    await client(recorder, [A, B]).heartbeat("n1", usage)
    (request,) = recorder.requests
    assert timeouts(request) == {HEARTBEAT_FAILOVER_TIMEOUT}
    assert json.loads(request.content)["usage"]["tasks"] == 1


@pytest.mark.asyncio
async def test_a_long_poll_sends_its_parameters_and_waits_past_its_wait() -> None:
    recorder = Recorder(httpx.Response(200, json=NO_TASKS))
    answer = await client(recorder).assignments("n1", index=3, wait=30.0)
    assert answer.index == 7
    (request,) = recorder.requests
    assert request.url.params == httpx.QueryParams({"index": "3", "wait": "30.0"})
    assert timeouts(request) == {40.0}


@pytest.mark.asyncio
async def test_an_error_answer_is_read_and_raised_with_its_message() -> None:
    recorder = Recorder(httpx.Response(409, json={"message": "node is draining"}))
    with pytest.raises(ApiError) as raised:
        await client(recorder).heartbeat("n1")
    assert raised.value.status == 409 and "draining" in str(raised.value)
