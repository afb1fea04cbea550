"""Time for an agent to join a secure cluster (target: under 1 s on loopback).

    .venv/bin/python bench/join.py [--joins 50] [--agents 5]

Starts ``theseus up --secure --nodes 1`` on free ports with a temp state dir and CLI config
(``theseus down --purge`` at the end), makes a join token with the admin token ``up`` kept
(``AccessApi.create_join_token``), then:

1. ``--joins`` joins one after the other through ``theseus.agent.identity.join`` (what an
   agent does on its first start: ``GET /v1/ca`` without trust, the pin checked against the
   token, a new key and CSR, ``POST /v1/join`` over TLS verified with that CA; the
   certificate written to a temp dir), each as a new node name: wall time per join, this
   process's CPU and the server's (/proc/<pid>/stat) per join;
2. ``--agents`` real ``theseus agent --join URL`` processes (sim driver, the token in
   ``THESEUS_JOIN_TOKEN``), one after the other: from the process's start to its node ready
   in ``GET /v1/nodes`` (polled every 20 ms), the interpreter's start-up included; and from
   its start to its log's "joined the cluster" line. For reference, the time a new
   interpreter takes to import what ``python -m theseus`` loads (``theseus.cli.main``).

Prints median, p95, min and max of each (server CPU: the mean, /proc counts 10 ms ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from common import theseus_cluster
from procs import bench_processes, cpu_seconds, free_port, percentile

from theseus.agent.identity import join
from theseus.api.access_client import AccessApi
from theseus.api.client import ServerClient
from theseus.cluster import statefile
from theseus.cluster.argv import AgentProcess
from theseus.security.files import PkiDir


def server_pid(state_dir: Path) -> int:
    record = statefile.load(state_dir)
    assert record is not None, f"no cluster record in {state_dir}"
    return next(p.pid for p in record.processes if p.role == "server")


def joins(url: str, token: str, count: int, root: Path, pid: int) -> dict[str, list[float]]:
    """``count`` joins one at a time: wall, client CPU and server CPU per join (s)."""
    figures: dict[str, list[float]] = {"wall": [], "client CPU": [], "server CPU": []}

    async def run() -> None:
        for i in range(count):
            files = PkiDir(root / f"join-{i}")
            wall, cpu, server = time.perf_counter(), time.process_time(), cpu_seconds(pid)
            await join([url], token, f"bench-join-{i}", "127.0.0.1", files)
            figures["wall"].append(time.perf_counter() - wall)
            figures["client CPU"].append(time.process_time() - cpu)
            figures["server CPU"].append(cpu_seconds(pid) - server)

    asyncio.run(run())
    return figures


def ready(client: ServerClient, name: str) -> bool:
    return any(n.name == name and n.status == "ready" for n in client.nodes().nodes)


def joined_at(log: Path) -> float:
    """The Unix time of the agent log's "joined the cluster" line (local time, ms)."""
    line = next(x for x in log.read_text().splitlines() if "joined the cluster" in x)
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def import_time() -> float:
    started = time.perf_counter()
    argv = [sys.executable, "-c", "import theseus.cli.main"]
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def agents(
    url: str, token: str, count: int, root: Path, client: ServerClient
) -> tuple[list[float], list[float]]:
    """``count`` real agent processes, one at a time: start to ready, start to joined (s)."""
    children = bench_processes(root)
    times, joined = [], []
    try:
        for i in range(count):
            name = f"bench-agent-{i}"
            agent = AgentProcess(
                servers=(url,),
                name=name,
                address="127.0.0.1",
                port=free_port(),
                state_dir=root / name,
                driver="sim",
                join=url,
            )
            started, wall = time.perf_counter(), time.time()
            process = children.start(
                name, agent.argv(), "agent", extra_env={"THESEUS_JOIN_TOKEN": token}
            )
            children.wait_until(partial(ready, client, name), 30, f"{name} ready", 0.02)
            times.append(time.perf_counter() - started)
            process.stop()
            joined.append(joined_at(process.log) - wall)
    finally:
        children.stop_all()
    return times, joined


def line(label: str, values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return (
        f"{label:48}{statistics.median(ms):9.1f}{percentile(ms, 0.95):9.1f}"
        f"{min(ms):9.1f}{max(ms):9.1f}{len(ms):5d}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=50)
    parser.add_argument("--agents", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="theseus-bench-join-") as temp:
        root = Path(temp)
        state_dir = root / "state"
        with (
            theseus_cluster(None, state_dir, nodes=1, secure=True) as target,
            target.access.client(target.url) as client,
        ):
            token = AccessApi(client).create_join_token(3600).token
            pid = server_pid(state_dir)
            figures = joins(target.url, token, args.joins, root / "joins", pid)
            started, joined = agents(target.url, token, args.agents, root / "agents", client)
    imports = [import_time() for _ in range(args.agents)]
    print("joining a `theseus up --secure` cluster on loopback (ms)\n")
    print(f"{'':48}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}{'n':>5}")
    print(line("identity.join: wall", figures["wall"]))
    print(line("identity.join: joining process CPU", figures["client CPU"]))
    server_cpu = statistics.mean(figures["server CPU"])
    print(f"{'identity.join: server CPU (mean)':48}{1000 * server_cpu:9.1f}")
    print(line("`theseus agent --join` process: start to joined", joined))
    print(line("`theseus agent --join` process: start to ready", started))
    print(line("new interpreter: import theseus.cli.main", imports))


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    main()
