"""Footprint: resident memory of an idle agent (``docker`` and ``sim`` drivers) and of the
server with 100 running tasks.

    .venv/bin/python bench/footprint.py [--tasks 100] [--services 10] [--settle 5]

Starts its own etcd member and ``theseus server`` on free loopback ports, in a temporary
directory, and stops everything at the end. Every figure is one real process read from /proc:
RSS (``VmRSS``), PSS (``smaps_rollup``: shared library pages divided among the processes that
map them) and the peak (``VmHWM``).

1. The server alone, then an idle ``theseus agent --driver docker`` (registered, heartbeating,
   no task; skipped when Docker does not answer) and an idle ``theseus agent --driver sim``.
2. The idle agents stop; three ``sim`` agents (real ``theseus agent`` processes whose tasks
   only pretend to run) take ``--tasks`` tasks in ``--services`` services, one port each
   (so every task also has its service registry entry), and the server is read again once all
   run. Read after ``--settle`` seconds at rest each time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx
from procs import (
    Process,
    Processes,
    children_in_temp_dir,
    free_port,
    memory_mib,
    start_etcd,
    start_server,
    wait_until,
)

from theseus.cluster.argv import AgentProcess


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.close()
    except Exception:
        return False
    return True


def start_agent(children: Processes, url: str, name: str, address: str, driver: str) -> Process:
    agent = AgentProcess(
        servers=(url,),
        name=name,
        address=address,
        port=free_port(address),
        state_dir=children.log_dir / "agents" / name,
        driver=driver,
        cpus=4,
        mem=8192,
    )
    return children.start(name, agent.argv(), role="agent")


def node_status(http: httpx.Client) -> dict[str, str]:
    return {n["name"]: n["status"] for n in http.get("/v1/nodes").json()["nodes"]}


def measure(label: str, child: Process) -> tuple[str, float, float, float]:
    rss, hwm = memory_mib(child.pid)
    return label, rss, pss_mib(child.pid), hwm


def run(args: argparse.Namespace, children: Processes) -> list[tuple[str, float, float, float]]:
    rows = []
    _, etcd_port = start_etcd(children)
    server, url = start_server(children, etcd_port)
    http = httpx.Client(base_url=url, timeout=30.0)
    time.sleep(args.settle)
    rows.append(measure("server: started, no node, no task", server))

    # 1. idle agents
    idle: dict[str, Process] = {}
    if docker_answers():
        idle["fp-docker"] = start_agent(children, url, "fp-docker", "127.0.0.2", "docker")
    else:
        print("Docker does not answer: no docker-driver agent")
    idle["fp-sim"] = start_agent(children, url, "fp-sim", "127.0.0.3", "sim")

    def ready(names: list[str]) -> bool:
        children.check_alive()
        status = node_status(http)
        return all(status.get(name) == "ready" for name in names)

    wait_until(lambda: ready(list(idle)), 60, "the idle agents ready", interval=0.2)
    time.sleep(args.settle)
    for name, child in idle.items():
        driver = name.removeprefix("fp-")
        rows.append(measure(f"agent ({driver} driver): registered, idle, no task", child))
    for child in idle.values():
        child.stop()
    # They leave the cluster once no server heard them for their TTL (3 s by default).
    wait_until(lambda: not set(idle) & set(ready_nodes(http)), 30, "the idle agents gone", 0.2)

    # 2. the server with running tasks on three sim agents
    sims = {f"fp-sim-{i}": f"127.0.0.{i + 3}" for i in range(1, 4)}
    for name, address in sims.items():
        start_agent(children, url, name, address, "sim")
    wait_until(lambda: ready(list(sims)), 60, "the sim agents ready", interval=0.2)
    per_service = args.tasks // args.services
    spec = {
        "image": "sim",
        "instances": per_service,
        "cpus": 0.01,
        "mem": 16,
        "ports": {"http": 80},
    }
    document = {"deploy": {f"fp-{i:02d}": spec for i in range(args.services)}}
    headers = {"Content-Type": "application/json"}
    http.post("/deploy", content=json.dumps(document), headers=headers).raise_for_status()
    total = per_service * args.services

    def all_running() -> bool:
        children.check_alive()
        groups = http.get("/v1/groups").json()["groups"]
        return sum(g["running_current"] for g in groups) == total

    wait_until(all_running, 60, f"{total} tasks running", interval=0.2)
    time.sleep(args.settle)
    rows.append(measure(f"server: 3 sim nodes, {total} running tasks", server))
    rows.append(
        measure(f"agent (sim driver) with ~{total // 3} running tasks", children["fp-sim-1"])
    )
    http.close()
    return rows


def ready_nodes(http: httpx.Client) -> list[str]:
    return [name for name, status in node_status(http).items() if status == "ready"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds at rest before reading")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    with children_in_temp_dir("theseus-footprint-", args.keep) as children:
        rows = run(args, children)
    print(f"footprint (MiB), {os.cpu_count()} cores")
    width = max(len(label) for label, *_ in rows) + 2
    print(f"{'process':<{width}}{'RSS':>8}{'PSS':>8}{'peak':>8}")
    for label, rss, pss, hwm in rows:
        print(f"{label:<{width}}{rss:8.1f}{pss:8.1f}{hwm:8.1f}")


if __name__ == "__main__":
    main()
