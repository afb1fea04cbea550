"""A TCP proxy on loopback that a test can cut and heal: the network between one agent and
its servers, so that only that agent is cut off while everything else runs on.

``TcpProxy(target_port)`` listens on a free port of 127.0.0.1 and forwards every connection to
the target; it runs its own event loop in a daemon thread, so that blocking tests drive it.

* ``cut()`` acts like a firewall that drops packets, the partition real networks meet: open
  connections go silent (what either side sends is swallowed, nothing is closed, so requests
  in flight hang until their own timeouts), and new connections are accepted but never
  forwarded.
* ``heal()`` forwards new connections again and closes the silenced ones, as their peers
  would have given up on them by then.
* ``close()`` (or leaving the ``with`` block) stops listening and closes everything.

Used by the fencing tests (``tests/integration/test_fencing.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from theseus.cluster.ports import free_port

CHUNK = 65536


class _Link:
    """One client connection and, unless it arrived while cut, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.writers: list[asyncio.StreamWriter] = [client]
        self.silenced = False  # it lived through a cut: closed at the heal

    def close(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.close()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.cut_now = False
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        self._run(self._set_cut(True))

    def heal(self) -> None:
        self._run(self._set_cut(False))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # --- on the proxy's loop --------------------------------------------------------------

    def _run(self, step: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(step, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _set_cut(self, cut: bool) -> None:
        self.cut_now = cut
        for link in list(self._links):
            if cut:
                link.silenced = True
            elif link.silenced:
                link.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.cut_now:  # dropped: accepted, and what it sends goes nowhere
                link.silenced = True
                await _swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the target is down: the client sees its connection closed
            link.writers.append(up_writer)
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                if link.silenced:
                    continue  # cut: the bytes are lost on the way
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.close()  # one side ended: so does the other


async def _swallow(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(CHUNK):
            pass
