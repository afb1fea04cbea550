"""What a task record's size costs etcd: 50,000 records written in transactions of 512,
with and without one watch reading them back through etcd's HTTP gateway (as every server's
cache does); etcd's CPU for each, a fresh member each time.

A task record is 943 bytes at the benchmark's minimal spec, 667 of them the spec; without it
about 280 (BENCHMARKS.md, issue 17's fourteenth session). The writes go through the gateway
too (the server sends them over gRPC, which costs etcd less), so the figures compare sizes,
and with and without the watch, rather than give a deploy's cost.

    python bench/etcd_bytes.py [--records 50000] [--sizes 943,280] [--rounds 2]
"""

from __future__ import annotations

import argparse
import base64
import threading

import httpx
from procs import children_in_temp_dir, cpu_seconds, start_etcd

BATCH = 512  # writes per transaction


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def read_back(url: str, wanted: int, started: threading.Event) -> None:
    """Follow the records' prefix through the gateway until ``wanted`` puts came."""
    ask = {"create_request": {"key": b64("/bench/"), "range_end": b64("/bench0")}}
    seen = 0
    with httpx.stream("POST", f"{url}/v3/watch", json=ask, timeout=None) as answer:
        started.set()
        for line in answer.iter_lines():
            seen += line.count('"kv"')
            if seen >= wanted:
                return


def one_round(records: int, size: int, watch: bool) -> float:
    """etcd's CPU seconds for writing ``records`` of ``size`` bytes (and reading them back)."""
    with children_in_temp_dir("theseus-etcd-bytes-") as children:
        etcd, port = start_etcd(children)
        url = f"http://127.0.0.1:{port}"
        reader: threading.Thread | None = None
        if watch:
            started = threading.Event()
            reader = threading.Thread(target=read_back, args=(url, records, started), daemon=True)
            reader.start()
            started.wait(10.0)
        value = base64.b64encode(b"x" * size).decode()
        before = cpu_seconds(etcd.pid)
        with httpx.Client(base_url=url, timeout=60.0) as http:
            for first in range(0, records, BATCH):
                puts = [
                    {"request_put": {"key": b64(f"/bench/{n:08d}"), "value": value}}
                    for n in range(first, min(records, first + BATCH))
                ]
                http.post("/v3/kv/txn", json={"success": puts}).raise_for_status()
        if reader is not None:
            reader.join(120.0)
        return cpu_seconds(etcd.pid) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--sizes", default="943,280", help="record sizes in bytes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"etcd's CPU for {args.records:,} records in transactions of {BATCH}, interleaved")
    print(f"{'record':>8}  {'writes':>8}  {'writes + a watch':>16}")
    for _ in range(args.rounds):
        for size in sizes:
            alone = one_round(args.records, size, watch=False)
            watched = one_round(args.records, size, watch=True)
            print(f"{size:>6} B  {alone:>6.1f} s  {watched:>14.1f} s")


if __name__ == "__main__":
    main()
