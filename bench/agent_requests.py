"""The server's CPU per agent request, by route: what the request stack costs.

    .venv/bin/python bench/agent_requests.py [--block 500] [--rounds 10]

Starts etcd and one ``theseus server`` (a development cluster, on free loopback ports in a
temp dir), registers one node, deploys 4 tasks on it, then sends the requests an agent sends,
one at a time on one kept-alive connection, in blocks of ``--block`` per route, the routes
interleaved for ``--rounds`` rounds (the heartbeats keep the node alive):

* ``heartbeat``: ``POST /v1/agent/{node}/heartbeat``, answered once the server's next heard
  record, which names the node, is in etcd: the heard records are at least 0.2 s apart
  (``theseus.server.liveness.SPACING``), so these go ``HEARTBEATS_AT_ONCE`` at a time, each
  on a kept-alive connection of its own (one after another, a block took over a minute and
  the server's CPU at rest over it was most of what it measured);
* ``assignments``: ``GET /v1/agent/{node}/assignments`` at its current index with ``wait=0``
  (answered at once: the memoised list of 4 tasks);
* ``reports``: ``POST /v1/agent/{node}/reports`` of the 4 tasks, unchanged (nothing written);
* ``health``: ``GET /v1/health``, a FastAPI route that does nearly nothing: the control.

Prints, per route, the median over the rounds of the server's CPU per request
(/proc/<pid>/stat, 10 ms ticks: a block of 500 requests reads to about ±20 µs) and of the
wall time per request.

``--client``: then the agent's side, the CPU of this process per request (the
assignments route, ``wait=0``) on uvloop, as an agent runs: through ``httpx.AsyncClient`` with
httpx's own transport and with the agent's (``theseus.api.aiohttp_transport``), and through
the agent's own client (``AsyncServerClient.assignments``), interleaved.

Runs against whatever ``theseus`` is importable, so the same script measures an older
commit through a git worktree (``PYTHONPATH=<worktree>``; without ``--client`` there).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat

import httpx
import uvloop
from procs import children_in_temp_dir, cpu_seconds, start_etcd, start_server, wait_until

NODE = "bench-node"
TASKS = 4
HEARTBEATS_AT_ONCE = 50  # heartbeats in flight: they share the server's heard records


def prepare(http: httpx.Client) -> tuple[int, dict[str, object]]:
    """Register the node and put 4 tasks on it, reported running; its assignments' index
    and that report batch."""
    node = {"name": NODE, "address": "127.0.0.1", "agent_port": 1, "cpus": 4, "mem": 4096}
    http.post("/v1/agent/register", json={**node, "driver": "sim"}).raise_for_status()
    document = {"deploy": {"web": {"image": "sim", "instances": TASKS, "cpus": 0.1, "mem": 16}}}
    http.post("/deploy", json=document).raise_for_status()

    def assigned() -> dict[str, object] | None:
        http.post(f"/v1/agent/{NODE}/heartbeat").raise_for_status()
        answer = http.get(f"/v1/agent/{NODE}/assignments", params={"wait": 0}).json()
        return answer if len(answer["tasks"]) == TASKS else None

    answer = wait_until(assigned, 30, "the tasks to be assigned")
    now = time.time()
    batch = {
        "reports": [
            {
                "task_id": t["task_id"],
                "state": "running",
                "container_id": f"c{i}",
                "at": now,
            }
            for i, t in enumerate(answer["tasks"])
        ]
    }
    http.post(f"/v1/agent/{NODE}/reports", json=batch).raise_for_status()
    return int(answer["index"]), batch


Call = Callable[[httpx.Client], httpx.Response]


def measure(
    pid: int,
    http: httpx.Client,
    calls: dict[str, Call],
    block: int,
    rounds: int,
    at_once: dict[str, ThreadPoolExecutor],
) -> None:
    """Per route, ``block`` calls a round: one after another on ``http``, or through the
    route's pool of ``at_once``, each of its threads on a client of its own."""
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            used, started = cpu_seconds(pid), time.perf_counter()
            pool = at_once.get(name)
            if pool is None:
                for _ in range(block):
                    call(http).raise_for_status()
            else:
                for answer in pool.map(_on_own_client, repeat(call, block), repeat(http)):
                    answer.raise_for_status()
            wall[name].append(1e6 * (time.perf_counter() - started) / block)
            cpu[name].append(1e6 * (cpu_seconds(pid) - used) / block)
    print(f"{'route':14s} {'server CPU/request':>20s} {'(min-max)':>12s} {'wall/request':>14s}")
    for name in calls:
        low, high = min(cpu[name]), max(cpu[name])
        print(
            f"{name:14s} {statistics.median(cpu[name]):17.0f} us {low:5.0f}-{high:<5.0f}"
            f" {statistics.median(wall[name]):11.0f} us"
        )


