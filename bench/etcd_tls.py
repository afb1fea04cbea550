"""What TLS with client certificates costs the store: the same operations against a plain etcd
member and a TLS one (``--client-cert-auth``), both started for the run, side by side.

    .venv/bin/python bench/etcd_tls.py [--ops 2000] [--concurrency 64] [--rounds 3]

Per side, through ``theseus.store.etcd.EtcdStore`` (what the server uses): a connect (a new
connection and its first call: the TLS handshake), a one-key guarded transaction and a get one
at a time (latency), transactions with ``--concurrency`` in flight (throughput) and lease
refreshes with as many in flight (the agents' heartbeats are these); and the CPU time etcd and
this client spent on a round (the same work on both sides). The sides alternate
within each round, so that drift of the machine touches both alike; each figure is the median
of the rounds. Both members run on this machine, with their data in the run's directory.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from procs import START_TIMEOUT, bench_processes, cpu_seconds, percentile

from theseus.cluster.argv import EtcdMember
from theseus.cluster.certs import issue_client_cert, issue_etcd_certs
from theseus.cluster.etcd_probe import member_healthy
from theseus.cluster.ports import free_port
from theseus.security.files import PkiDir
from theseus.security.pki import create_ca
from theseus.store.base import ModRevisionIs, Put
from theseus.store.etcd import EtcdStore
from theseus.store.etcd_tls import EtcdTls


async def latencies(ops: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    times = []
    for i in range(ops):
        started = time.perf_counter()
        await step(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def throughput(ops: int, concurrency: int, step: Callable[[int], Awaitable[object]]) -> float:
    queue = iter(range(ops))

    async def worker() -> None:
        for i in queue:
            await step(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


async def one_round(
    endpoint: str, tls: EtcdTls | None, ops: int, concurrency: int, side: str
) -> dict[str, float]:
    connects = []
    for _ in range(20):
        started = time.perf_counter()
        fresh = EtcdStore([endpoint], tls=tls)
        await fresh.connect()
        await fresh.get("/bench/none")
        connects.append((time.perf_counter() - started) * 1000)
        await fresh.close()
    store = EtcdStore([endpoint], tls=tls)
    await store.connect()
    try:
        prefix = f"/bench/{side}/"

        async def txn(i: int) -> object:
            key = f"{prefix}k{i % 100}"
            entry = await store.get(key)
            guard = ModRevisionIs(key, entry.mod_revision if entry else 0)
            return await store.commit([Put(key, b"x" * 200)], [guard])

        async def put(i: int) -> object:
            return await store.commit([Put(f"{prefix}p{i % 1000}", b"x" * 200)])

        async def get(i: int) -> object:
            return await store.get(f"{prefix}p{i % 1000}")

        txn_ms = await latencies(ops // 2, txn)
        get_ms = await latencies(ops, get)
        puts = await throughput(ops * 2, concurrency, put)
        gets = await throughput(ops * 2, concurrency, get)
        leases = [await store.grant_lease(60) for _ in range(100)]
        refreshes = await throughput(
            ops * 2, concurrency, lambda i: store.refresh_lease(leases[i % 100])
        )
        for lease in leases:
            await store.revoke_lease(lease)
    finally:
        await store.close()
    return {
        "connect ms (median)": statistics.median(connects),
        "get+txn ms p50": percentile(txn_ms, 0.5),
        "get+txn ms p99": percentile(txn_ms, 0.99),
        "get ms p50": percentile(get_ms, 0.5),
        "get ms p99": percentile(get_ms, 0.99),
        f"puts/s ({concurrency} in flight)": puts,
        f"gets/s ({concurrency} in flight)": gets,
        f"lease refreshes/s ({concurrency} in flight)": refreshes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="theseus-bench-etcd-tls-"))
    pki = PkiDir(root / "pki")
    pki.write_ca(create_ca("bench"))
    members = {
        side: EtcdMember(
            side,
            root / side,
            free_port(),
            free_port(),
            pki_dir=pki.root if side == "tls" else None,
        )
        for side in ("plain", "tls")
    }
    issue_etcd_certs(pki, [members["tls"]])
    credentials = EtcdTls.from_files(*issue_client_cert(pki))
    children = bench_processes(root)
    try:
        for side, member in members.items():
            member.data_dir.mkdir(mode=0o700)
            child = children.start(side, member.argv(), role="etcd")
            child.wait_healthy(lambda m=member: member_healthy(m), START_TIMEOUT, f"{side} etcd")
        results: dict[str, list[dict[str, float]]] = {"plain": [], "tls": []}

        async def rounds() -> None:
            # One event loop for every round: gRPC's asyncio channels belong to the loop of
            # the first one, and a second asyncio.run trips over them on exit.
            for round_ in range(args.rounds):
                for side in ("plain", "tls") if round_ % 2 == 0 else ("tls", "plain"):
                    tls = credentials if side == "tls" else None
                    etcd_cpu, client_cpu = cpu_seconds(children[side].pid), time.process_time()
                    endpoint = members[side].endpoint
                    figures = await one_round(endpoint, tls, args.ops, args.concurrency, side)
                    figures["etcd CPU s per round"] = cpu_seconds(children[side].pid) - etcd_cpu
                    figures["client CPU s per round"] = time.process_time() - client_cpu
                    results[side].append(figures)

        asyncio.run(rounds())
    except BaseException:
        children.stop_all()
        print(f"failed; the members' data and logs are in {root}\n{children.logs()}")
        raise
    children.stop_all()
    shutil.rmtree(root)
    print(f"etcd {args.rounds} rounds x {args.ops} ops, medians of the rounds")
    print(f"{'':44} {'plain':>10} {'tls':>10} {'tls/plain':>10}")
    for name in results["plain"][0]:
        plain = statistics.median(r[name] for r in results["plain"])
        tls_value = statistics.median(r[name] for r in results["tls"])
        print(f"{name:44} {plain:10.2f} {tls_value:10.2f} {tls_value / plain:10.2f}")


if __name__ == "__main__":
    main()
