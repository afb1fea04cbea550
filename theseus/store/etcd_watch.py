"""``WatchStream``: one etcd watch read by a thread of its own with gRPC's blocking API, and
handed to the event loop in batches. ``EtcdStore.watch`` (``theseus.store.etcd``) is its only
caller; the server's cache follows etcd through it.

Why a thread: read with gRPC's asyncio API, every watch message costs the event loop two or
three of its rounds (the read is queued, gRPC's poller thread wakes the loop, the reading task
resumes, then the consumer). While thousands of agents keep the loop busy a round takes tens
of milliseconds, so the watch is read at a few dozen messages a second; etcd then holds
thousands of events for it (its ``slow_watcher`` metric) and every write that waits to read
itself back (a deploy, a scale) waits seconds. Here the thread reads each message as it
arrives, with the GIL released while it waits, and the loop takes whatever has arrived in one
go, however many messages that is.

The thread reads at most ``MAX_BUFFERED`` changes ahead of the loop, then waits; etcd keeps the
rest, as it does for any slow watcher.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from theseus.store.base import Change, HistoryCompacted

log = logging.getLogger(__name__)

MAX_BUFFERED = 50_000  # changes read but not yet taken by the loop
_DONE = object()  # the stream ended without an error


class WatchCancelled(Exception):
    """etcd cancelled the watch (a member without a leader, for one): resume elsewhere."""


class WatchStream:
    """The changes to ``[start, end)`` from ``start_revision`` on, through ``channel``.

    ``watch_method`` is the blocking Watch method of ``channel`` and ``create_request`` the
    watch's create request (both from ``theseus.store.etcd``, which owns etcd's protocol).
    Read ``changes()``; leaving it (or ``close``) cancels the stream and closes the channel.
    Errors: ``grpc.RpcError`` as gRPC raised it, ``HistoryCompacted``, ``WatchCancelled``.
    """

    def __init__(
        self,
        channel: Any,
        watch_method: Any,
        create_request: Any,
        metadata: Sequence[tuple[str, str]],
    ) -> None:
        self._channel = channel
        self._watch_method = watch_method
        self._create_request = create_request
        self._metadata = tuple(metadata)
        self._closing = threading.Event()
        self._room = threading.Condition()
        self._items: deque[list[Change] | BaseException | object] = deque()
        self._buffered = 0  # changes in _items
        self._wake_pending = False
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._call: Any = None
        self._thread = threading.Thread(target=self._read, name="etcd-watch", daemon=True)

    def _requests(self) -> Iterator[Any]:
        """What gRPC sends: the create request, then nothing until the stream closes."""
        yield self._create_request
        self._closing.wait()

    @property
    def buffered(self) -> int:
        """Changes the thread has read that the loop has not taken yet."""
        with self._room:
            return self._buffered

    # -- the reading thread ------------------------------------------------------------------

    def _read(self) -> None:
        try:
            self._call = self._watch_method(self._requests(), metadata=self._metadata)
            if self._closing.is_set():  # closed while the call was being opened
                self._call.cancel()
            for response in self._call:
                if response.compact_revision:
                    raise HistoryCompacted(f"compacted up to {response.compact_revision}")
                if response.canceled:
                    raise WatchCancelled(response.cancel_reason or "watch cancelled by etcd")
                if response.events:
                    self._hand([_change(event) for event in response.events])
            self._hand(_DONE)
        except Exception as exc:  # handed to the loop, which raises it to the watch's reader
            if not self._closing.is_set():
                self._hand(exc)

    def _hand(self, item: list[Change] | BaseException | object) -> None:
        with self._room:
            while self._buffered >= MAX_BUFFERED and not self._closing.is_set():
                self._room.wait()
            self._items.append(item)
            if isinstance(item, list):
                self._buffered += len(item)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody reads any more
                self._closing.set()

    # -- the event loop ----------------------------------------------------------------------

    def _wake(self) -> None:
        with self._room:
            self._wake_pending = False
        self._arrived.set()

    def _take(self) -> list[list[Change] | BaseException | object]:
        with self._room:
            items = list(self._items)
            self._items.clear()
            self._buffered = 0
            self._room.notify_all()
        return items

    async def changes(self) -> AsyncIterator[Change]:
        """Every change, in etcd's order; each batch the thread handed is taken whole."""
        self._thread.start()
        try:
            while True:
                # Cleared before taking: a batch handed after the take sets it again. Wait
                # only when nothing has arrived: the wake-up of what did may not have run yet.
                self._arrived.clear()
                items = self._take()
                if not items:
                    await self._arrived.wait()
                    continue
                for item in items:
                    if isinstance(item, list):
                        for change in item:
                            yield change
                    elif item is _DONE:
                        return
                    else:
                        assert isinstance(item, BaseException)
                        raise item
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading: cancel the call, let the thread go, close the channel."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._room:
            self._room.notify_all()
        call = self._call
        if call is not None:
            call.cancel()
        self._channel.close()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the reading thread to end (after ``close``); whether it
        did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _change(event: Any) -> Change:
    kv = event.kv
    # etcd's event type: 0 is PUT, 1 is DELETE.
    return Change(
        key=kv.key.decode(),
        value=kv.value if event.type == 0 else None,
        revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
    )
