"""The agent's stats routes and ``/metrics`` over its app (ASGI, no network): the wire form,
the bad parameters, the cAdvisor-named families through Prometheus' own parser, and, in a
secure cluster, that only a server's certificate reads them (as the logs)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

from theseus.agent.drivers.base import Owner
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.http import Metrics, create_app
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.agent.stats.prometheus import TaskMetrics
from theseus.agent.stats.samples import (
    Reading,
    SampleStore,
    TaskMeta,
    TaskSample,
    Usage,
)
from theseus.api.agent_client import AsyncServerClient
from theseus.api.schemas import StatsList, TaskStats
from theseus.security.pki import Identity, Role

MiB = 1024 * 1024


def store_with_tasks() -> SampleStore:
    store = SampleStore(capacity=10)
    web = TaskMeta("web.1", "web", "web:prod", ("prod", "eu"))
    for at, cpu in ((100.0, 1.0), (110.0, 6.0)):
        reading = Reading(
            cpu_seconds=cpu,
            cpu_periods=10,
            cpu_throttled_periods=5,
            memory_usage_bytes=80 * MiB,
            memory_working_set_bytes=64 * MiB,
            memory_limit_bytes=128 * MiB,
            oom_kills=0,
            processes=2,
            network_rx_bytes=1000,
        )
        store.record(web, TaskSample(at, Usage(0.5 if at > 100 else None, reading)))
    pod = TaskMeta("pod.1", "pod", "pod:")
    app = Usage(0.25, Reading(memory_usage_bytes=10 * MiB, network_rx_bytes=7))
    side = Usage(0.25, Reading(memory_usage_bytes=5 * MiB))
    total = Usage(0.5, Reading(memory_usage_bytes=15 * MiB, network_rx_bytes=7))
    store.record(pod, TaskSample(110.0, total, {"app": app, "side": side}))
    return store


class WithPeer:
    """Hands the app a verified client certificate's holder, as the TLS server would."""

    def __init__(self, app: ASGIApp, role: str | None) -> None:
        self.app, self.role = app, role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.role is not None:
            now = datetime.datetime.now(datetime.UTC)
            peer = Identity("server-1", self.role, 1, now, now)
            scope = {**scope, "extensions": {"tls": {"peer": peer}}}
        await self.app(scope, receive, send)


async def agent_client(secure: bool, role: str | None) -> AsyncIterator[httpx.AsyncClient]:
    unused = httpx.MockTransport(lambda request: httpx.Response(404))
    server = AsyncServerClient("http://server", transport=unused)
    runner = TaskRunner(SimDriver(), Owner("n1", "127.0.0.2", "c-1"), ReportQueue())
    store = store_with_tasks()
    registry = CollectorRegistry()
    registry.register(TaskMetrics(store, "n1"))
    app = create_app(runner, "n1", server, secure, Metrics(store, 10.0, registry))
    transport = httpx.ASGITransport(app=WithPeer(app, role))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client
    await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for client in agent_client(secure=False, role=None):
        yield client


async def test_task_stats_wire(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tasks/web.1/stats")
    assert response.status_code == 200
    stats = TaskStats.model_validate(response.json())
    assert (stats.service, stats.group, stats.labels, stats.node) == (
        "web",
        "web:prod",
        ["prod", "eu"],
        "n1",
    )
    assert [s.time for s in stats.samples] == [100.0, 110.0]
    assert stats.samples[-1].cpu_cores == 0.5
    since = (await client.get("/v1/tasks/web.1/stats", params={"since": "100"})).json()
    assert [s["time"] for s in since["samples"]] == [110.0]
    limited = (await client.get("/v1/tasks/web.1/stats", params={"limit": "1"})).json()
    assert [s["time"] for s in limited["samples"]] == [110.0]


async def test_task_stats_refusals(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/tasks/nope/stats")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    for bad in ({"since": "yesterday"}, {"since": "nan"}, {"limit": "many"}):
        response = await client.get("/v1/tasks/web.1/stats", params=bad)
        assert response.status_code == 400
        assert next(iter(bad)) in response.json()["message"]


async def test_all_stats_has_latest_only(client: httpx.AsyncClient) -> None:
    listing = StatsList.model_validate((await client.get("/v1/stats")).json())
    by_id = {t.task_id: t for t in listing.tasks}
    assert set(by_id) == {"web.1", "pod.1"}
    assert [s.time for s in by_id["web.1"].samples] == [110.0]
    assert set(by_id["pod.1"].samples[0].members) == {"app", "side"}


async def test_metrics_parse_with_cadvisor_names(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]

    def find(name: str, task: str, container: str = "") -> list[float]:
        return [
            s.value
            for s in samples
            if s.name == name and s.labels["task"] == task and s.labels["container"] == container
        ]

    assert find("container_cpu_usage_seconds_total", "web.1") == [6.0]
    assert find("container_memory_working_set_bytes", "web.1") == [64 * MiB]
    assert find("container_spec_memory_limit_bytes", "web.1") == [128 * MiB]
    assert find("container_cpu_cfs_throttled_periods_total", "web.1") == [5]
    assert find("container_oom_events_total", "web.1") == [0]
    assert find("container_processes", "web.1") == [2]
    assert find("theseus_task_cpu_cores", "web.1") == [0.5]
    # Not measured: no sample (not a 0).
    assert find("container_memory_rss", "web.1") == []
    # A pod: one series per member, none for the total; its network on its first member.
    assert find("container_memory_usage_bytes", "pod.1", "app") == [10 * MiB]
    assert find("container_memory_usage_bytes", "pod.1", "side") == [5 * MiB]
    assert find("container_memory_usage_bytes", "pod.1") == []
    assert find("container_network_receive_bytes_total", "pod.1", "app") == [7]
    assert find("container_network_receive_bytes_total", "pod.1", "side") == []
    (web,) = [s for s in samples if s.name == "container_processes"]
    assert web.labels == {
        "service": "web",
        "group": "web:prod",
        "labels": "prod,eu",
        "task": "web.1",
        "container": "",
        "node": "n1",
    }


@pytest.mark.parametrize(("role", "status"), [(None, 401), (Role.AGENT, 403), (Role.SERVER, 200)])
async def test_secure_agent_answers_servers_only(role: str | None, status: int) -> None:
    async for client in agent_client(secure=True, role=role):
        for path in ("/metrics", "/v1/stats", "/v1/tasks/web.1/stats"):
            assert (await client.get(path)).status_code == status, path
        assert (await client.get("/v1/health")).status_code == 200


def test_metrics_end_with_the_task() -> None:
    """Only tasks read at the last pass are exported: a stopped task's series end."""
    store = store_with_tasks()
    metrics = TaskMetrics(store, "n1")
    store.current = frozenset({"web.1", "pod.1"})
    assert {s.labels["task"] for f in metrics.collect() for s in f.samples} == {"web.1", "pod.1"}
    store.current = frozenset({"pod.1"})
    assert {s.labels["task"] for f in metrics.collect() for s in f.samples} == {"pod.1"}
