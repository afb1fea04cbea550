"""Agent-run health checks on a real 3-node cluster (docs/health.md): a failing check takes
the task out of the registry within about two intervals, shows in the API, gets the task
killed after ``max_consecutive_failures`` and replaced, and the replacement is registered once
healthy; a task in its grace period is not registered until its first success."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy
from theseus.agent.drivers.base import DriverError, Owner
from theseus.agent.drivers.docker import DockerDriver
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration

NODES = {
    "h-1": {"address": "127.0.0.41"},
    "h-2": {"address": "127.0.0.42"},
    "h-3": {"address": "127.0.0.43"},
}
INTERVAL = 0.5
FAST = {
    "interval_seconds": INTERVAL,
    # Longer than the interval (allowed; the next probe waits): a docker exec on a loaded CI
    # machine has taken over 0.4 s, and a timeout is not the failure these tests cause.
    "timeout_seconds": 2.0,
    "grace_period_seconds": 5,
    "max_consecutive_failures": 3,
}
WEB: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "ports": {"http": 5000},
    "cpus": 0.05,
    "mem": 32,
    "task_kill_grace_period_seconds": 2,
}


@pytest.fixture(scope="module")
def health_cluster(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> Iterator[Cluster]:
    cluster = start_cluster(Path(tmp_path_factory.mktemp("health")), NODES)
    yield cluster
    cluster.stop()


@pytest.fixture
def client(health_cluster: Cluster) -> Iterator[ServerClient]:
    with health_cluster.client() as client:
        yield client
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        wait_until(lambda: not client.tasks().tasks, 60, "every task gone")


def registered(client: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in client.registry(service).groups for c in g.containers}


def task(client: ServerClient, task_id: str) -> TaskInfo:
    (found,) = [t for t in client.tasks(include_stopped=True).tasks if t.id == task_id]
    return found


def healthy_and_registered(client: ServerClient, service: str) -> TaskInfo:
    def ready() -> TaskInfo | None:
        tasks = [t for t in client.tasks(service).tasks if t.desired == "run"]
        ok = len(tasks) == 1 and tasks[0].health == "healthy"
        return tasks[0] if ok and tasks[0].id in registered(client, service) else None

    return wait_until(ready, 30, f"one healthy, registered {service} task")


def break_and_watch(
    client: ServerClient,
    docker_client: docker.DockerClient,
    service: str,
    breaking: list[str],
    message: str,
) -> dict[str, float]:
    """Break the one task of ``service`` (run ``breaking`` in its container) and follow it
    until its replacement is healthy and registered; the times it took, from the break."""
    victim = healthy_and_registered(client, service)
    assert victim.container_id is not None
    exit_code, output = docker_client.containers.get(victim.container_id).exec_run(breaking)
    assert exit_code == 0, output
    broken = time.monotonic()
    times: dict[str, float] = {}

    wait_until(lambda: victim.id not in registered(client, service), 10, "deregistered")
    times["deregistered"] = time.monotonic() - broken
    # About two intervals: the probe in flight or the next one fails, then one report.
    assert times["deregistered"] < 4 * INTERVAL + 1.0, times

    seen = wait_until(lambda: task(client, victim.id).health == "unhealthy", 10, "unhealthy")
    assert seen
    assert task(client, victim.id).health_message == message

    killed = f"killed after 3 failed health checks in a row: {message}"
    wait_until(lambda: task(client, victim.id).stop_reason == killed, 15, "killed")
    times["killed"] = time.monotonic() - broken
    assert times["killed"] >= 2 * INTERVAL - 0.2  # three failures in a row (1 s), not one
    assert task(client, victim.id).state == "exited"

    replacement = healthy_and_registered(client, service)
    times["replacement healthy"] = time.monotonic() - broken
    assert replacement.id != victim.id
    assert registered(client, service) == {replacement.id}
    print(f"\n{service}: " + ", ".join(f"{k} after {v:.2f}s" for k, v in times.items()))
    return times


def test_http_check_failure_deregisters_kills_and_replaces(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    check = {"protocol": "HTTP", "port_name": "http", "path": "/index.html", **FAST}
    deploy(client, web={**WEB, "health_checks": [check]})
    break_and_watch(
        client,
        docker_client,
        "web",
        ["rm", "/var/www/index.html"],
        "HTTP 404 from /index.html",
    )


def test_command_check_failure_deregisters_kills_and_replaces(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    check = {"protocol": "COMMAND", "command": "test -f /tmp/ok", **FAST}
    spec = {**WEB, "command": "touch /tmp/ok && exec /bin/sh /bin/theseus-entry"}
    deploy(client, cmd={**spec, "health_checks": [check]})
    break_and_watch(client, docker_client, "cmd", ["rm", "/tmp/ok"], "exit 1")


def test_a_task_in_its_grace_period_is_not_registered_until_it_passes(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    check = {"path": "/late.html", **FAST, "grace_period_seconds": 60}
    deploy(client, late={**WEB, "health_checks": [check]})

    def failing() -> TaskInfo | None:
        tasks = client.tasks("late").tasks
        ok = tasks and tasks[0].state == "running" and tasks[0].health_message
        return tasks[0] if ok and "404" in (tasks[0].health_message or "") else None

    waiting = wait_until(failing, 30, "a running task whose check fails")
    assert (waiting.health, waiting.health_message) == ("unknown", "HTTP 404 from /late.html")
    # Well past max_consecutive_failures intervals: ignored failures neither register nor
    # kill it.
    # Not a wait but an invariant: it must hold at every look for the whole window.
    deadline = time.monotonic() + 6 * INTERVAL
    while time.monotonic() < deadline:
        now = task(client, waiting.id)
        assert now.state == "running" and now.health == "unknown" and now.desired == "run"
        assert registered(client, "late") == set()
        time.sleep(0.1)
    assert waiting.container_id is not None
    container = docker_client.containers.get(waiting.container_id)
    exit_code, output = container.exec_run(["cp", "/var/www/index.html", "/var/www/late.html"])
    assert exit_code == 0, output
    fixed = time.monotonic()
    assert healthy_and_registered(client, "late").id == waiting.id
    print(f"\nlate: healthy and registered {time.monotonic() - fixed:.2f}s after the fix")


def test_tcp_check_through_the_published_port(client: ServerClient) -> None:
    ports = {"http": 5000, "other": 6000}  # nothing listens on 6000 in the container
    good = {"protocol": "TCP", "port_name": "http", **FAST}
    bad = {"protocol": "TCP", "port_name": "other", **FAST, "grace_period_seconds": 1}
    deploy(
        client,
        tcp_ok={**WEB, "ports": ports, "health_checks": [good]},
        tcp_bad={**WEB, "ports": ports, "health_checks": [bad]},
    )
    healthy_and_registered(client, "tcp_ok")

    def killed() -> str | None:
        reasons = [t.stop_reason for t in client.tasks("tcp_bad", include_stopped=True).tasks]
        return next((r for r in reasons if r), None)

    reason = wait_until(killed, 20, "the task without a listener killed")
    assert reason == (
        "killed after 3 failed health checks in a row: "
        "connection closed at once (nothing listening?)"
    )
    assert registered(client, "tcp_bad") == set()


def test_a_restarted_agent_checks_its_adopted_task_without_a_registry_gap(
    health_cluster: Cluster, client: ServerClient, docker_client: docker.DockerClient
) -> None:
    check = {"path": "/index.html", **FAST}
    deploy(client, kept={**WEB, "health_checks": [check]})
    victim = healthy_and_registered(client, "kept")
    assert victim.node is not None
    agent = health_cluster.processes[victim.node]

    def runs_of_agent() -> int:
        return agent.log.read_text(errors="replace").count(f"agent {victim.node} ready")

    before = runs_of_agent()
    health_cluster.kill(victim.node)
    agent = health_cluster.restart(victim.node)
    wait_until(lambda: runs_of_agent() > before, 20, "the agent running again")
    # The new agent re-reports the task and runs its checks again: it must not leave the
    # registry meanwhile (its verdict is kept until the first new one).
    # An invariant, not a wait: it must hold at every look for the whole window.
    deadline = time.monotonic() + 8 * INTERVAL
    while time.monotonic() < deadline:
        assert victim.id in registered(client, "kept")
        assert task(client, victim.id).health == "healthy"
        time.sleep(0.05)
    # And its checks run: breaking the task gets it killed by the new agent.
    break_and_watch(
        client, docker_client, "kept", ["rm", "/var/www/index.html"], "HTTP 404 from /index.html"
    )


def test_docker_exec_returns_code_and_output_and_kills_a_hanging_command(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    deploy(client, plain=WEB)
    running = wait_until(
        lambda: [t for t in client.tasks("plain").tasks if t.state == "running"], 30, "running"
    )
    handle = running[0].container_id
    assert handle is not None

    async def use_driver() -> None:
        driver = DockerDriver()
        await driver.open(Owner("h-x", "127.0.0.41", "none"), lambda notice: None)
        try:
            code, output = await driver.exec(handle, "echo out; echo err >&2; exit 3", 2.0)
            assert (code, sorted(output.split())) == (3, ["err", "out"])  # both streams
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await driver.exec(handle, "sleep 42", 0.5)
            with pytest.raises(DriverError):
                await driver.exec(handle, "true", 1.0, container="sidecar")
        finally:
            await driver.close()

    asyncio.run(use_driver())

    def sleeping() -> bool:
        top = docker_client.containers.get(handle).top()
        return any("sleep 42" in " ".join(p) for p in top["Processes"])

    wait_until(lambda: not sleeping(), 5, "the hanging command killed at its deadline")
