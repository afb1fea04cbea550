"""The server's CPU per agent request, by route: what the request stack costs.

    .venv/bin/python bench/agent_requests.py [--block 500] [--rounds 10]

Starts etcd and one ``theseus server`` (a development cluster, on free loopback ports in a
temp dir), registers one node, deploys 4 tasks on it, then sends the requests an agent sends,
one at a time on one kept-alive connection, in blocks of ``--block`` per route, the routes
interleaved for ``--rounds`` rounds (the heartbeats keep the node alive):

* ``heartbeat``: ``POST /v1/agent/{node}/heartbeat`` (answered once the server's next heard
  record, which names the node, is in etcd);
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
import time
from collections.abc import Callable

import httpx
import uvloop
from procs import children_in_temp_dir, cpu_seconds, start_etcd, start_server, wait_until

NODE = "bench-node"
TASKS = 4


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


def measure(
    pid: int, calls: dict[str, Callable[[], httpx.Response]], block: int, rounds: int
) -> None:
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            used, started = cpu_seconds(pid), time.perf_counter()
            for _ in range(block):
                call().raise_for_status()
            wall[name].append(1e6 * (time.perf_counter() - started) / block)
            cpu[name].append(1e6 * (cpu_seconds(pid) - used) / block)
    print(f"{'route':14s} {'server CPU/request':>20s} {'(min-max)':>12s} {'wall/request':>14s}")
    for name in calls:
        low, high = min(cpu[name]), max(cpu[name])
        print(
            f"{name:14s} {statistics.median(cpu[name]):17.0f} us {low:5.0f}-{high:<5.0f}"
            f" {statistics.median(wall[name]):11.0f} us"
        )


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
            calls = {
                "heartbeat": lambda: http.post(f"{node}/heartbeat", json={"usage": None}),
                "assignments": lambda: http.get(
                    f"{node}/assignments", params={"index": index, "wait": 0}
                ),
                "reports": lambda: http.post(f"{node}/reports", json=batch),
                "health": lambda: http.get("/v1/health"),
            }
            print(f"{args.rounds} rounds of {args.block} requests per route, one connection")
            measure(server.pid, calls, args.block, args.rounds)
            if args.client:
                path = f"{node}/assignments?index={index}&wait=0"
                client_cost(url, path, index, args.block, args.rounds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
