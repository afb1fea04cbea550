"""Malformed query parameters of the server's long-polls get a clear 4xx naming the
parameter, never a 500 nor a wait that never ends (found by the API fuzzer,
``tests/integration/test_api_fuzz.py``)."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.app import inprocess_api

SERVICES = "services: give one or more service names, comma-separated"


@pytest.mark.parametrize("services", ["", " , ", ","])
async def test_a_registry_watch_of_no_service_is_a_400_naming_services(services: str) -> None:
    async with inprocess_api() as client:
        answer = await client.get(
            "/v1/registry/watch", params={"index": "10172", "services": services}
        )
    assert (answer.status_code, answer.json()) == (400, {"message": SERVICES, "details": []})


@pytest.mark.parametrize(
    "path", ["/v1/registry/watch?services=web", "/v1/agent/node-1/assignments?"]
)
@pytest.mark.parametrize("wait", ["nan", "inf", "-inf"])
async def test_a_wait_that_is_not_a_finite_number_is_a_422_naming_wait(
    path: str, wait: str
) -> None:
    async with inprocess_api() as client:
        # NaN made the wait spin without yielding: the server's whole loop stalled.
        answer = await asyncio.wait_for(client.get(f"{path}&index=1&wait={wait}"), 10)
    assert answer.status_code == 422
    assert answer.json()["details"] == [
        {"path": "query.wait", "message": "Input should be a finite number"}
    ]


async def test_a_wait_out_of_bounds_is_clamped() -> None:
    async with inprocess_api() as client:
        answer = await client.get("/v1/registry/watch?services=web&index=1&wait=-5")
    assert answer.status_code == 200
    assert answer.json()["services"] == {"web": []}
