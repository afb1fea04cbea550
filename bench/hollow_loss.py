"""Node loss at scale: one process of hollow nodes is SIGKILLed (a quarter of a 1,000-node
cluster gone at once); time until the server declares those nodes lost and until every task
runs again on the others.

    .venv/bin/python bench/hollow_loss.py [--nodes 1000] [--tasks 10000] [--services 100] \
        [--workers 4]

Starts one etcd, ONE ``theseus server`` and ``--workers`` processes of hollow nodes
(bench/hollow.py, ``sim`` driver) as bench/scale.py does, deploys the tasks, waits until they
all run and the agents have settled on the heartbeat pace the cluster's size calls for, then
SIGKILLs the first hollow process at t = 0 and polls every 0.2 s for:

* the killed nodes not ready any more (``GET /v1/nodes``: ``down`` once no server heard them
  for their TTL);
* then every task running again on the other nodes (``GET /v1/tasks``).

The stated bound: a node is lost once no server heard it for its TTL, at most its TTL after
its last heartbeat and the leader's next sweep (every 0.5 s) after that
(``theseus.server.heartbeats``: 30 s at 1,000 nodes, heartbeats every 10 s), and its tasks are
replaced by the next pass. Prints the TTL the server gave and both times.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import httpx
from api_probes import ready_nodes, running_count
from procs import Processes, children_in_temp_dir, start_etcd, start_server
from procs import wait_until as wait
from scale import documents, service_names, start_hollow

from theseus.server.config import ServerConfig
from theseus.server.heartbeats import heartbeat_timing

POLL = 0.2  # seconds between polls after the kill
LIVENESS_TIMEOUT = 4  # the server's --liveness-timeout: its TTL for small clusters
MAX_HEARTBEATS_PER_SECOND = ServerConfig().max_heartbeats_per_second


def run(args: argparse.Namespace, children: Processes) -> int:
    etcd, etcd_port = start_etcd(children)
    server, url = start_server(
        children, etcd_port, liveness_timeout=LIVENESS_TIMEOUT, log_level="warning"
    )
    http = httpx.Client(base_url=url, timeout=60.0)
    workers = start_hollow(children, url, args.nodes, args.workers)
    wait(lambda: ready_nodes(http) >= args.nodes, args.timeout, "nodes ready", interval=0.5)
    services = service_names(args.services)
    for doc in documents(services, args.tasks):
        answer = http.post("/deploy", content=doc, headers={"content-type": "application/json"})
        answer.raise_for_status()
    wanted = set(services)
    wait(
        lambda: (running_count(http, wanted) or 0) >= args.tasks,
        args.timeout,
        "all tasks running",
        interval=0.5,
    )
    # What the server computes for this many live nodes (theseus.server.heartbeats).
    timing = heartbeat_timing(args.nodes, LIVENESS_TIMEOUT, MAX_HEARTBEATS_PER_SECOND)
    interval, ttl = timing.interval, float(timing.ttl)
    # A settling time, not a wait on a condition (the API does not show a node's TTL): two
    # intervals, after which every agent has heartbeated at the cluster's pace and been given
    # the TTL for it, so that the loss is measured against the stated TTL.
    time.sleep(2 * interval)
    victim = workers[0]
    per_worker = -(-args.nodes // args.workers)
    names = {f"hollow-{i}" for i in range(min(per_worker, args.nodes))}
    on_victim = sum(
        1
        for t in http.get("/v1/tasks").json()["tasks"]
        if t["node"] in names and t["service"] in wanted
    )
    print(
        f"{args.nodes} hollow nodes, {args.tasks} tasks running; heartbeats every {interval:.0f} s,"
        f" lease TTL {ttl:.0f} s; killing {len(names)} nodes ({on_victim} tasks) at t = 0"
    )
    os.kill(victim.pid, signal.SIGKILL)
    t0 = time.monotonic()
    lost_after: float | None = None
    repaired_after: float | None = None
    while time.monotonic() - t0 < ttl + args.timeout:
        elapsed = time.monotonic() - t0
        if lost_after is None:
            response = http.get("/v1/nodes")
            if response.status_code == 200:
                statuses = {n["name"]: n["status"] for n in response.json()["nodes"]}
                if all(statuses.get(name) != "ready" for name in names):
                    lost_after = elapsed
        elif running_elsewhere(http, wanted, names) >= args.tasks:
            repaired_after = elapsed
            break
        time.sleep(POLL)
    print(f"{'killed nodes all not ready':<44}{_seconds(lost_after)} (bound: TTL {ttl:.0f} s)")
    print(f"{'every task running again':<44}{_seconds(repaired_after)}")
    http.close()
    return (
        0 if repaired_after is not None and lost_after is not None and lost_after <= ttl + 2 else 1
    )


def running_elsewhere(http: httpx.Client, services: set[str], gone: set[str]) -> int:
    """The services' tasks running on nodes other than ``gone`` (0 while the server refuses
    to say)."""
    response = http.get("/v1/tasks")
    if response.status_code != 200:
        return 0
    return sum(
        1
        for t in response.json()["tasks"]
        if t["service"] in services and t["node"] not in gone and t["state"] == "running"
    )


def _seconds(value: float | None) -> str:
    return "not within the deadline" if value is None else f"{value:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4, help="hollow-node processes")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds, per phase")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with children_in_temp_dir("theseus-loss-", args.keep) as children:
        code = run(args, children)
    sys.exit(code)


if __name__ == "__main__":
    main()
