"""What security costs the server at scale: a development cluster and a secure one (CA, TLS API
with tokens, agents joining with a join token and then talking mutual TLS, etcd over TLS with
client certificates), each with H hollow nodes, in turn, in one run.

    .venv/bin/python bench/security.py [--nodes 1000] [--workers 4] [--window 45] [--rounds 2]

Per side (the sides alternate: dev, secure, secure, dev, ... so that drift of the machine
touches both alike), only etcd, ONE ``theseus server`` and ``--workers`` processes of hollow
nodes (bench/hollow.py) are started, on free loopback ports in a temp dir, and stopped after:

1. **joining**: the hollow processes start; time until every node is ready (``GET
   /v1/nodes``), the server's CPU (/proc/<pid>/stat utime+stime) over that phase and per
   node; on the secure side each agent first joins (``GET /v1/ca``, a key, ``POST /v1/join``
   with its CSR), the hollow processes time each join;
2. **idle**: after ``--settle`` seconds (the pace the server advises grows with the cluster:
   at 1,000 nodes and the default ``--max-heartbeats-per-second`` 100, one heartbeat per node
   every 10 s), the server's CPU over a ``--window`` of heartbeats only, and the heartbeats
   and assignment long-polls answered in it, counted from the agents' side (bench/hollow.py
   ``--counts``, written every 0.2 s): server CPU per heartbeat in µs. The window's CPU also
   pays for the long-polls (each agent's is answered empty every 30 s), on both sides alike.

Before the hollow nodes start, with the server otherwise idle, ``--requests`` heartbeats of
one registered node (on the secure side with an agent certificate, mutual TLS) measure the
server's CPU per heartbeat alone: on one kept-alive connection, and each on a new connection
(what an agent's heartbeat costs when its connection was closed as idle: uvicorn and httpx
close idle connections after 5 s, and at 1,000 nodes the interval is 10 s).

Prints one table per side and the medians of the rounds with the ratio secure / dev.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from procs import (
    START_TIMEOUT,
    Processes,
    bench_processes,
    cpu_seconds,
    free_port,
    machine_cpu,
    percentile,
    stopped_on_sigterm,
)

from theseus.cluster.argv import EtcdMember, ServerProcess
from theseus.cluster.certs import issue_client_cert, issue_etcd_certs
from theseus.cluster.etcd_probe import member_healthy
from theseus.cluster.secure import bootstrap_admin, new_join_token, prepare_pki
from theseus.security import pki as certs
from theseus.security.files import PkiDir
from theseus.security.tls import client_context

BENCH_DIR = Path(__file__).resolve().parent
SIDES = ("dev", "secure")


@dataclass
class Cluster:
    """One side's etcd and server, and how to call the server (CA and admin token)."""

    url: str
    server_pid: int
    etcd_pid: int
    http: httpx.Client
    join_token: str | None
    pki: PkiDir | None


def start_cluster(children: Processes, root: Path, secure: bool) -> Cluster:
    pki = prepare_pki(root / "pki", "bench", ["127.0.0.1"]) if secure else None
    data = root / "etcd"
    data.mkdir(mode=0o700)
    member = EtcdMember(
        "bench", data, free_port(), free_port(), pki_dir=pki.root if pki is not None else None
    )
    etcd_tls = None
    if pki is not None:
        issue_etcd_certs(pki, [member])
        etcd_tls = issue_client_cert(pki)
    etcd = children.start("etcd", member.argv(), role="etcd")
    etcd.wait_healthy(lambda: member_healthy(member), START_TIMEOUT, "etcd to answer")
    server = ServerProcess(
        port=free_port(),
        etcd=(member.client_url if pki is not None else f"127.0.0.1:{member.client_port}",),
        etcd_tls=etcd_tls,
        liveness_timeout=4,  # as bench/scale.py
        log_level="warning",
        pki_dir=pki.root if pki is not None else None,
    )
    process = children.start("server", server.argv(), role="server")
    verify: ssl.SSLContext | bool = client_context(ca_pem=pki.read_ca()) if pki else True
    probe = httpx.Client(base_url=server.url, verify=verify, timeout=5.0)

    def healthy() -> bool:
        try:
            return probe.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_healthy(healthy, START_TIMEOUT, "the server to answer")
    probe.close()
    headers, join = {}, None
    if pki is not None:
        admin = bootstrap_admin(server.url, pki)
        join = new_join_token(server.url, pki, admin, ttl=3600)
        headers = {"Authorization": f"Bearer {admin}"}
    http = httpx.Client(base_url=server.url, verify=verify, headers=headers, timeout=60.0)
    return Cluster(server.url, process.pid, etcd.pid, http, join, pki)


