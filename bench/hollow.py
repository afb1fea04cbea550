"""Hollow nodes: one process running many ``sim``-driver agents as coroutines, each a real
``theseus.agent`` talking to the server over HTTP (register, heartbeat as often as the server
says, long-poll its assignments, report), with tasks that only pretend to run.

Started by bench/scale.py and bench/footprint.py (a few of these processes), or by hand:

    .venv/bin/python bench/hollow.py --server http://127.0.0.1:5000 --first 0 --count 250 \
        --state-root /tmp/hollow

Node ``i`` is named ``hollow-<i>`` and advertises 127.1.<i // 250>.<i % 250 + 1> (the address
only names the node: hollow agents serve no HTTP). Runs until SIGTERM or SIGINT.

Each agent gets its own connection pool on the transport a real agent's client makes for
itself (aiohttp's: ``theseus.api.aiohttp_transport``), but one SSL context shared by the
process: a transport builds a fresh one otherwise (about 15 ms of CPU), which would cost 30 s
of CPU for 1,000 agents of two clients each and say nothing about Theseus. (Until the tenth
session of issue 17 the hollow nodes used httpx's own transport, which costs an agent about
240 µs more per request than a real agent's: BENCHMARKS.md.)

``--join-token T`` (a secure cluster, ``https://`` server): each agent joins with T, as
``theseus agent --join`` does, and then talks mutual TLS with the certificate it got; it builds
its own TLS contexts from it (no shared transport: a given transport would win over TLS).

``--counts FILE``: every 0.2 s, write what the agents of this process have done so far as
JSON: heartbeats and assignment polls answered, registrations, and each join's duration (s).
bench/security.py counts heartbeats this way, from the agents' side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

import theseus.agent.agent as agent_module
from theseus.agent.agent import run_agent

try:
    from theseus.agent.config import AgentConfig
except ImportError:  # a commit before the config's own module, measured with PYTHONPATH
    from theseus.agent.agent import AgentConfig  # type: ignore[attr-defined,no-redef]
from theseus.agent.identity import join
from theseus.api.agent_client import AGENT_LIMITS, AsyncServerClient  # the agent's own limits

try:
    from theseus.api.aiohttp_transport import aiohttp_transport
except ImportError:  # a commit before the agent's client moved to aiohttp
    aiohttp_transport = None  # type: ignore[assignment]


def agent_transport(ssl_context: ssl.SSLContext) -> httpx.AsyncBaseTransport:
    """The transport a real agent's client makes for itself (``AsyncServerClient`` with none
    given), but with the process's one SSL context: aiohttp's, or httpx's own for a commit
    from before it."""
    if aiohttp_transport is None:
        return httpx.AsyncHTTPTransport(verify=ssl_context, limits=AGENT_LIMITS)
    return aiohttp_transport(AGENT_LIMITS, ssl_context)


def hollow_name(index: int) -> str:
    return f"hollow-{index}"


def hollow_address(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


class Counts:
    """What this process's agents did, counted by wrapping the client's calls (answered ones
    only) and the join: a bench-only instrument, the agent's code is unchanged."""

    def __init__(self) -> None:
        self.values = {"heartbeats": 0, "polls": 0, "registrations": 0}
        self.joins: list[float] = []

    def install(self) -> None:
        for method, key in (
            ("heartbeat", "heartbeats"),
            ("assignments", "polls"),
            ("register", "registrations"),
        ):
            original = getattr(AsyncServerClient, method)

            async def counted(*args: Any, _original: Any = original, _key: str = key) -> Any:
                answer = await _original(*args)
                self.values[_key] += 1
                return answer

            setattr(AsyncServerClient, method, counted)

        async def timed_join(*args: Any) -> None:
            started = time.monotonic()
            await join(*args)
            self.joins.append(time.monotonic() - started)

        setattr(agent_module, "join", timed_join)  # noqa: B010 - what establish_identity calls

    async def write_forever(self, path: Path) -> None:
        while True:
            temp = path.with_suffix(".tmp")
            temp.write_text(json.dumps({**self.values, "joins": self.joins}))
            os.replace(temp, path)  # a reader never sees half a file
            await asyncio.sleep(0.2)


async def run_hollow(
    server: str,
    first: int,
    count: int,
    state_root: Path,
    cpus: float,
    mem: float,
    join_token: str | None = None,
    counts_file: Path | None = None,
) -> None:
    ssl_context = httpx.create_ssl_context()
    writer = None
    if counts_file is not None:
        counts = Counts()
        counts.install()
        writer = asyncio.create_task(counts.write_forever(counts_file))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents = [
        asyncio.create_task(
            run_agent(
                AgentConfig(
                    server=server,
                    name=hollow_name(i),
                    address=hollow_address(i),
                    cpus=cpus,
                    mem=mem,
                    driver="sim",
                    state_dir=state_root / hollow_name(i),
                    serve_http=False,
                    handle_signals=False,
                    # With a join token the agent makes its own TLS contexts (mutual TLS).
                    transport=None if join_token else agent_transport(ssl_context),
                    join_token=join_token,
                )
            )
        )
        for i in range(first, first + count)
    ]
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, *agents], return_when=asyncio.FIRST_COMPLETED)
    ended = [task for task in agents if task.done()]
    for task in agents:
        task.cancel()
    await asyncio.gather(*agents, return_exceptions=True)
    stopped.cancel()
    if writer is not None:
        writer.cancel()
    for task in ended:
        task.result()  # an agent that ended by itself: show why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--state-root", type=Path, required=True)
    parser.add_argument("--cpus", type=float, default=64.0)
    parser.add_argument("--mem", type=float, default=256_000.0, help="MiB per node")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--join-token", help="join a secure cluster with this join token")
    parser.add_argument("--counts", type=Path, help="write the agents' call counts here")
    parser.add_argument(
        "--gc",
        choices=("freeze", "default"),
        default="freeze",
        help="freeze: the server's garbage-collection policy (theseus.server.gc_policy)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        from theseus.server.gc_policy import FreezeSurvivors
    except ImportError:  # an older commit's theseus (its agents measured as they were)
        pass
    else:
        # A process of many agents holds as many objects as a server: without this, their
        # full collections took 237-249 s of CPU at 5,000 nodes (against 51 s with it),
        # starving the server they measure.
        if args.gc == "freeze":
            FreezeSurvivors().install()
    coroutine = run_hollow(
        args.server,
        args.first,
        args.count,
        args.state_root,
        args.cpus,
        args.mem,
        args.join_token or os.environ.get("THESEUS_JOIN_TOKEN"),
        args.counts,
    )
    try:
        import uvloop  # the server runs on it too (uvicorn[standard])

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(coroutine)


if __name__ == "__main__":
    main()
