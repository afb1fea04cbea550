"""A server's start and stop around its dependencies: started before etcd answers, it waits
for it; stopped while an agent holds its assignments long-poll open, it answers the poll at
once and exits cleanly, instead of cancelling it at uvicorn's graceful-shutdown timeout (which
logged an "Exception in ASGI application" per open long-poll)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests.kit.cluster import new_cluster, start_cluster
from tests.kit.wait import wait_until

pytestmark = pytest.mark.integration


def test_a_stopped_server_answers_its_long_polls_and_exits_cleanly(
    tmp_path: Path, busybox_image: str
) -> None:
    # A ready node's agent always has its next assignments long-poll open (30 s each).
    cluster = start_cluster(tmp_path, {"quiet-1": {"address": "127.0.0.81"}})
    try:
        server = cluster.processes["server"]
        server.stop(signal.SIGTERM, grace=10)
        log = server.log.read_text(errors="replace")
    finally:
        cluster.stop()
    # uvicorn ends by re-raising the signal it caught, after its clean shutdown.
    assert server.returncode in (0, -signal.SIGTERM), log[-2000:]
    assert "Application shutdown complete" in log
    assert "Exception in ASGI application" not in log, log[-2000:]
    assert "timeout graceful shutdown exceeded" not in log, log[-2000:]


def test_a_server_started_before_etcd_waits_for_it(tmp_path: Path) -> None:
    """A server (re)started while etcd is away, or electing, retries instead of exiting:
    nothing would start it again (the chaos run lost both servers that way)."""
    cluster = new_cluster(tmp_path)
    errors: list[BaseException] = []

    def start_server() -> None:
        try:
            cluster.start_server()  # returns once the server answers
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    starter = threading.Thread(target=start_server, daemon=True)
    try:
        starter.start()
        wait_until(lambda: "server" in cluster.processes, 10, "the server spawned")
        log = cluster.processes["server"].log
        wait_until(lambda: "etcd unavailable at startup" in log.read_text(), 20, "a retry")
        assert cluster.processes["server"].alive(), "the server waits, alive"
        cluster.start_etcd()
        starter.join(40)
        assert not starter.is_alive() and not errors, errors
        with cluster.client() as client:
            assert client.health().cluster_id
    finally:
        cluster.stop()
