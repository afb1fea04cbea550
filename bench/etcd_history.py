"""etcd's database with and without the leader's compaction of its history
(``theseus.server.compaction``): what repeated rewrites of a cluster's keys cost in space.

    .venv/bin/python bench/etcd_history.py [--keys 50000] [--rounds 8]

Starts two etcd members as Theseus starts them (no compaction of their own), and in each
round rewrites the same ``--keys`` keys of 400 bytes, in transactions of 256 as a plan's or
the agents' reports are written: a 50,000-task deploy writes about 137,000 keys
(bench/scale.py). Before each round the second member's history is compacted by
``HistoryCompactor`` as the leader runs it (one interval is one round here: it compacts up
to the revision it read one round before). After each round: each database's size on disk
and the part of it in use (etcd's ``etcd_mvcc_db_total_size_in_bytes`` and
``..._in_use_in_bytes``). etcd's default quota is 2 GiB; past it, etcd refuses every write.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import httpx
from procs import children_in_temp_dir, start_etcd

from theseus.server.compaction import HistoryCompactor
from theseus.store.base import Put
from theseus.store.commit import BATCH_OPS
from theseus.store.etcd import EtcdStore

VALUE = os.urandom(200).hex().encode()  # 400 bytes
MIB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def db_sizes(port: int) -> tuple[float, float]:
    """The database's size on disk and in use, MiB."""
    sizes = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes"):
            sizes[name] = float(value) / MIB
    return sizes["etcd_mvcc_db_total_size_in_bytes"], sizes[
        "etcd_mvcc_db_total_size_in_use_in_bytes"
    ]


async def rewrite(store: EtcdStore, keys: int, round_no: int) -> None:
    for start in range(0, keys, BATCH_OPS):
        ops = [
            Put(f"/theseus/status/t-{n:06d}", VALUE + str(round_no).encode())
            for n in range(start, min(keys, start + BATCH_OPS))
        ]
        await store.commit(ops)


async def measure(args: argparse.Namespace, plain_port: int, compacted_port: int) -> None:
    plain = EtcdStore([f"127.0.0.1:{plain_port}"], timeout=30)
    compacted = EtcdStore([f"127.0.0.1:{compacted_port}"], timeout=30)
    await plain.connect()
    await compacted.connect()
    clock = Clock()
    compactor = HistoryCompactor(compacted, lambda: True, interval=1.0, clock=clock)
    print(f"{args.keys:,} keys of 400 bytes rewritten per round; MiB on disk / in use")
    print(f"{'round':>5}  {'no compaction':>18}  {'compacted by the leader':>24}")
    for round_no in range(1, args.rounds + 1):
        await compactor.step()  # compacts up to the revision of one round ago
        clock.now += 1.0
        await rewrite(plain, args.keys, round_no)
        await rewrite(compacted, args.keys, round_no)
        disk, used = db_sizes(plain_port)
        c_disk, c_used = db_sizes(compacted_port)
        print(f"{round_no:>5}  {disk:>8.1f} / {used:>7.1f}  {c_disk:>13.1f} / {c_used:>8.1f}")
    await plain.close()
    await compacted.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with children_in_temp_dir("theseus-etcd-history-") as children:
        _, plain_port = start_etcd(children)
        with children_in_temp_dir("theseus-etcd-history-") as others:
            _, compacted_port = start_etcd(others)
            asyncio.run(measure(args, plain_port, compacted_port))


if __name__ == "__main__":
    main()
