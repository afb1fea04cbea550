"""The ``theseus`` command as tests run it: against a cluster of ``tests/kit/cluster.py``, as
a user types it (a child process, ``--server`` set to the cluster's), or in this process
against a fake server (typer's ``CliRunner``, an ``httpx.MockTransport`` behind the client)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.kit.cluster import Cluster
from theseus.cli.main import app
from theseus.cli.output import CliState

Handler = Callable[[httpx.Request], httpx.Response]  # the fake server


def theseus(
    cluster: Cluster, *args: str, expect: int | None = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``theseus --server URL ARGS...``; with ``expect``, fail (showing what it said)
    unless it exits with that code."""
    result = subprocess.run(
        [sys.executable, "-m", "theseus", "--server", cluster.server_url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None and result.returncode != expect:
        raise AssertionError(
            f"theseus {' '.join(args)} exited with {result.returncode}, not {expect}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def invoke(handler: Handler, *args: str, input: str | None = None) -> Any:
    """Run ``theseus --server http://fake:5000 ARGS...`` in this process, its requests
    answered by ``handler`` (``input``: its stdin); typer's ``Result``."""
    state = CliState(transport=httpx.MockTransport(handler))
    argv = ["--server", "http://fake:5000", *args]
    return CliRunner().invoke(app, argv, obj=state, input=input)
