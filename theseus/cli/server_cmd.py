"""``theseus server``: run the control plane (HTTP API; leader when elected)."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import typer
import uvicorn
from fastapi import FastAPI

from theseus.server.app import create_app
from theseus.server.context import ServerConfig


def register(app: typer.Typer) -> None:
    @app.command()
    def server(
        host: str = typer.Option("127.0.0.1", help="Address to serve the API on."),
        port: int = typer.Option(5000, help="Port to serve the API on (the original's 5000)."),
        etcd: list[str] = typer.Option(
            ["127.0.0.1:2379"],
            help="etcd endpoint host:port (repeat, or separate with commas, for several "
            "members: the server moves to the next one when its member fails).",
        ),
        liveness_timeout: int = typer.Option(
            3,
            min=2,
            help="Seconds without a heartbeat before a node is declared lost and its tasks "
            "are replaced (agents heartbeat every second). Lower detects a dead machine "
            "sooner; higher tolerates longer network or load hiccups (a live node declared "
            "lost has its tasks started twice until it registers again). Clusters bigger "
            "than --max-heartbeats-per-second nodes get more: 3 heartbeat intervals.",
        ),
        max_heartbeats_per_second: float = typer.Option(
            100.0,
            min=1.0,
            help="Heartbeats per second the server accepts from all agents together. Beyond "
            "that many nodes, agents heartbeat every ceil(nodes / this) seconds and a node "
            "is lost after 3 intervals (1,000 nodes: every 10 s, lost after 30 s): a big "
            "cluster detects a dead machine later, but heartbeats cannot flood the server.",
        ),
        registry_repair_interval: float = typer.Option(
            3.0,
            min=0.1,
            help="Seconds between the leader's full comparisons of the service registry with "
            "task state (repairs entries edited by hand; /cleanup does it on demand).",
        ),
        leader_lease_ttl: int = typer.Option(
            2,
            min=2,
            help="Seconds of the leader's etcd lease: when the leader dies, another server "
            "takes over about this much later (2 is etcd's minimum with its default timings).",
        ),
        max_request_bytes: int = typer.Option(
            ServerConfig.max_request_bytes,
            min=1024,
            help="Largest request body accepted, in bytes (default 4 MiB). A larger one is "
            "refused with 413 before it is read or parsed, whether it declares its length or "
            "is sent in chunks.",
        ),
        log_level: str = typer.Option("info", help="debug, info, warning or error."),
    ) -> None:
        """Run a Theseus server against etcd."""
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        config = ServerConfig(
            host=host,
            port=port,
            etcd=[e.strip() for item in etcd for e in item.split(",") if e.strip()],
            liveness_timeout=liveness_timeout,
            max_heartbeats_per_second=max_heartbeats_per_second,
            registry_repair_interval=registry_repair_interval,
            leader_lease_ttl=leader_lease_ttl,
            max_request_bytes=max_request_bytes,
        )
        app = create_app(config)
        server = _Server(
            app,
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                access_log=False,
                # Long-polls are answered at once on a stop (``_Server``); this bounds anything
                # else (a quick stop also hands leadership over at once, by revoking our lease).
                timeout_graceful_shutdown=2,
            ),
        )
        server.run()


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, the long-polls that agents and containers hold open
    (up to a minute) are answered at once, before uvicorn waits for open requests to end;
    otherwise it would cancel them at its timeout, logging an error for each."""

    def __init__(self, app: FastAPI, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        ctx = getattr(self._app.state, "ctx", None)  # None until the lifespan started
        loop = self._loop
        if ctx is not None and loop is not None:
            loop.call_soon_threadsafe(ctx.cache.release_waiters)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)
