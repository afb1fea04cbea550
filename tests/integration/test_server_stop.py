"""Stopping a server while an agent holds its assignments long-poll open: the poll is answered
at once and the server exits cleanly, instead of cancelling it at uvicorn's graceful-shutdown
timeout (which logged an "Exception in ASGI application" per open long-poll)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.harness import start_cluster

pytestmark = pytest.mark.integration


def test_a_stopped_server_answers_its_long_polls_and_exits_cleanly(
    tmp_path: Path, busybox_image: str
) -> None:
    # A ready node's agent always has its next assignments long-poll open (30 s each).
    cluster = start_cluster(tmp_path, {"quiet-1": {"address": "127.0.0.81"}})
    try:
        server = cluster.processes["server"]
        server.stop(signal.SIGTERM, timeout=10)
        log = server.log.read_text(errors="replace")
    finally:
        cluster.stop()
    # uvicorn ends by re-raising the signal it caught, after its clean shutdown.
    assert server.popen.returncode in (0, -signal.SIGTERM), log[-2000:]
    assert "Application shutdown complete" in log
    assert "Exception in ASGI application" not in log, log[-2000:]
    assert "timeout graceful shutdown exceeded" not in log, log[-2000:]