PROBE = "bench-probe"


def heartbeat_cost(cluster: Cluster, requests: int) -> dict[str, float]:
    """Server CPU (µs) per heartbeat of one node: on a kept-alive connection, on new ones."""
    verify: ssl.SSLContext | bool = True
    if cluster.pki is not None:
        issued = certs.issue(
            cluster.pki.read_ca_pair(),
            name=PROBE,
            role=certs.Role.AGENT,
            addresses=["127.0.0.1"],
            days=1,
        )
        cluster.pki.write(PROBE, issued)
        verify = client_context(cluster.pki, PROBE)  # built once: the client's cost is not ours
    node = {"name": PROBE, "address": "127.0.0.1", "agent_port": 1, "cpus": 1, "mem": 1}
    path = f"/v1/agent/{PROBE}/heartbeat"
    with httpx.Client(base_url=cluster.url, verify=verify, timeout=10.0) as http:
        http.post("/v1/agent/register", json={**node, "driver": "sim"}).raise_for_status()
        cpu = cpu_seconds(cluster.server_pid)
        for _ in range(requests):
            http.post(path).raise_for_status()
        kept = cpu_seconds(cluster.server_pid) - cpu
    cpu = cpu_seconds(cluster.server_pid)
    for _ in range(requests):
        with httpx.Client(base_url=cluster.url, verify=verify, timeout=10.0) as http:
            http.post(path).raise_for_status()
    fresh = cpu_seconds(cluster.server_pid) - cpu
    return {
        "1 node: server CPU/heartbeat, kept-alive (us)": 1e6 * kept / requests,
        "1 node: server CPU/heartbeat, new conn. (us)": 1e6 * fresh / requests,
    }


def ready_nodes(http: httpx.Client) -> int:
    try:
        response = http.get("/v1/nodes")
        response.raise_for_status()
    except httpx.HTTPError:  # the server too busy to answer in time: ask again
        return 0
    return sum(1 for n in response.json()["nodes"] if n["status"] == "ready")


def read_counts(files: list[Path]) -> tuple[dict[str, int], list[float]]:
    totals = {"heartbeats": 0, "polls": 0, "registrations": 0}
    joins: list[float] = []
    for path in files:
        if not path.exists():
            continue
        values = json.loads(path.read_text())
        for key in totals:
            totals[key] += int(values[key])
        joins += values["joins"]
    return totals, joins


