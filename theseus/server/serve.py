"""Running a server process: its app under uvicorn, with TLS when configured, until SIGTERM.

Called by ``theseus server`` (``theseus.cli.server_cmd``) once its options are checked.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from theseus.security.serving import http_protocol
from theseus.server.app import create_app
from theseus.server.config import ServerConfig
from theseus.server.gc_policy import FreezeSurvivors

SWITCH_INTERVAL = 0.001  # seconds (Python's default: 0.005)
# Connections the kernel holds for the server until it accepts them (it caps this at
# net.core.somaxconn, 4096 on current kernels). uvicorn's 2048 overflowed when thousands of
# agents connected at once, behind a busy loop: each dropped SYN costs a connect 1-7 s, and a
# few in a row time the agent's call out (bench/scale.py at 5,000 nodes).
LISTEN_BACKLOG = 8192


def serve(
    config: ServerConfig,
    log_level: str,
    certfile: str | None = None,
    keyfile: str | None = None,
    ca_certs: str | None = None,
) -> None:
    """Serve until stopped. With ``certfile``: TLS, asking clients for a certificate from
    ``ca_certs`` without requiring one (agents and servers present theirs, the CLI a token)."""
    # The reconcile pass (a worker thread) and the lease keep-alive (a thread) share the GIL
    # with the event loop: at the default 5 ms switch interval, each time the loop gives the
    # GIL up to wait for I/O it waited up to 5 ms to get it back from a pass, and a thousand
    # agents' requests queued behind. 1 ms hands it back sooner, for a little more switching.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # The cluster's state and the agents' long-polls are millions of objects at 5,000
    # nodes: full garbage collections held the GIL for seconds (theseus.server.gc_policy).
    FreezeSurvivors().install()
    app = create_app(config)
    server = _Server(
        app,
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            # uvicorn's own records go through the process's logging (theseus.cli.logsetup:
            # the same file, rotation and format), not through handlers of its own on stderr.
            log_config=None,
            access_log=False,
            # No proxy stands in front of a server: uvicorn would otherwise take the client's
            # address from an X-Forwarded-For that any local process may send (and spend a
            # little on every request looking).
            proxy_headers=False,
            # Long-polls are answered at once on a stop (``_Server``); this bounds anything
            # else (a quick stop also hands leadership over at once, by revoking our lease).
            timeout_graceful_shutdown=2,
            # Idle connections stay open longer than agents' heartbeat intervals (10 s at
            # 1,000 nodes; uvicorn's default closes them after 5 s): a heartbeat then
            # reuses its connection instead of paying a new (TLS) handshake. Agents let
            # theirs go after 60 s (``theseus.api.agent_client.KEEPALIVE_EXPIRY``).
            timeout_keep_alive=75,
            backlog=LISTEN_BACKLOG,
            http=http_protocol(),
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            ssl_ca_certs=ca_certs,
            ssl_cert_reqs=ssl.CERT_OPTIONAL if ca_certs else ssl.CERT_NONE,
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