_local = threading.local()


def _on_own_client(call: Call, like: httpx.Client) -> httpx.Response:
    """``call`` on this thread's client to the same server as ``like`` (its connection kept
    alive from one call to the next)."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(base_url=like.base_url, timeout=10.0)
    return call(client)


def client_cost(url: str, path: str, index: int, block: int, rounds: int) -> None:
    """The CPU of this process per request, by transport, and through the agent's own client
    (``AsyncServerClient``: its failover and its answer's validation included); medians of
    the rounds."""
    from theseus.api.agent_client import AGENT_LIMITS, AsyncServerClient
    from theseus.api.aiohttp_transport import aiohttp_transport

    async def per_request(transport: httpx.AsyncBaseTransport | None) -> float:
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10.0) as http:
            await http.get(path)  # connected
            used = time.process_time()
            for _ in range(block):
                (await http.get(path)).raise_for_status()
            return 1e6 * (time.process_time() - used) / block

    async def per_agent_call() -> float:
        client = AsyncServerClient(url)
        try:
            await client.assignments(NODE, index, 0)  # connected
            used = time.process_time()
            for _ in range(block):
                await client.assignments(NODE, index, 0)
            return 1e6 * (time.process_time() - used) / block
        finally:
            await client.aclose()

    kinds = {
        "httpx's own": lambda: per_request(None),
        "aiohttp (the agent's)": lambda: per_request(aiohttp_transport(AGENT_LIMITS, None)),
        "AsyncServerClient": per_agent_call,
    }
    cpu: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, run in kinds.items():
            cpu[name].append(uvloop.run(run()))
    print(f"\nthe agent's side: client CPU per request ({path.split('?')[0]})")
    for name, values in cpu.items():
        print(f"{name:24s} {statistics.median(values):6.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=500, help="requests per route and round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--client", action="store_true", help="also the client's CPU")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    with children_in_temp_dir("theseus-agent-requests-", args.keep) as children:
        _, etcd_port = start_etcd(children)
        server, url = start_server(children, etcd_port, log_level="warning")
        with httpx.Client(base_url=url, timeout=10.0) as http:
            index, batch = prepare(http)
            node = f"/v1/agent/{NODE}"
            calls: dict[str, Call] = {
                "heartbeat": lambda c: c.post(f"{node}/heartbeat", json={"usage": None}),
                "assignments": lambda c: c.get(
                    f"{node}/assignments", params={"index": index, "wait": 0}
                ),
                "reports": lambda c: c.post(f"{node}/reports", json=batch),
                "health": lambda c: c.get("/v1/health"),
            }
            print(
                f"{args.rounds} rounds of {args.block} requests per route, one connection"
                f" (heartbeats: {HEARTBEATS_AT_ONCE} at once, a connection each)"
            )
            with ThreadPoolExecutor(HEARTBEATS_AT_ONCE) as heartbeats:
                at_once = {"heartbeat": heartbeats}
                measure(server.pid, http, calls, args.block, args.rounds, at_once)
            if args.client:
                path = f"{node}/assignments?index={index}&wait=0"
                client_cost(url, path, index, args.block, args.rounds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
