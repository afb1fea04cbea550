"""Event stream latency and cost: from an etcd write to the event reaching stream clients and a
callback receiver, and the server's CPU while it serves N stream clients.

Usage (starts its own etcd and server on free ports, stops them at the end):

    .venv/bin/python bench/events.py --events 300 --rate 20 --clients 1,100

Each round writes ``--events`` audit records straight into etcd (``/theseus/audit/...``, on a
60 s lease, as the audit log writes them: each becomes an ``audit`` event on every server) at
``--rate`` per second, and times each from just before its write was sent to etcd until
(a) each of the N stream clients (``GET /v1/events``, NDJSON, all in this process on one event
loop) has read its line, and (b) the one callback receiver (an HTTP server in this process,
subscribed to the ``audit`` topic) has been POSTed it. The server's CPU is read from
/proc/<pid>/stat over each round. Prints p50, p99 and max per round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kit.cluster import new_cluster
from tests.kit.wait import WaitTimeout, wait_until_async
from theseus.cluster.ports import free_port
from theseus.security.records import AuditRecord
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.etcd import EtcdStore


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Receiver:
    """Records when each audit event's line arrives by callback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[int, float] = {}
        arrived = self.arrived

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                for event in body["events"]:
                    arrived.setdefault(event["index"], now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


INDEX = re.compile(rb'"index":(\d+)')


async def stream_client(url: str, arrived: dict[int, float], ready: asyncio.Event) -> None:
    """A lean reader (a raw socket, no JSON parsing) so that 100 of them in this process
    measure the server, not this process's own queue: each event is one line starting with
    ``{``, and the server writes whole lines per chunk."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v1/events?topic=audit HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    try:
        while (line := await reader.readline()) != b"\r\n":  # the answer's head
            if not line:
                return
        ready.set()
        while line := await reader.readline():
            if line.startswith(b"{"):
                match = INDEX.search(line)
                if match is not None:
                    arrived.setdefault(int(match.group(1)), time.time())
    finally:
        writer.close()


async def round_(
    url: str, store: EtcdStore, pid: int, clients: int, count: int, rate: float, receiver: Receiver
) -> dict[str, float]:
    arrivals: list[dict[int, float]] = [{} for _ in range(clients)]
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(stream_client(url, arrivals[i], readies[i])) for i in range(clients)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    await asyncio.sleep(0.5)  # every stream is past its first read
    lease = await store.grant_lease(60)
    receiver.arrived.clear()
    sent: dict[int, float] = {}
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    for n in range(count):
        record = AuditRecord(
            at=time.time(),
            who="bench:events",
            token_id=None,
            method="POST",
            path="/bench",
            status=200,
        )
        key = f"{keys.AUDIT}{time.time_ns():020d}-bench-{n}"
        at = time.time()
        revision = await store.commit([Put(key, record.model_dump_json().encode(), lease)])
        assert revision is not None
        sent[revision] = at
        await asyncio.sleep(1 / rate)
    with contextlib.suppress(WaitTimeout):  # what is missing is counted below
        await wait_until_async(
            lambda: all(len(a) >= count for a in arrivals) and len(receiver.arrived) >= count,
            30,
            "every event at every reader",
            interval=0.05,
        )
    cpu = cpu_seconds(pid) - cpu0
    wall = time.monotonic() - wall0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stream = [a[r] - t for a in arrivals for r, t in sent.items() if r in a]
    callback = [receiver.arrived[r] - t for r, t in sent.items() if r in receiver.arrived]
    missing = clients * count - len(stream)
    return {
        "clients": clients,
        "stream_p50_ms": 1000 * statistics.median(stream),
        "stream_p99_ms": 1000 * percentile(stream, 0.99),
        "stream_max_ms": 1000 * max(stream),
        "stream_missing": missing,
        "callback_p50_ms": 1000 * statistics.median(callback),
        "callback_p99_ms": 1000 * percentile(callback, 0.99),
        "callback_missing": count - len(callback),
        "server_cpu_percent": 100 * cpu / wall,
        "server_cpu_ms_per_event_per_client": 1000 * cpu / (count * clients),
    }


async def main_async(args: argparse.Namespace, url: str, etcd: list[str], pid: int) -> None:
    store = EtcdStore(etcd)
    await store.connect()
    receiver = Receiver()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/event-subscriptions",
            json={"url": f"http://127.0.0.1:{receiver.port}/", "topics": ["audit"]},
        )
        response.raise_for_status()
    print(
        f"{args.events} events at {args.rate}/s per round; server pid {pid}; {os.cpu_count()} cores"
    )
    try:
        for clients in args.clients:
            result = await round_(url, store, pid, clients, args.events, args.rate, receiver)
            print(json.dumps(result))
    finally:
        receiver.server.shutdown()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100]
    )
    args = parser.parse_args()
    cluster = new_cluster(Path(tempfile.mkdtemp(prefix="theseus-bench-events-")))
    try:
        cluster.start_etcd()
        cluster.start_server()
        pid = cluster.processes["server"].pid
        asyncio.run(main_async(args, cluster.server_url, cluster.etcd_endpoints, pid))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
