"""A fake node agent for the guestutils, watcher and image tests: the discovery endpoint,
stdlib only.

``FakeAgent`` serves ``GET /v1/registry/<service>`` and the ``/v1/registry/watch`` long-poll
from registry data the test controls, on a unix socket or on 127.0.0.1 TCP, with the same JSON
shapes as the real agent (``RegistryService``, ``RegistryWatch``, ``{"message": ...}`` errors).
It can be stopped (in-flight long-polls are cut without an answer, as when an agent dies) and
started again on the same address, keeping its registry.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any


def entry(
    service: str,
    name: str,
    host: str = "10.0.0.1",
    labels: list[str] | None = None,
    ports: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """A ``ContainerEntry``; ``ports`` maps a name to ``(host port, container port)``."""
    return {
        "service_name": service,
        "instance_name": name,
        "instance_host": host,
        "labels": sorted(labels or []),
        "node": "node-" + host,
        "port_mapping": {
            port: {
                "external": ["0.0.0.0", f"{host_port}/tcp"],
                "exposed": f"{container_port}/tcp",
                "host_port": host_port,
                "container_port": container_port,
            }
            for port, (host_port, container_port) in (ports or {}).items()
        },
    }


def group(labels: list[str], *containers: dict[str, Any]) -> dict[str, Any]:
    """A ``RegistryGroup``."""
    return {"labels": sorted(labels), "config": {"labels": labels}, "containers": list(containers)}


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class FakeAgent:
    """The discovery endpoint of an agent; ``address`` is what ``THESEUS_DISCOVERY`` should be."""

    def __init__(self, unix_path: str | None = None) -> None:
        self.unix_path = unix_path
        self.port = 0
        self.index = 1
        self.groups: dict[str, list[dict[str, Any]]] = {}
        self.changed: dict[str, int] = {}  # service -> index of its last change
        self.watches: list[tuple[list[str], int, float]] = []  # every watch request
        self.paths: list[str] = []
        self.pending = 0  # long-polls being held
        self.errors: list[int] = []  # statuses to answer the next requests with
        self.cond = threading.Condition()
        self.closing = False
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        if self.unix_path is not None:
            return "unix://" + self.unix_path
        return f"http://127.0.0.1:{self.port}"

    # --- the registry ---------------------------------------------------------------------

    def set_groups(self, service: str, groups: list[dict[str, Any]]) -> None:
        with self.cond:
            self.index += 1
            self.groups[service] = groups
            self.changed[service] = self.index
            self.cond.notify_all()

    def set_instances(self, service: str, *names: str) -> None:
        """One unlabeled group of ``service`` with exactly these instances."""
        self.set_groups(service, [group([], *(entry(service, name) for name in names))])

    def instances(self, service: str) -> list[str]:
        return sorted(
            c["instance_name"] for g in self.groups.get(service, []) for c in g["containers"]
        )

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        # Not a poll (``tests/kit/wait.py``): the handlers notify ``cond`` at every change.
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError("fake agent: condition not reached in time")

    def wait_for_poll(self, min_index: int = 1, timeout: float = 5.0) -> None:
        """Until a long-poll from ``min_index`` on is held (the watcher is waiting)."""
        self.wait_until(
            lambda: self.pending > 0 and any(i >= min_index for _, i, _ in self.watches), timeout
        )

    # --- serving --------------------------------------------------------------------------

    def start(self) -> FakeAgent:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                agent._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server: socketserver.BaseServer
        if self.unix_path is not None:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            server = _UnixServer(self.unix_path, Handler)
        else:
            server = _TCPServer(("127.0.0.1", self.port), Handler)
            self.port = server.server_address[1]
        with self.cond:
            self.closing = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held long-polls are cut without an answer."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        with self.cond:  # the held long-polls have seen ``closing`` and are gone
            self.cond.wait_for(lambda: self.pending == 0, 5)

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        with self.cond:
            self.paths.append(request.path)
            status = self.errors.pop(0) if self.errors else 0
        if status:
            self._send(request, status, {"message": f"injected {status}"})
        elif url.path == "/v1/registry/watch":
            self._watch(request, query)
        elif url.path.startswith("/v1/registry/"):
            service = urllib.parse.unquote(url.path[len("/v1/registry/") :])
            with self.cond:
                body = {
                    "service": service,
                    "index": self.index,
                    "groups": self.groups.get(service, []),
                }
            self._send(request, 200, body)
        else:
            self._send(request, 404, {"message": f"no route {url.path}"})

    def _watch(self, request: http.server.BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        services = [s for s in query.get("services", "").split(",") if s]
        index, wait = int(query.get("index", "0")), float(query.get("wait", "30"))
        deadline = time.monotonic() + wait
        with self.cond:
            self.watches.append((services, index, wait))
            self.pending += 1
            self.cond.notify_all()  # wakes wait_for_poll
            try:
                while not self.closing and index != 0:
                    if any(self.changed.get(s, 0) > index for s in services):
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.cond.wait(remaining)
                closing = self.closing
                body = {"index": self.index, "services": {s: self.instances(s) for s in services}}
            finally:
                self.pending -= 1
                self.cond.notify_all()
        if closing:  # the agent "died": no answer, the connection is just closed
            request.close_connection = True
            return
        self._send(request, 200, body)

    @staticmethod
    def _send(request: http.server.BaseHTTPRequestHandler, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
