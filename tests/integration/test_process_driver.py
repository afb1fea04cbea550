"""The ``process`` driver: a node without Docker runs the spec's command as a process, with
the same reporting (running, exit code, replacement) as containers."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def process_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    agent = {"address": "127.0.0.5", "driver": "process", "cpus": 2.0, "mem": 1024}
    cluster = start_cluster(Path(tmp_path_factory.mktemp("process-cluster")), {"proc-1": agent})
    yield cluster
    with cluster.client() as client:
        for group in client.groups().groups:
            client.remove(group.service)
        wait_until(lambda: not client.tasks(include_stopped=True).tasks, 30, "tasks collected")
    cluster.stop()


def test_process_tasks_run_serve_their_port_log_and_are_replaced(process_cluster: Cluster) -> None:
    command = (
        'echo "hello from $CONTAINER_NAME on $HOST"; '
        'mkdir -p "$TMPDIR_WWW" && echo "$CONTAINER_NAME" > "$TMPDIR_WWW/index.html"; '
        'exec busybox httpd -f -p "$HOST:$PORT_HTTP" -h "$TMPDIR_WWW"'
    )
    www = process_cluster.root / "www"
    spec = {
        "image": "unused-by-the-process-driver",
        "command": command,
        "ports": {"http": 8080},
        "environment": {"TMPDIR_WWW": str(www)},
        "instances": 1,
        "cpus": 0.1,
        "mem": 32,
    }
    with process_cluster.client() as client:
        client.deploy(json.dumps({"deploy": {"web": spec}}), "application/json")

        def one_running() -> TaskInfo | None:
            tasks = [t for t in client.tasks("web").tasks if t.state == "running"]
            return tasks[0] if len(tasks) == 1 else None

        task = wait_until(one_running, 30, "the process task running")
        port = task.ports["http"].host_port
        page = wait_until(
            lambda: _get(f"http://{task.address}:{port}/"), 15, "the process serving its port"
        )
        assert task.id in page

        lines = list(client.logs(task.id))
        assert f"hello from {task.id} on 127.0.0.5" in lines

        # The process dies: the task reports its exit and a replacement runs.
        pid = _pid_listening(port)
        os.kill(pid, signal.SIGKILL)
        replacement = wait_until(
            lambda: (t := one_running()) and t.id != task.id and t, 30, "a replacement process"
        )
        history = {t.id: t for t in client.tasks("web", include_stopped=True).tasks}
        assert history[task.id].state == "exited"
        assert replacement.node == "proc-1"


def _get(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _pid_listening(port: int) -> int:
    """The pid of the process listening on ``port`` (from /proc, no extra tools)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inode = fields[9]
    assert inode is not None, f"nobody listens on {port}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no process owns the socket on {port}")
