"""The test kit's TCP proxy (``tests.kit.tcp_proxy``): it forwards, a cut silences open and new
connections without closing them, a heal forwards again, against a real echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.kit.tcp_proxy import TcpProxy


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while line := self.rfile.readline():
            self.wfile.write(line)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def echoed(sock: socket.socket, text: bytes) -> bytes | None:
    """What comes back for one line, or None if nothing within the socket's timeout."""
    sock.sendall(text + b"\n")
    try:
        return sock.recv(1024).rstrip(b"\n")
    except TimeoutError:
        return None


def test_forwards_then_goes_silent_when_cut_and_forwards_again_when_healed(
    echo_port: int,
) -> None:
    with TcpProxy(echo_port) as proxy:
        before = socket.create_connection((proxy.host, proxy.port), timeout=0.3)
        assert echoed(before, b"one") == b"one"
        proxy.cut()
        assert echoed(before, b"two") is None  # open, silent: no answer, no reset
        during = socket.create_connection((proxy.host, proxy.port), timeout=0.3)
        assert echoed(during, b"three") is None  # accepted, never forwarded
        proxy.heal()
        assert before.recv(1024) == b""  # the silenced connections are closed
        assert during.recv(1024) == b""
        after = socket.create_connection((proxy.host, proxy.port), timeout=2)
        assert echoed(after, b"four") == b"four"
        for sock in (before, during, after):
            sock.close()
