"""Containers' and processes' logs are bounded, ``theseus logs -f`` follows them across a
rotation, and an exited task's logs stay readable until its record goes.

One cluster: a docker agent and a process agent, each with a small default bound. A chatty
task prints numbered lines quickly; its files on disk (found through ``docker inspect``'s
LogPath, or the process agent's state directory) are measured while it runs, and ``theseus
logs -f`` runs as a user types it, its lines read as they come.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cli import theseus
from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration

DOCKER_NODE, PROCESS_NODE = "logs-docker", "logs-process"
KIB = 1024
# The docker agent's default (a spec overrides it below); the process agent's, used as is.
DOCKER_DEFAULT = ("64k", 2)
PROCESS_DEFAULT = ("8k", 2)
# A line a few milliseconds, numbered: "seq 123 ......".
CHATTY = (
    "i=0; while :; do i=$((i+1)); "
    'echo "seq $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; sleep 0.005; done'
)
ON_DOCKER = [["hostname", "CLUSTER", DOCKER_NODE]]
ON_PROCESS = [["hostname", "CLUSTER", PROCESS_NODE]]


@pytest.fixture(scope="module")
def logs_cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents: dict[str, dict[str, Any]] = {
        DOCKER_NODE: {"address": "127.0.15.2", "cpus": 2.0, "mem": 1024, "logs": DOCKER_DEFAULT},
        PROCESS_NODE: {
            "address": "127.0.15.3",
            "driver": "process",
            "cpus": 2.0,
            "mem": 1024,
            "logs": PROCESS_DEFAULT,
        },
    }
    cluster = start_cluster(Path(tmp_path_factory.mktemp("logs-cluster")), agents)
    yield cluster
    with cluster.client() as client:
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        wait_until(lambda: not client.tasks(include_stopped=True).tasks, 30, "tasks collected")
    cluster.stop()


def _deploy(cluster: Cluster, **groups: dict[str, Any]) -> None:
    with cluster.client() as client:
        client.deploy(json.dumps({"deploy": groups}), "application/json")


def _running(cluster: Cluster, service: str) -> TaskInfo:
    def one() -> TaskInfo | None:
        with cluster.client() as client:
            tasks = [t for t in client.tasks(service).tasks if t.state == "running"]
        return tasks[0] if len(tasks) == 1 else None

    return wait_until(one, 60, f"{service} running")


def _remove(cluster: Cluster, service: str) -> None:
    with cluster.client() as client:
        client.remove(service)
        wait_until(
            lambda: not client.tasks(service, include_stopped=True).tasks, 30, f"{service} gone"
        )


class Follower:
    """``theseus logs -f TASK`` as a user runs it; its lines collected as they arrive."""

    def __init__(self, cluster: Cluster, task_id: str) -> None:
        argv = [sys.executable, "-m", "theseus", "--server", cluster.server_url]
        self.process = subprocess.Popen(
            [*argv, "logs", "-f", "--tail", "0", task_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.numbers: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "seq" and parts[1].isdigit():
                self.numbers.append(int(parts[1]))

    def last(self) -> int:
        return self.numbers[-1] if self.numbers else 0

    def stop(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=10)
        return err


def _files_and_sizes(paths: list[Path]) -> list[int]:
    sizes = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            continue
    return sizes


def _follow_across_rotations(
    cluster: Cluster,
    task_id: str,
    current_file: Any,
    sizes: Any,
    bound: int,
    max_files: int,
    resent: int = 0,
) -> list[int]:
    """Follow the task while its current log file is replaced twice (a rotation: a new inode
    at its path); meanwhile, its files on disk never hold more than ``bound`` (sampled at
    each look). No line is lost; the follower sees each once, in order, but for up to
    ``resent`` lines sent again at a rotation (Docker's follow does so). The numbers seen."""
    follower = Follower(cluster, task_id)
    try:
        wait_until(lambda: follower.last() > 0, 30, "the first followed lines")
        inodes: list[int] = []
        samples: list[list[int]] = []

        def rotated_twice() -> bool:
            found = sizes()
            samples.append(found)
            assert len(found) <= max_files and sum(found) <= bound, (found, bound)
            inode = current_file().stat().st_ino
            if not inodes or inodes[-1] != inode:
                inodes.append(inode)
            return len(inodes) >= 3

        wait_until(rotated_twice, 60, "two rotations of the log file")
        after = follower.last()
        # Lines written after the rotations keep arriving, without a restart of the command.
        wait_until(lambda: follower.last() > after + 50, 30, "lines after the rotations")
        assert follower.process.poll() is None, "theseus logs -f ended"
        assert any(len(found) == max_files for found in samples)  # rotated files were there
    finally:
        err = follower.stop()
    numbers = follower.numbers
    backs = [(a, b) for a, b in zip(numbers, numbers[1:], strict=False) if b <= a]
    assert all(a - b < resent for a, b in backs), f"lines out of order: {backs}"
    assert len(backs) <= len(inodes) + 2, f"more repeats than rotations: {backs}"
    missing = set(range(numbers[0], numbers[-1] + 1)) - set(numbers)
    assert not missing, f"lines lost across the rotations: {sorted(missing)[:10]} ({err})"
    return numbers


def test_a_chatty_containers_logs_stay_bounded_and_are_followed_across_rotations(
    logs_cluster: Cluster, docker_client: docker.DockerClient
) -> None:
    spec = {
        "image": "theseus/busybox:latest",
        "command": CHATTY,
        "cpus": 0.2,
        "mem": 32,
        "constraints": ON_DOCKER,
        "logs": {"max_size": "16k", "max_files": 2},  # over the agent's 64k
        "task_kill_grace_period_seconds": 1,
    }
    _deploy(logs_cluster, chatty=spec)
    task = _running(logs_cluster, "chatty")
    assert task.container_id is not None
    info = docker_client.api.inspect_container(task.container_id)
    assert info["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "2", "max-size": str(16 * KIB)},
    }
    log_path = Path(info["LogPath"])

    def sizes() -> list[int]:
        return _files_and_sizes([log_path, log_path.with_name(log_path.name + ".1")])

    # Docker's json-file checks the size after each write: a file may pass it by one line.
    # Its follow API sends the last few lines before a rotation again (seen here: 1 to 4).
    slack = 2 * 200
    bound = 2 * 16 * KIB + slack
    _follow_across_rotations(logs_cluster, task.id, lambda: log_path, sizes, bound, 2, resent=10)
    _remove(logs_cluster, "chatty")


def test_each_pod_member_gets_the_groups_bound_over_the_agents(
    logs_cluster: Cluster, docker_client: docker.DockerClient
) -> None:
    member = {"image": "theseus/busybox:latest", "command": "sleep 3600", "cpus": 0.05, "mem": 16}
    spec = {
        "containers": [{"name": "a", **member}, {"name": "b", **member}],
        "constraints": ON_DOCKER,
        "logs": {"max_size": "32k"},  # max_files: the agent's (2)
        "task_kill_grace_period_seconds": 1,
    }
    _deploy(logs_cluster, pod=spec)
    task = _running(logs_cluster, "pod")
    found = docker_client.api.containers(filters={"label": f"theseus.task={task.id}"})
    configs = {
        c["Labels"].get("theseus.pod.member", ""): docker_client.api.inspect_container(c["Id"])[
            "HostConfig"
        ]["LogConfig"]["Config"]
        for c in found
    }
    member_bound = {"max-size": str(32 * KIB), "max-file": "2"}
    assert configs == {
        "a": member_bound,
        "b": member_bound,
        "": {"max-size": str(1024 * KIB), "max-file": "1"},  # the network container's
    }
    _remove(logs_cluster, "pod")


def test_a_chatty_processs_logs_stay_bounded_and_are_followed_across_rotations(
    logs_cluster: Cluster,
) -> None:
    spec = {
        "image": "unused-by-the-process-driver",
        "command": CHATTY,
        "cpus": 0.2,
        "mem": 32,
        "constraints": ON_PROCESS,  # the agent's 8k × 2
        "task_kill_grace_period_seconds": 1,
    }
    _deploy(logs_cluster, chatty_process=spec)
    task = _running(logs_cluster, "chatty_process")
    log_dir = logs_cluster.root / "agents" / PROCESS_NODE / "logs"
    current = log_dir / f"{task.id}.log"

    def sizes() -> list[int]:
        names = [p for p in log_dir.iterdir() if p.name.startswith(f"{task.id}.log")]
        assert {p.name for p in names} <= {f"{task.id}.log", f"{task.id}.log.1"}, names
        return _files_and_sizes(names)

    _follow_across_rotations(logs_cluster, task.id, lambda: current, sizes, 16 * KIB, 2)
    # Without -f, the tail spans the rotated file (a full one holds ~170 lines, the current
    # one fewer): the last lines are whole and in order.
    tail = theseus(logs_cluster, "logs", "--tail", "150", task.id).stdout.splitlines()
    seqs = [int(line.split()[1]) for line in tail]
    assert len(seqs) == 150 and seqs == list(range(seqs[0], seqs[0] + 150))
    _remove(logs_cluster, "chatty_process")
    assert not [p for p in log_dir.iterdir() if p.name.startswith(task.id)]  # removed with it


@pytest.mark.parametrize(
    ("node", "constraints"), [(DOCKER_NODE, ON_DOCKER), (PROCESS_NODE, ON_PROCESS)]
)
def test_an_exited_tasks_logs_stay_readable_until_its_record_goes(
    logs_cluster: Cluster, docker_client: docker.DockerClient, node: str, constraints: Any
) -> None:
    service = f"short-{'docker' if node == DOCKER_NODE else 'process'}"
    spec = {
        "image": "theseus/busybox:latest",
        "command": 'echo "first words of $CONTAINER_NAME"; echo "last words"; exit 3',
        "cpus": 0.1,
        "mem": 32,
        "constraints": constraints,
        "backoff_seconds": 1,
    }
    _deploy(logs_cluster, **{service: spec})
    with logs_cluster.client() as client:

        def exited_and_replaced() -> tuple[TaskInfo, list[TaskInfo]] | None:
            tasks = client.tasks(service, include_stopped=True).tasks
            dead = [t for t in tasks if t.state == "exited" and t.desired == "stop"]
            # A successor of the first exited task has itself exited: the first's exit was
            # long handled by its agent (which used to remove its container at once).
            if len(dead) < 2:
                return None
            return min(dead, key=lambda t: t.created_at), dead

        first, dead = wait_until(exited_and_replaced, 60, "two exits of the short task")
    assert first.exit_code == 3
    words = theseus(logs_cluster, "logs", first.id).stdout
    assert f"first words of {first.id}" in words and "last words" in words
    if node == DOCKER_NODE:
        assert first.container_id is not None
        kept = docker_client.api.containers(all=True, filters={"id": first.container_id})
        assert kept and kept[0]["State"] == "exited"
    _remove(logs_cluster, service)
    # The record is gone: so is the container (or the process's files).
    if node == DOCKER_NODE:
        wait_until(
            lambda: (
                not docker_client.api.containers(
                    all=True, filters={"label": f"theseus.service={service}"}
                )
            ),
            30,
            "the exited containers removed with their records",
        )
    else:
        log_dir = logs_cluster.root / "agents" / PROCESS_NODE / "logs"
        wait_until(
            lambda: not [p for p in log_dir.iterdir() if p.name.startswith(service)],
            30,
            "the exited processes' logs removed with their records",
        )


def test_a_bad_logs_key_is_a_422_naming_it_and_plan_shows_the_bound(
    logs_cluster: Cluster, tmp_path: Path
) -> None:
    document = {"deploy": {"bad": {"image": "x", "logs": {"max_size": "huge", "max_files": 0}}}}
    response = httpx.post(f"{logs_cluster.server_url}/deploy", json=document, timeout=10)
    assert response.status_code == 422
    paths = {d["path"] for d in response.json()["details"]}
    assert paths == {"deploy.bad.logs.max_size", "deploy.bad.logs.max_files"}
    with logs_cluster.client() as client:
        assert not client.groups("bad").groups  # nothing changed
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "deploy:\n  planned:\n    image: theseus/busybox:latest\n"
        "    logs: {max_size: 5m, max_files: 2}\n"
    )
    plan = theseus(logs_cluster, "plan", "-f", str(plan_file)).stdout
    assert "logs kept: 5m × 2 files per container" in plan
