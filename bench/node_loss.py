"""Node loss: a machine of a 3-node docker cluster dies (its agent SIGKILLed, its containers
``docker kill``ed); time until its tasks run on the other nodes and the registry no longer
lists the lost ones.

    .venv/bin/python bench/node_loss.py [--repeat 5] [--tasks 6] [--liveness-timeout N]

Starts its own cluster with ``theseus up --nodes 3 --driver docker`` on free ports and its own
``--state-dir`` (a temporary directory unless given), builds ``theseus/busybox`` if needed
(``theseus images build --only busybox``, never pulls) and ends with ``theseus down --purge``.
The agents listen on 127.0.0.2-4 port 5051 (what ``theseus up`` does), so no other
``theseus up`` cluster may run on this machine at the same time.

One service of ``--tasks`` busybox tasks (one published port each) runs spread over the three
nodes. Each repetition picks the node holding most of them, then at t = 0 SIGKILLs its agent
(the pid recorded in ``cluster.json``) and kills its containers (labels
``theseus.node=<node>`` and ``theseus.cluster=<this cluster>``), and polls every 20 ms for:
the node reported ``lost``; all tasks running again on other nodes; the registry
(``GET /v1/registry/<service>``) listing none of the lost tasks and all of the replacements.
Between repetitions the agent is started again with the command recorded in ``cluster.json``
(the record is updated with its new pid, so that ``theseus down`` stops it) and the cluster
settles. Prints one table.

With default settings a node is declared lost ``--liveness-timeout`` seconds (``theseus server
--liveness-timeout``, default 3) after its last heartbeat (every second). ``--liveness-timeout
N`` here restarts the cluster's server with that value before measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
from procs import environ_without_proxies, free_port, free_port_pair, stopped_on_sigterm, wait_until

from theseus.api.client import ServerClient
from theseus.cluster import procs as cluster_procs
from theseus.cluster import statefile
from theseus.cluster.commands import AGENT_PORT
from theseus.cluster.statefile import ClusterRecord, ProcessRecord
from theseus.cluster.supervise import SpawnOptions, spawn

IMAGE = "theseus/busybox:latest"
AGENT_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # theseus up --nodes 3


@dataclass
class Round:
    node: str
    lost_tasks: int
    detected: float  # node reported lost
    rescheduled: float  # every task running again, none on the lost node
    registry_clean: float  # registry: no lost task, every replacement
    done: float  # both of the above


def theseus(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "theseus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ_without_proxies(),
        check=False,
    )


def restart(state_dir: Path, record: ClusterRecord, entry: ProcessRecord, extra: list[str]) -> None:
    """Start a recorded process again (detached, like ``theseus up`` does) and record its pid."""
    command = entry.command + extra
    popen = spawn(command, Path(entry.log), SpawnOptions(cwd=state_dir, detached=True))
    entry.pid, entry.command = popen.pid, command
    statefile.save(state_dir, record)


def replace_server(state_dir: Path, record: ClusterRecord, liveness_timeout: int) -> None:
    (server,) = record.by_role("server")
    cluster_procs.stop([server], grace=10.0)
    base = [a for a in server.command if not a.startswith("--liveness-timeout")]
    server.command = base
    restart(state_dir, record, server, [f"--liveness-timeout={liveness_timeout}"])


def measure(
    client: ServerClient,
    engine: docker.DockerClient,
    state_dir: Path,
    record: ClusterRecord,
    service: str,
    tasks: int,
    timeout: float,
) -> Round:
    placed: dict[str, list[str]] = {}
    for task in client.tasks(service).tasks:
        placed.setdefault(task.node or "", []).append(task.id)
    node = max(sorted(placed), key=lambda n: len(placed[n]))
    lost = set(placed[node])
    (agent,) = [p for p in record.processes if p.name == node]
    if not cluster_procs.is_ours(agent):
        raise RuntimeError(f"the agent of {node} (pid {agent.pid}) is not running")
    # This cluster's containers only: other clusters (the test suite's) name nodes alike.
    labels = [f"theseus.node={node}", f"theseus.cluster={record.cluster_id}"]
    containers = engine.api.containers(filters={"label": labels})

    t0, t0_wall = time.monotonic(), time.time()
    os.kill(agent.pid, signal.SIGKILL)
    with ThreadPoolExecutor(max_workers=max(1, len(containers))) as pool:
        list(pool.map(lambda c: engine.api.kill(c["Id"]), containers))
    killed = time.monotonic() - t0

    marks: dict[str, float] = {}
    # More than a wait (``wait_until``): it marks when each of three conditions first held.
    while "rescheduled" not in marks or "registry" not in marks:
        now = time.monotonic() - t0
        if now > timeout:
            raise TimeoutError(f"not recovered after {timeout:.0f} s: {sorted(marks)}")
        if "detected" not in marks and any(
            n.name == node and n.status == "lost" for n in client.nodes().nodes
        ):
            marks["detected"] = now
        current = client.tasks(service).tasks
        running = {t.id for t in current if t.state == "running" and t.desired == "run"}
        off_node = {t.id for t in current if t.node != node and t.id in running}
        if "rescheduled" not in marks and len(off_node) >= tasks and not lost & running:
            marks["rescheduled"] = now
        listed = {c.instance_name for g in client.registry(service).groups for c in g.containers}
        clean = not listed & lost and off_node <= listed and len(listed) >= tasks
        if "registry" not in marks and clean:
            marks["registry"] = now
        time.sleep(0.02)
    marks.setdefault("detected", float("nan"))
    # Where the time after detection goes: the leader's pass (the replacements' created_at)
    # and the nodes starting them (started_at, the agents' clock: the same machine's).
    fresh = [t for t in client.tasks(service).tasks if t.id not in lost and t.created_at > t0_wall]
    created = max((t.created_at - t0_wall for t in fresh), default=float("nan"))
    started = max((t.started_at - t0_wall for t in fresh if t.started_at), default=float("nan"))
    result = Round(
        node=node,
        lost_tasks=len(lost),
        detected=marks["detected"],
        rescheduled=marks["rescheduled"],
        registry_clean=marks["registry"],
        done=max(marks["rescheduled"], marks["registry"]),
    )
    print(
        f"{node}: {len(lost)} tasks lost (kill took {1000 * killed:.0f} ms); lost after "
        f"{result.detected:.2f} s, rescheduled {result.rescheduled:.2f} s, registry "
        f"{result.registry_clean:.2f} s (replacements created {created:.2f} s, last started "
        f"{started:.2f} s)",
        flush=True,
    )

    # The machine comes back: restart its agent, wait for the cluster to settle.
    restart(state_dir, record, agent, [])

    def settled() -> bool:
        ready = any(n.name == node and n.status == "ready" for n in client.nodes().nodes)
        all_tasks = client.tasks(service, include_stopped=False).tasks
        running = [t for t in all_tasks if t.state == "running" and t.desired == "run"]
        return ready and len(running) == tasks and len(all_tasks) == tasks

    wait_until(settled, 60, f"{node} back and {tasks} tasks running", interval=0.1)
    return result


def run(args: argparse.Namespace, state_dir: Path) -> list[Round]:
    engine = docker.from_env()
    built = theseus("images", "build", "--only", "busybox", timeout=300)
    if built.returncode != 0:
        raise RuntimeError(f"theseus images build failed:\n{built.stdout}{built.stderr}")
    busy = [a for a in AGENT_ADDRESSES if cluster_procs.port_in_use(a, AGENT_PORT)]
    if busy:
        raise RuntimeError(
            f"{', '.join(busy)} port {AGENT_PORT} in use: another `theseus up` cluster runs "
            "on this machine (its agents' addresses are fixed); stop it first"
        )
    port, etcd_port = free_port(), free_port_pair()
    up = theseus(
        "up",
        "--nodes",
        "3",
        "--driver",
        "docker",
        "--port",
        str(port),
        "--etcd-port",
        str(etcd_port),
        "--state-dir",
        str(state_dir),
        "--node-cpus",
        "2",
        "--node-mem",
        "2048",
    )
    if up.returncode != 0:
        raise RuntimeError(f"theseus up failed:\n{up.stdout}{up.stderr}")
    record = statefile.load(state_dir)
    if record is None or not record.cluster_id:
        raise RuntimeError(f"theseus up left no cluster record with a cluster id in {state_dir}")
    if args.liveness_timeout is not None:
        replace_server(state_dir, record, args.liveness_timeout)
    service = f"bench-loss-{uuid.uuid4().hex[:6]}"
    spec = {"image": IMAGE, "instances": args.tasks, "cpus": 0.01, "mem": 16, "ports": {"http": 80}}
    rounds: list[Round] = []
    with ServerClient(record.api_url) as client:
        wait_until(lambda: _answers(client), 30, "the server", interval=0.2)
        client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")

        def running() -> bool:
            tasks = client.tasks(service).tasks
            return sum(1 for t in tasks if t.state == "running") >= args.tasks

        wait_until(running, 120, f"{args.tasks} tasks running", interval=0.1)
        for _ in range(args.repeat):
            rounds.append(
                measure(client, engine, state_dir, record, service, args.tasks, args.timeout)
            )
        client.remove(service)
    return rounds


def _answers(client: ServerClient) -> bool:
    try:
        client.health()
    except Exception:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per repetition")
    parser.add_argument("--liveness-timeout", type=int, default=None)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="theseus-node-loss-")) / "state"
    with stopped_on_sigterm():
        try:
            rounds = run(args, state_dir)
        finally:
            down = theseus("down", "--purge", "--state-dir", str(state_dir))
            if down.returncode != 0:
                print(f"theseus down failed:\n{down.stdout}{down.stderr}", file=sys.stderr)
            if args.state_dir is None:
                shutil.rmtree(state_dir.parent, ignore_errors=True)
    liveness = args.liveness_timeout or 3
    print()
    print(
        f"node loss: 3 docker nodes, {args.tasks} busybox tasks, {len(rounds)} repetitions, "
        f"liveness timeout {liveness} s, {os.cpu_count()} cores (seconds from the kill)"
    )
    print(f"{'until':<52}{'median':>8}{'min':>8}{'max':>8}")
    for label, values in (
        ("the node is reported lost", [r.detected for r in rounds]),
        ("its tasks run on other nodes", [r.rescheduled for r in rounds]),
        ("the registry lists none of them, all replacements", [r.registry_clean for r in rounds]),
        ("both (the figure)", [r.done for r in rounds]),
    ):
        print(f"{label:<52}{statistics.median(values):8.2f}{min(values):8.2f}{max(values):8.2f}")


if __name__ == "__main__":
    main()
