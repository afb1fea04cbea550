"""Boot script of the theseus/example image (the original's example_mesos_image/boot.py).

1. Logs who it is, through guestutils: service, container (task id) and host address.
2. Logs ``get_node_list(service, minimum=0)`` for each service in ``WATCHES``.
3. Starts the watcher in this process (``watcher.start_watcher()``: a daemon thread); it calls
   ``watch_methods.service_change(service, delta)`` (next to this file) on every change.
4. Answers HTTP on the "api" port (``get_port('api', 5000)``) with its ``CONTAINER_NAME``,
   so that other containers can reach it.
5. On SIGTERM or SIGINT: stops serving and exits 0 at once.

Nothing but the standard library and Theseus's guest modules (on ``PYTHONPATH`` in
theseus/python-base). A failing lookup is logged, never fatal.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # the watcher imports watch_methods from sys.path

log = logging.getLogger("boot")


def attempt(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, logging (not raising) any error; None when it failed."""
    try:
        return call(*args, **kwargs)
    except BaseException as exc:  # an example must keep running
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.warning("%s failed: %s: %s", what, exc.__class__.__name__, exc)
        return None


def watched_services() -> list[str]:
    return [s.strip() for s in os.environ.get("WATCHES", "").split(",") if s.strip()]


class Handler(http.server.BaseHTTPRequestHandler):
    """Every GET answers this container's name."""

    def do_GET(self) -> None:
        body = (os.environ.get("CONTAINER_NAME", "") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the container log to boot's lines and the watcher's


def main() -> None:
    # The container's log: boot's lines and the watcher's (errors, retries), on stdout.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    guestutils = attempt("import guestutils", importlib.import_module, "guestutils")
    name = host = service = None
    if guestutils is not None:
        service = attempt("get_service_name()", guestutils.get_service_name)
        name = attempt("get_container_name()", guestutils.get_container_name)
        host = attempt("get_container_host_address()", guestutils.get_container_host_address)
    log.info("started service=%s container=%s host=%s pid=%d", service, name, host, os.getpid())

    watches = watched_services()
    if guestutils is not None:
        for watched in watches:
            nodes = attempt(
                f"get_node_list({watched!r})", guestutils.get_node_list, watched, minimum=0
            )
            if nodes is not None:
                log.info("get_node_list(%r) = %r", watched, nodes)
    watcher = attempt("import watcher", importlib.import_module, "watcher")
    if not watches:
        log.info("WATCHES is not set: not watching anything")
    elif watcher is not None and attempt("start_watcher()", watcher.start_watcher) is not None:
        log.info("watching %s", ",".join(watches))

    port = 5000
    if guestutils is not None:
        declared = attempt("get_port('api', 5000)", guestutils.get_port, "api", 5000)
        try:
            port = port if declared is None else int(declared)
        except ValueError:
            log.warning("api port %r is not a number: serving on %d", declared, port)
    server = attempt(
        f"serving HTTP on port {port}", http.server.ThreadingHTTPServer, ("", port), Handler
    )
    if server is not None:
        server.daemon_threads = True
        # A short poll interval: shutdown() on SIGTERM waits for at most one of them.
        serve = functools.partial(server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, name="http", daemon=True).start()
        log.info("serving HTTP on port %d", port)

    stop.wait()
    log.info("stopping (signal)")
    if server is not None:
        server.shutdown()
        server.server_close()
    logging.shutdown()
    sys.stdout.flush()
    # Not sys.exit: watcher threads may sit in a long-poll; nothing of theirs needs saving.
    os._exit(0)


if __name__ == "__main__":
    main()
