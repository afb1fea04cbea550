"""What the server's calls to etcd cost, through gRPC (``EtcdStore``, as the server makes them)
and through etcd's HTTP gateway (JSON over HTTP/1.1, as the cache's watch already reads it):
the CPU of this process and of etcd per call.

    .venv/bin/python bench/etcd_calls.py [--calls 3000] [--concurrency 32] [--puts 5]

Starts one etcd member (in a temp dir, on free loopback ports) and, on uvloop, sends
``--calls`` commits of ``--puts`` keys of 400 bytes, then as many lease keep-alives, each way,
``--concurrency`` at a time, two rounds interleaved. The gateway's client is the lightest
there is: kept-alive connections, requests written by hand, answers parsed by httptools (8
connections). Issue 17's ninth session (BENCHMARKS.md) measured whether the gateway would
spare the server's CPU: it does, but etcd spends more than the server saves.

"commit, prompt" is ``EtcdStore.commit(..., prompt=True)``: the gateway through the store's own
client (``theseus.store.etcd_gateway``, h11), which users' writes take.

Then, for the gRPC calls and a commit through the gateway, how many rounds of the event loop
one takes, alone, while the loop
is kept busy in rounds of ``--round-ms`` (a callback that holds the GIL that long and
schedules itself again): under a deploy, the server's loop goes round in tens of
milliseconds, and a call waits for every round it needs (issue 17's twenty-first session).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import cast

import httptools
import uvloop
from procs import children_in_temp_dir, cpu_seconds, start_etcd

from theseus.store.base import Put
from theseus.store.etcd import EtcdStore

VALUE = os.urandom(200).hex().encode()  # 400 bytes
CONNECTIONS = 8


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class GatewayConnection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection to etcd's gateway, one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        assert answer is not None
        answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        head = f"POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Length: {len(body)}\r\n\r\n"
        self._transport.write(head.encode() + body)
        return await self._answer


class Gateway:
    def __init__(self, port: int) -> None:
        self._port = port
        self._free: asyncio.Queue[GatewayConnection] = asyncio.Queue()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(CONNECTIONS):
            _, connection = await loop.create_connection(GatewayConnection, "127.0.0.1", self._port)
            self._free.put_nowait(connection)

    async def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        connection = await self._free.get()
        try:
            status, answer = await connection.post(path, json.dumps(body).encode())
        finally:
            self._free.put_nowait(connection)
        assert status == 200, answer
        parsed: dict[str, object] = json.loads(answer)
        return parsed


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def measure(args: argparse.Namespace, port: int, etcd_pid: int) -> None:
    store = EtcdStore([f"127.0.0.1:{port}"])
    await store.connect()
    gateway = Gateway(port)
    await gateway.open()
    lease = await store.grant_lease(600)

    async def grpc_commit(n: int) -> None:
        await store.commit([Put(f"/bench/{n}/{i}", VALUE) for i in range(args.puts)])

    async def gateway_commit(n: int) -> None:
        puts = [
            {"request_put": {"key": b64(f"/bench/{n}/{i}".encode()), "value": b64(VALUE)}}
            for i in range(args.puts)
        ]
        answer = await gateway.post("/v3/kv/txn", {"success": puts})
        assert "header" in answer

    async def prompt_commit(n: int) -> None:  # the store's own gateway client (h11)
        puts = [Put(f"/bench/{n}/{i}", VALUE) for i in range(args.puts)]
        assert await store.commit(puts, prompt=True) is not None

    async def grpc_keepalive(n: int) -> None:
        assert await store.refresh_lease(lease)

    async def gateway_keepalive(n: int) -> None:
        answer = await gateway.post("/v3/lease/keepalive", {"ID": lease})
        assert "result" in answer

    async def timed(name: str, call: Callable[[int], Awaitable[None]]) -> None:
        slots = asyncio.Semaphore(args.concurrency)

        async def one(n: int) -> None:
            async with slots:
                await call(n)

        mine, etcd = own_cpu(), cpu_seconds(etcd_pid)
        await asyncio.gather(*(one(n) for n in range(args.calls)))
        mine, etcd = own_cpu() - mine, cpu_seconds(etcd_pid) - etcd
        print(f"{name:<24}{1e6 * mine / args.calls:>10.0f} µs{1e6 * etcd / args.calls:>12.0f} µs")

    print(f"{'call':<24}{'this process':>13}{'etcd':>15}   (CPU per call)")
    for _ in range(2):
        await timed("commit, gRPC", grpc_commit)
        await timed("commit, gateway", gateway_commit)
        await timed("commit, prompt", prompt_commit)
        await timed("lease keep-alive, gRPC", grpc_keepalive)
        await timed("lease keep-alive, gateway", gateway_keepalive)
    print(
        f"\n{'call, alone':<24}{'loop rounds':>13}{'time':>15}   (median of 20, rounds of", end=""
    )
    print(f" {args.round_ms:g} ms)")
    for name, call in (
        ("commit, gRPC", grpc_commit),
        ("commit, gateway", gateway_commit),
        ("commit, prompt", prompt_commit),
        ("lease keep-alive, gRPC", grpc_keepalive),
    ):
        rounds, took = await loop_rounds(call, args.round_ms / 1000)
        print(f"{name:<24}{rounds:>13.0f}{took * 1000:>12.1f} ms")
    await store.close()


async def loop_rounds(
    call: Callable[[int], Awaitable[None]], round_seconds: float
) -> tuple[float, float]:
    """Median rounds of a busy event loop that one ``call`` spans, and its median time."""
    rounds: list[int] = []
    times: list[float] = []
    for n in range(20):
        busy = BusyLoop(asyncio.get_running_loop(), round_seconds)
        started = time.perf_counter()
        await call(n)
        times.append(time.perf_counter() - started)
        rounds.append(busy.stop())
        await asyncio.sleep(0.01)
    return statistics.median(rounds), statistics.median(times)


class BusyLoop:
    """A callback that holds the GIL for ``round_seconds``, as a busy loop's callbacks do,
    and schedules itself again until stopped: each run is one round of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, round_seconds: float) -> None:
        self._loop = loop
        self._round = round_seconds
        self._rounds = 0
        self._stopped = False
        loop.call_soon(self._run)

    def _run(self) -> None:
        if self._stopped:
            return
        self._rounds += 1
        until = time.perf_counter() + self._round
        while time.perf_counter() < until:
            pass
        self._loop.call_soon(self._run)

    def stop(self) -> int:
        """Stop; the rounds it ran."""
        self._stopped = True
        return self._rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--puts", type=int, default=5, help="keys per commit")
    parser.add_argument("--round-ms", type=float, default=20.0, help="a busy loop's round")
    args = parser.parse_args()
    with children_in_temp_dir("theseus-etcd-calls-") as children:
        etcd, port = start_etcd(children)
        uvloop.run(measure(args, port, etcd.pid))


if __name__ == "__main__":
    main()