def run_side(args: argparse.Namespace, secure: bool, root: Path) -> dict[str, float]:
    """One side from start to stop; its figures."""
    root.mkdir(parents=True)
    children = bench_processes(root)
    try:
        cluster = start_cluster(children, root, secure)
        alone = heartbeat_cost(cluster, args.requests) if args.requests else {}
        env = {"THESEUS_JOIN_TOKEN": cluster.join_token} if cluster.join_token else None
        per_worker = math.ceil(args.nodes / args.workers)
        workers, counts = [], []
        cpu0, wall0 = cpu_seconds(cluster.server_pid), time.monotonic()
        for w, first in enumerate(range(0, args.nodes, per_worker)):
            count = min(per_worker, args.nodes - first)
            counts.append(root / f"counts-{w}.json")
            argv = [sys.executable, str(BENCH_DIR / "hollow.py"), "--server", cluster.url]
            argv += ["--first", str(first), "--count", str(count)]
            argv += ["--state-root", str(root / "hollow"), "--counts", str(counts[-1])]
            workers.append(children.start(f"hollow-{w}", argv, role="agent", extra_env=env))
        children.wait_until(
            lambda: ready_nodes(cluster.http) >= args.nodes,
            args.timeout,
            f"{args.nodes} nodes ready",
            interval=0.5,
        )
        ready_after = time.monotonic() - wall0
        join_cpu = cpu_seconds(cluster.server_pid) - cpu0
        _, joins = read_counts(counts)

        time.sleep(args.settle)
        before, _ = read_counts(counts)
        cpu1, wall1, machine1 = cpu_seconds(cluster.server_pid), time.monotonic(), machine_cpu()
        etcd1 = cpu_seconds(cluster.etcd_pid)
        hollow1 = sum(cpu_seconds(w.pid) for w in workers)
        time.sleep(args.window)
        after, _ = read_counts(counts)
        window = time.monotonic() - wall1
        idle_cpu = cpu_seconds(cluster.server_pid) - cpu1
        figures = {
            **alone,
            "nodes ready after (s)": ready_after,
            "server CPU, start to all ready (s)": join_cpu,
            "server CPU per node joined+registered (ms)": 1000 * join_cpu / args.nodes,
            "join p50 (ms, agents' side)": 1000 * percentile(joins, 0.5) if joins else math.nan,
            "join p95 (ms, agents' side)": 1000 * percentile(joins, 0.95) if joins else math.nan,
            "idle window (s)": window,
            "heartbeats in window": after["heartbeats"] - before["heartbeats"],
            "assignment polls in window": after["polls"] - before["polls"],
            "re-registrations in window": after["registrations"] - before["registrations"],
            "server CPU in window (s)": idle_cpu,
            "server CPU (cores)": idle_cpu / window,
            "etcd CPU in window (s)": cpu_seconds(cluster.etcd_pid) - etcd1,
            "hollow CPU in window (s)": sum(cpu_seconds(w.pid) for w in workers) - hollow1,
            "machine busy (cores)": (machine_cpu()[0] - machine1[0]) / window,
        }
        beats = figures["heartbeats in window"]
        figures["server CPU per heartbeat (us)"] = 1e6 * idle_cpu / beats if beats else math.nan
        calls = beats + figures["assignment polls in window"]
        figures["server CPU per heartbeat or poll (us)"] = 1e6 * idle_cpu / calls if calls else 0
        cluster.http.close()
        return figures
    except BaseException:
        print(f"failed; logs in {root}\n{children.logs()}", file=sys.stderr)
        raise
    finally:
        children.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="hollow-node processes")
    parser.add_argument("--window", type=float, default=45.0, help="idle window, seconds")
    parser.add_argument("--settle", type=float, default=25.0, help="seconds before the window")
    parser.add_argument("--rounds", type=int, default=2, help="each side this many times")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to all ready")
    parser.add_argument(
        "--requests", type=int, default=500, help="heartbeats of one node, per connection kind"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    base = Path(tempfile.mkdtemp(prefix="theseus-bench-security-"))
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    order = [side for r in range(args.rounds) for side in (SIDES if r % 2 == 0 else SIDES[::-1])]
    with stopped_on_sigterm():
        try:
            for n, side in enumerate(order):
                figures = run_side(args, side == "secure", base / f"{n}-{side}")
                results[side].append(figures)
                print(f"--- run {n + 1}/{len(order)}: {side}, {args.nodes} hollow nodes")
                for name, value in figures.items():
                    print(f"  {name:44} {value:12,.2f}")
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    print(f"\nmedians of {args.rounds} round(s), sides alternating ({' '.join(order)})")
    print(f"{'':46} {'dev':>12} {'secure':>12} {'secure/dev':>11}")
    for name in results["dev"][0]:
        dev = statistics.median(r[name] for r in results["dev"])
        sec = statistics.median(r[name] for r in results["secure"])
        ratio = f"{sec / dev:11.2f}" if dev and not math.isnan(dev) else f"{'-':>11}"
        print(f"{name:46} {dev:12,.2f} {sec:12,.2f} {ratio}")


if __name__ == "__main__":
    main()
