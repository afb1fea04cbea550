"""A whole server in-process for unit tests: ``create_app`` (cache, leader, writer, routes,
middleware) on one ``MemoryStore``, reached through httpx's ASGI transport. Integration tests
use real processes (``tests/kit/cluster.py``) instead."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from theseus.server.app import create_app
from theseus.server.config import ServerConfig
from theseus.store.base import Store
from theseus.store.memory import MemoryStore


@contextlib.asynccontextmanager
async def inprocess_api(
    config: ServerConfig | None = None, store: MemoryStore | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server running on ``store`` (a new one by default), for the block."""
    memory = store or MemoryStore()

    def open_store(config: ServerConfig) -> Store:
        return memory

    app = create_app(config or ServerConfig(), open_store=open_store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://theseus") as client:
            yield client
