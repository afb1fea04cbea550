"""What the integration tests deploy on a cluster of ``tests/kit/cluster.py`` and how they look
at it, as users do: through the server's HTTP API, Docker's and etcdctl.

Shared by the integration tests (core, HA, resilience, pods, plan, ...) and nothing else.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import docker

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.api.schemas import Health, TaskInfo

# A busybox task that runs until stopped and stops at once (its kill grace is 1 s).
LOOPING: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "cpus": 0.1,
    "mem": 64,
    "command": "while true; do sleep 0.1; done",
    "task_kill_grace_period_seconds": 1,
}


def deploy(client: ServerClient, **services: dict[str, Any]) -> list[str]:
    """Deploy ``service=spec, ...`` as one document; each group's action."""
    result = client.deploy(json.dumps({"deploy": services}), "application/json")
    return [change.action for change in result.changes]


def running(client: ServerClient, service: str, version: str | None = None) -> list[TaskInfo]:
    return [
        t
        for t in client.tasks(service).tasks
        if t.state == "running" and t.desired == "run" and (version is None or t.version == version)
    ]


def wait_running(
    client: ServerClient, service: str, count: int, timeout: float = 60
) -> list[TaskInfo]:
    """Until exactly ``count`` tasks of ``service`` are meant to run and all do; those. A 503
    (a server that cannot vouch for its view, e.g. while it moves to another etcd member) is
    "not yet", as it is for any client: ask again."""

    def converged() -> list[TaskInfo] | None:
        try:
            tasks = running(client, service)
            active = [t for t in client.tasks(service).tasks if t.desired == "run"]
        except ApiError as exc:
            if exc.status != 503:
                raise
            return None
        return tasks if len(tasks) == count and len(active) == count else None

    return wait_until(converged, timeout, f"{count} running tasks of {service}")


def containers(
    docker_client: docker.DockerClient, cluster_id: str, status: str = "running"
) -> list[dict[str, Any]]:
    """The cluster's containers (``status="any"``: stopped ones too), listed without a
    per-container inspect (which would race with removals)."""
    filters: dict[str, Any] = {"label": f"theseus.cluster={cluster_id}"}
    if status != "any":
        filters["status"] = status
    return list(docker_client.api.containers(all=True, filters=filters))


def assert_exact(client: ServerClient, cluster_id: str, docker_client: docker.DockerClient) -> None:
    """Every group runs exactly its instances, no task runs twice, and Docker agrees: one
    running container per active task once the stopped tasks' containers are gone."""
    groups = client.groups().groups
    for group in groups:
        assert group.running == group.instances, group
    active = {t.id for t in client.tasks().tasks if t.desired == "run"}
    assert len(active) == sum(g.instances for g in groups)

    def one_container_per_task() -> bool:
        per_task = Counter(
            c["Labels"]["theseus.task"] for c in containers(docker_client, cluster_id)
        )
        assert max(per_task.values(), default=1) == 1, f"a task runs twice: {per_task}"
        return set(per_task) == active

    wait_until(one_container_per_task, 30, "one running container per active task")


def health_of(url: str) -> Health | None:
    """The server's health, or None when it does not answer (dead, frozen)."""
    try:
        with ServerClient(url, timeout=1.0) as client:
            return client.health()
    except (ServerUnreachable, ApiError):
        return None


def leads(url: str) -> bool:
    health = health_of(url)
    return health is not None and health.leader


def _etcdctl_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    """``etcdctl <args> -w json`` against the cluster's etcd, parsed."""
    out = subprocess.run(
        ["etcdctl", f"--endpoints=127.0.0.1:{cluster.etcd_port}", *args, "-w", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    answer: dict[str, Any] = json.loads(out)
    return answer


def etcd_dump(cluster: Cluster, prefix: str) -> list[tuple[str, str, int]]:
    """Every key under ``prefix`` with its value and revision, read with ``etcdctl``."""
    kvs = _etcdctl_json(cluster, "get", "--prefix", prefix).get("kvs", [])
    return [(kv["key"], kv["value"], kv["mod_revision"]) for kv in kvs]


def etcd_revision(cluster: Cluster) -> int:
    """etcd's current revision (the header of a read), read with ``etcdctl``."""
    answer = _etcdctl_json(cluster, "get", "--keys-only", "--limit=1", "/nothing-at-all")
    return int(answer["header"]["revision"])


def etcd_put(cluster: Cluster, key: str, value: str) -> None:
    """Write ``key`` straight into etcd with ``etcdctl``, bypassing the server (as an operator
    or an intruder with etcd access could)."""
    subprocess.run(
        ["etcdctl", f"--endpoints=127.0.0.1:{cluster.etcd_port}", "put", key, value],
        check=True,
        capture_output=True,
    )


def failed_with(client: ServerClient, service: str, text: str) -> TaskInfo | None:
    """A task of ``service`` that failed with ``text`` in its reason, if there is one."""
    tasks = client.tasks(service, include_stopped=True).tasks
    return next((t for t in tasks if t.state == "failed" and text in (t.message or "")), None)
