"""Tell a container's code when the services it watches gain or lose instances.

Usage, inside a container (standard library only; copy this file next to ``guestutils.py``)::

    WATCHES=ingestor,haproxy python -m watcher        # or: python -m theseus.watcher

or from the image's start script, in a daemon thread of the same process::

    import watcher
    watcher.start_watcher()                           # WATCHES, watch_methods.service_change
    watcher.start_watcher(["ingestor"], callback=my_function)

For every change the callback gets ``(service, delta)``: ``delta`` is ``+n`` when ``n``
instances of ``service`` were registered, ``-n`` when ``n`` went away. Without a callback the
watcher imports the user's ``watch_methods`` module (from ``sys.path``, then the current
directory; imported once, retried on the next change if the import fails) and calls
``watch_methods.service_change(service, delta)``.

How it works: one long-poll, for all watched services at once, on the node agent's discovery
endpoint (``GET /v1/registry/watch``, see ``guestutils``). It keeps each service's set of
instance names and the registry index; every answer is compared with those sets. The first
answer is the baseline and fires nothing. If the agent cannot be reached (or answers an error)
the watcher retries with a backoff (0.1 s doubling to 5 s) from the same index and sets, so
whatever changed meanwhile is reported, as set differences, once it is back.

Deviations from the original Theseus watcher (seed report 2.6 and 3.2 #25-26):

* the first argument is the bare service name (``'ingestor'``); the original passed the etcd
  key ``'/services/ingestor'`` (and v1 ``'/ingestor'``);
* a change that adds and removes instances in one step gives two calls (``+added`` and
  ``-removed``), never one net delta; nothing fires when the instances did not change (the
  original fired ``0`` on config writes, and merged or lost changes between its polls);
* a service that does not exist yet is watched (it fires when instances appear); the original's
  thread died;
* an exception in the callback (or in importing ``watch_methods``) is logged with its
  traceback and the watcher goes on; the original swallowed every exception silently;
* one thread and one connection for all services (no subprocess, no thread per key); a service
  listed twice in ``WATCHES`` is watched once; ``CONTAINER_HOST_ADDRESS`` is not needed (the
  original looped forever without it); labeled watches are still not supported.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

try:
    from theseus import guestutils
except ImportError:  # copied into an image next to guestutils.py
    import guestutils  # type: ignore[no-redef,import-not-found]

__all__ = ["Watcher", "WatcherThread", "main", "start_watcher", "watched_services"]

log = logging.getLogger("theseus.watcher")

Callback = Callable[[str, int], object]

MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
DEFAULT_WAIT = 30.0  # seconds one long-poll may be held by the agent


def watched_services(value: str | None = None) -> list[str]:
    """``WATCHES`` (or ``value``) split on ``,``: stripped, empty entries and repeats dropped."""
    raw = os.environ.get("WATCHES", "") if value is None else value
    services: list[str] = []
    for item in raw.split(","):
        name = item.strip()
        if name and name not in services:
            services.append(name)
    return services


class _WatchMethods:
    """The default callback: ``watch_methods.service_change(service, delta)``."""

    def __init__(self) -> None:
        self.module: Any = None

    def __call__(self, service: str, delta: int) -> None:
        if self.module is None:
            importlib.invalidate_caches()
            cwd = os.getcwd()
            if "" not in sys.path and cwd not in sys.path:
                sys.path.append(cwd)
            try:
                self.module = importlib.import_module("watch_methods")
            except ImportError:
                log.exception(
                    "cannot import watch_methods; service_change(%r, %d) not delivered",
                    service,
                    delta,
                )
                return
        self.module.service_change(service, delta)


class Watcher:
    """Long-polls the registry for ``services`` and calls ``callback(service, delta)``."""

    def __init__(
        self,
        services: Iterable[str],
        callback: Callback | None = None,
        *,
        wait: float = DEFAULT_WAIT,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.services = watched_services(",".join(services))
        self.callback: Callback = callback if callback is not None else _WatchMethods()
        self.wait = wait
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.index = 0
        self.known: dict[str, set[str]] | None = None  # None until the baseline
        self._stopped = threading.Event()
        self._lock = threading.RLock()  # stop() may run in a signal handler on this thread
        self._connection: http.client.HTTPConnection | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """Stop ``run`` soon: aborts the long-poll in flight and any backoff sleep."""
        self._stopped.set()
        with self._lock:
            sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        """Watch until ``stop()``; never raises because of the agent or the callback."""
        if not self.services:
            log.info("no services to watch")
            return
        log.info("watching %s", ", ".join(self.services))
        backoff = self.min_backoff
        failing = False
        while not self.stopped:
            try:
                answer = guestutils.watch_registry(
                    self.services, self.index, self.wait, on_connection=self._track
                )
            except guestutils.DiscoveryError as exc:
                if self.stopped:
                    break
                log.log(logging.DEBUG if failing else logging.WARNING, "watch failed: %s", exc)
                failing = True
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if failing:
                log.info("discovery endpoint reachable again")
            failing, backoff = False, self.min_backoff
            if not self.stopped:
                self.handle(answer)

    def handle(self, answer: dict[str, Any]) -> None:
        """Compare one watch answer with the known instances and fire the callbacks."""
        lists = answer.get("services") or {}
        current = {service: set(lists.get(service) or []) for service in self.services}
        known, self.known, self.index = self.known, current, int(answer["index"])
        if known is None:
            log.info(
                "baseline: %s",
                ", ".join(f"{service}={len(names)}" for service, names in current.items()),
            )
            return
        for service in self.services:
            added = current[service] - known[service]
            removed = known[service] - current[service]
            if added:
                self._fire(service, len(added))
            if removed:
                self._fire(service, -len(removed))

    def _fire(self, service: str, delta: int) -> None:
        log.info("service_change(%r, %d)", service, delta)
        try:
            self.callback(service, delta)
        except Exception:
            log.exception("service_change(%r, %d) raised", service, delta)

    def _track(self, connection: http.client.HTTPConnection | None) -> None:
        with self._lock:
            self._connection = connection
        if connection is not None and self.stopped:
            raise guestutils.DiscoveryError("watcher stopped")


class WatcherThread(threading.Thread):
    """The daemon thread ``start_watcher`` returns; ``stop()`` ends it."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(name="theseus-watcher", daemon=True)
        self.watcher = watcher

    def run(self) -> None:
        self.watcher.run()

    def stop(self, timeout: float | None = None) -> None:
        self.watcher.stop()
        self.join(timeout)


def start_watcher(
    services: list[str] | None = None,
    callback: Callback | None = None,
    *,
    wait: float = DEFAULT_WAIT,
    min_backoff: float = MIN_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
) -> WatcherThread:
    """Watch ``services`` (default: ``WATCHES``) in a daemon thread; returns the started thread.

    ``callback(service, delta)`` defaults to ``watch_methods.service_change``.
    """
    watcher = Watcher(
        watched_services() if services is None else services,
        callback,
        wait=wait,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
    )
    thread = WatcherThread(watcher)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    """``python -m watcher [service,...]``: watch in the foreground until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watcher %(levelname)s %(message)s")
    args = sys.argv[1:] if argv is None else argv
    services = watched_services(",".join(args)) if args else watched_services()
    if not services:
        log.info("WATCHES is not set; not watching anything")
        return 0
    watcher = Watcher(services)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        watcher.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    watcher.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
