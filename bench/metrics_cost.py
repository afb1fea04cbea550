"""What the Prometheus metrics cost the server, in-process (no I/O, so a busy machine skews
it little): CPU per request, per etcd call, per pass, and per scrape at scale.

    .venv/bin/python bench/metrics_cost.py [--nodes 1000] [--groups 100] [--per-group 100] \
        [--requests 200000]

* each HTTP request: a bare ASGI app called directly, with and without
  ``theseus.server.request_metrics.RequestMetrics`` around it (the per-request cost of the
  counter and the histogram, route template from the matched route);
* each etcd call: ``MemoryStore.get`` with and without ``MeteredStore`` around it;
* each pass: ``leader._placements`` over a plan placing every task, and the histogram's
  observation;
* each scrape: ``GET /metrics``'s rendering (``exposition``) of a server's registry whose
  state collector reads a state of N nodes and G x P running tasks, with an API series for
  every route of the policy table.

Prints CPU time (``time.process_time``), median of 5 runs where it repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from reconcile_pass import build

from theseus.model.tasks import TaskState, TaskStatus
from theseus.reconciler.reconcile import reconcile
from theseus.server import leader as leader_module
from theseus.server.metered_store import MeteredStore
from theseus.server.metrics import ServerMetrics, exposition
from theseus.server.metrics_state import ClusterStateCollector
from theseus.server.policy import TEMPLATES
from theseus.server.request_metrics import RequestCounts, RequestMetrics
from theseus.store.base import Put
from theseus.store.memory import MemoryStore


def cpu(call: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return statistics.median(times)


class _Route:
    path = "/v1/agent/{node}/heartbeat"


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route  # as the router leaves it
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message: dict[str, Any]) -> None:
    return None


def requests_cost(count: int) -> tuple[float, float]:
    """CPU seconds per request: bare, and with ``RequestMetrics``."""
    metrics = ServerMetrics()
    wrapped = RequestMetrics(_inner, RequestCounts(metrics.requests, metrics.request_duration))
    scope = {"type": "http", "method": "POST", "path": "/v1/agent/hollow-7/heartbeat"}

    async def run(app: Any) -> None:
        for _ in range(count):
            await app(dict(scope), None, _send)

    bare = cpu(lambda: asyncio.run(run(_inner)))
    metered = cpu(lambda: asyncio.run(run(wrapped)))
    return bare / count, metered / count


def store_cost(count: int) -> tuple[float, float]:
    metrics = ServerMetrics()

    async def run(metered: bool) -> float:
        memory = MemoryStore()
        await memory.connect()
        await memory.commit([Put("/k", b"v")])
        store: Any = (
            MeteredStore(memory, metrics.etcd_duration, metrics.etcd_failures)
            if metered
            else memory
        )
        started = time.process_time()
        for _ in range(count):
            await store.get("/k")
        return time.process_time() - started

    bare = statistics.median(asyncio.run(run(False)) for _ in range(5))
    metered = statistics.median(asyncio.run(run(True)) for _ in range(5))
    return bare / count, metered / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()

    def row(what: str, bare: float, metered: float, wrapper: str) -> None:
        print(f"{what:<35}{bare * 1e6:7.2f} us CPU")
        extra = (metered - bare) * 1e6
        print(f"  with {wrapper:<29}{metered * 1e6:7.2f} us CPU (+{extra:.2f} us)")

    row("HTTP request (bare ASGI app)", *requests_cost(args.requests), "RequestMetrics")
    row("etcd call (MemoryStore.get)", *store_cost(args.requests // 4), "MeteredStore")

    state = build(args.nodes, args.groups, args.per_group)
    plan = reconcile(state, 100.0)
    tasks = len(plan.task_puts)
    placements = cpu(lambda: leader_module._placements(state, plan))
    print(f"placements counted, {tasks:,} placed   {placements * 1e3:7.2f} ms CPU per pass")

    state.tasks.update(plan.task_puts)
    for task in state.tasks.values():
        state.statuses[task.id] = TaskStatus(
            task_id=task.id, state=TaskState.RUNNING, started_at=99.0, updated_at=99.0
        )
        state.index_task(None, task)
    metrics = ServerMetrics()
    metrics.registry.register(ClusterStateCollector(lambda: state))
    for method, template in TEMPLATES:  # one series per route, as a busy server has
        metrics.requests.labels(method, template, "200").inc()
        metrics.request_duration.labels(method, template).observe(0.01)
    text = exposition(metrics.registry)
    scrape = cpu(lambda: exposition(metrics.registry))
    print(
        f"scrape, {args.nodes:,} nodes, {len(state.tasks):,} tasks  {scrape * 1e3:7.2f} ms CPU, "
        f"{len(text):,} bytes, {len(text.splitlines()):,} lines"
    )


if __name__ == "__main__":
    main()
