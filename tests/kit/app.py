"""A whole server in-process for unit tests: ``create_app`` (cache, leader, writer, routes,
middleware) on one ``MemoryStore``, reached through httpx's ASGI transport. Integration tests
use real processes (``tests/kit/cluster.py``) instead."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from theseus.server.app import create_app
from theseus.server.config import ServerConfig
from theseus.store.base import Store
from theseus.store.memory import MemoryStore


@contextlib.asynccontextmanager
async def inprocess_server(
    config: ServerConfig | None = None, store: MemoryStore | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A server running on ``store`` (a new one by default), for the block: its ASGI app (for
    a test that speaks ASGI to it directly) and a client of it."""
    memory = store or MemoryStore()

    def open_store(config: ServerConfig) -> Store:
        return memory

    app = create_app(config or ServerConfig(), open_store=open_store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://theseus") as client:
            yield app, client


@contextlib.asynccontextmanager
async def inprocess_api(
    config: ServerConfig | None = None, store: MemoryStore | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server running on ``store`` (a new one by default), for the block."""
    async with inprocess_server(config, store) as (_, client):
        yield client
