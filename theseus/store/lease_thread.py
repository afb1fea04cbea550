"""The leader lease's keep-alive on a thread of its own, with its own event loop and its own
etcd connection, so that a busy server loop does not cost the leadership.

A big deploy keeps the server's event loop busy in stretches of a second or two (the watch
applying thousands of changes, a commit's thousands of writes, a thousand agents' reports),
and a keep-alive on that loop woke past its 2 s lease: the leader stepped down and was elected
again, its pass refused by the fence, several times a deploy. On a thread the refresh is
due every third of the TTL whatever the main loop does (the GIL gives a waiting thread its
turn within milliseconds). The lease is still bound to the process: a dead or stopped
(SIGSTOP) process refreshes nothing, and another server takes over ``lease_ttl`` seconds
later. And it is bound to the main loop's health: a loop that has not come round for
``MAX_LOOP_SILENCE`` seconds (wedged, not busy) is not worth leading with, so the thread stops
refreshing and the leadership goes to another server.

Created by ``theseus.server.app`` for etcd stores (the in-memory store of unit tests lives on
the main loop, where the keep-alive then stays), used by ``theseus.store.leadership``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any

from theseus.store.base import Store

log = logging.getLogger(__name__)

MAX_LOOP_SILENCE = 10.0  # seconds without a tick of the main loop before the lease goes

StoreGetter = Callable[[], Awaitable[Store]]


class LeaseThread:
    def __init__(
        self,
        open_store: Callable[[], Store],
        main_loop_seen: Callable[[], float],
        max_loop_silence: float = MAX_LOOP_SILENCE,
    ) -> None:
        self._open_store = open_store  # called on the thread: the connection is its loop's
        self._main_loop_seen = main_loop_seen  # time.monotonic() of the main loop's last tick
        self._max_loop_silence = max_loop_silence
        self._loop = asyncio.new_event_loop()
        self._store: Store | None = None
        self._connecting: asyncio.Lock | None = None
        self._thread = threading.Thread(target=self._serve, name="leader-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its loop, from a thread that runs no gRPC connection's
        event loop (a test's, on the in-memory store; the server's main loop uses
        ``aclose``)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    async def aclose(self) -> None:
        """Stop the thread from the server's main loop, which keeps running meanwhile: gRPC's
        asyncio poller hands every call's completion to that call's loop from the loop that
        registered it first, the main one. Blocked in a join, it delivered the closing
        connection's last completions only after this thread had closed its loop, and each
        was logged as an error ("Event loop is closed"). The thread's loop is left stopped,
        not closed (``_serve`` says why): the server process is ending."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._wind_down())
            # Not closed here: gRPC still hands a closed connection's last completions to this
            # loop now and then, after ``close`` returned, and each was logged as an error
            # ("Event loop is closed": in 8 of 15 runs of a script that stops as a server
            # does, with ``aclose``). Stopped, the loop takes them and runs nothing; it goes
            # with the server's process (``stop``, for tests without gRPC, closes it).

    async def _wind_down(self) -> None:
        """What still runs on this loop ends (a term's keep-alive, cancelled), then the
        connection closes."""
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.close()
        await self._loop.shutdown_asyncgens()

    def main_loop_silent(self) -> float | None:
        """Seconds since the main loop last came round, if more than the limit."""
        silent = time.monotonic() - self._main_loop_seen()
        return silent if silent > self._max_loop_silence else None

    async def run(self, keep: Callable[[StoreGetter], Coroutine[Any, Any, None]]) -> None:
        """Run ``keep`` on the thread, from the main loop, until it returns (the term is
        over); cancelling this cancels it there. ``keep`` gets the thread's connection from
        the getter it is given, at each refresh (a failure to connect is a failed refresh)."""
        future: Future[None] = asyncio.run_coroutine_threadsafe(keep(self._connected), self._loop)
        try:
            await asyncio.wrap_future(future)
        finally:
            future.cancel()

    async def _connected(self) -> Store:
        if self._connecting is None:
            self._connecting = asyncio.Lock()  # made on the thread's loop, used only there
        async with self._connecting:
            if self._store is None:
                store = self._open_store()
                await store.connect()
                self._store = store
            return self._store
