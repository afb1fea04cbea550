"""Containers find each other and hear when peers change (issue: Service discovery).

Real example containers (theseus/example: guestutils + the in-process watcher) watch a real
ingestor group on the 3-node cluster; lookups run inside them with ``docker exec``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration

INGESTOR: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "ports": {"ssh": 22, "api": 5000},
    "instances": 4,
    "cpus": 0.05,
    "mem": 32,
    "labels": ["dev"],
}
CHANGE = re.compile(r"service_change\('ingestor', (-?\d+)\) at ([0-9.]+)")


def deploy(client: ServerClient, service: str, spec: dict[str, Any]) -> None:
    client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")


def running(client: ServerClient, service: str) -> list[TaskInfo]:
    return [t for t in client.tasks(service).tasks if t.state == "running" and t.desired == "run"]


def registered(client: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in client.registry(service).groups for c in g.containers}


def start_example(cluster: Cluster, example_image: str) -> list[TaskInfo]:
    spec = {
        "image": example_image,
        "instances": 3,
        "cpus": 0.05,
        "mem": 64,
        "ports": {"api": 5000},
        "environment": {"WATCHES": "ingestor"},
    }
    with cluster.client() as client:
        deploy(client, "example", spec)
        return wait_until(
            lambda: (tasks := running(client, "example")) and len(tasks) == 3 and tasks,
            60,
            "3 example containers running",
        )


def in_container(docker_client: docker.DockerClient, container_id: str | None, code: str) -> Any:
    """Run Python inside the container with guestutils imported; return its JSON output."""
    script = "import json\nfrom guestutils import *\n" + code
    exit_code, output = docker_client.containers.get(container_id).exec_run(
        ["python3", "-c", script]
    )
    text = output.decode(errors="replace")
    assert exit_code == 0, text
    return json.loads(text.strip().splitlines()[-1])


def changes(
    docker_client: docker.DockerClient, container_id: str | None
) -> list[tuple[int, float]]:
    logs = docker_client.containers.get(container_id).logs().decode(errors="replace")
    return [(int(delta), float(at)) for delta, at in CHANGE.findall(logs)]


def test_guestutils_inside_a_container_sees_the_live_registry(
    cluster: Cluster, docker_client: docker.DockerClient, example_image: str
) -> None:
    with cluster.client() as client:
        deploy(client, "ingestor", INGESTOR)
        examples = start_example(cluster, example_image)
        wait_until(lambda: len(registered(client, "ingestor")) == 4, 60, "4 registered")
        ingestors = {t.id: t for t in running(client, "ingestor")}
        probe = examples[0].container_id

        nodes = in_container(
            docker_client, probe, "print(json.dumps(get_node_list('ingestor', ['api'])))"
        )
        expected = sorted(f"{t.address}:{t.ports['api'].host_port}" for t in ingestors.values())
        assert sorted(nodes) == expected
        for endpoint in nodes:  # each one answers HTTP, with its own task id
            page = httpx.get(f"http://{endpoint}/", timeout=5)
            assert page.status_code == 200 and any(tid in page.text for tid in ingestors)

        code = (
            "print(json.dumps([get_node_list('ingestor', labels=['prod'], minimum=0),"
            " get_node_list('ingestor'), get_port('api'), get_service_name()]))"
        )
        prod, hosts, own_port, own_service = in_container(docker_client, probe, code)
        assert prod == [] and sorted(hosts) == sorted(t.address for t in ingestors.values())
        assert own_port == 5000 and own_service == "example"

        task = next(iter(ingestors.values()))
        code = (
            f"print(json.dumps([get_specific_host('ingestor', {task.id!r}),"
            f" get_specific_port('ingestor', {task.id!r}, 'api'),"
            f" get_specific_exposed_port('ingestor', {task.id!r}, 'ssh'),"
            f" get_specific_port('ingestor', {task.id!r}, 'nope', 7)]))"
        )
        assert in_container(docker_client, probe, code) == [
            task.address,
            task.ports["api"].host_port,
            22,
            7,
        ]
        code = (
            "try:\n    get_node_list('ingestor', ['api'], minimum=9)\n"
            "except MaestroEnvironmentError as e:\n    print(json.dumps(str(e)))"
        )
        assert (
            in_container(docker_client, probe, code) == "No or not enough ingestor nodes configured"
        )

        # A two-label group works in every function (the original's bug 23).
        deploy(client, "ingestor", {**INGESTOR, "labels": ["frontend", "dev"], "instances": 1})
        wait_until(lambda: len(registered(client, "ingestor")) == 5, 60, "5 registered")
        (pair,) = [t for t in running(client, "ingestor") if t.labels == ["dev", "frontend"]]
        code = (
            "print(json.dumps([len(get_node_list('ingestor', ['api'], labels=['dev'])),"
            " get_node_list('ingestor', ['ssh', 'api'], labels=['frontend', 'dev']),"
            " get_node_list('ingestor', labels=['dev', 'x'], minimum=0),"
            f" get_specific_host('ingestor', {pair.id!r}),"
            f" get_specific_port('ingestor', {pair.id!r}, 'api'),"
            f" get_specific_exposed_port('ingestor', {pair.id!r}, 'api')]))"
        )
        ssh, api = pair.ports["ssh"].host_port, pair.ports["api"].host_port
        assert in_container(docker_client, probe, code) == [
            5,
            [f"{pair.address}:{ssh}:{api}"],
            [],
            pair.address,
            api,
            5000,
        ]


def test_watchers_hear_scaling_and_replacement(
    cluster: Cluster, docker_client: docker.DockerClient, example_image: str
) -> None:
    with cluster.client() as client:
        deploy(client, "ingestor", INGESTOR)
        examples = start_example(cluster, example_image)
        wait_until(lambda: len(registered(client, "ingestor")) == 4, 60, "4 registered")
        watchers = [e.container_id for e in examples]
        # The first answer a watcher gets is its (silent) baseline: change nothing before.
        wait_until(
            lambda: all(
                "baseline" in docker_client.containers.get(w).logs().decode() for w in watchers
            ),
            30,
            "the watchers' baselines",
        )
        before = {w: len(changes(docker_client, w)) for w in watchers}

        client.scale("ingestor", 6, labels=["dev"])
        wait_until(lambda: len(registered(client, "ingestor")) == 6, 60, "6 registered")
        started = {t.id: t.started_at or 0.0 for t in running(client, "ingestor")}
        for watcher in watchers:
            heard = wait_until(
                lambda w=watcher: (
                    (new := changes(docker_client, w)[before[w] :])
                    and sum(d for d, _ in new) == 2
                    and new
                ),
                10,
                f"watcher {watcher} to hear +2",
            )
            # Heard within 1 s of the new containers running (agent's clock = watcher's clock).
            assert max(at for _, at in heard) - max(started.values()) < 1.0, (heard, started)

        before = {w: len(changes(docker_client, w)) for w in watchers}
        victim = running(client, "ingestor")[0]
        docker_client.containers.get(victim.container_id).kill()
        for watcher in watchers:
            heard = wait_until(
                lambda w=watcher: (
                    (new := changes(docker_client, w)[before[w] :])
                    and [d for d, _ in new] in ([-1, 1], [1, -1])
                    and new
                ),
                30,
                f"watcher {watcher} to hear -1 then +1",
            )
            assert [d for d, _ in heard][0] == -1 or len(heard) == 2


def test_no_event_is_lost_across_an_agent_restart(
    cluster: Cluster, docker_client: docker.DockerClient, example_image: str
) -> None:
    with cluster.client() as client:
        deploy(client, "ingestor", {**INGESTOR, "instances": 2})
        examples = start_example(cluster, example_image)
        wait_until(lambda: len(registered(client, "ingestor")) == 2, 60, "2 registered")
        # A watcher on a node that already runs an ingestor: spreading then puts the new
        # ingestor elsewhere, so its agent can come back well within the liveness timeout
        # (after it, the node would be lost and the watcher's own task replaced).
        ingestor_nodes = {t.node for t in running(client, "ingestor")}
        watcher = next(e for e in examples if e.node in ingestor_nodes)
        logs = docker_client.containers.get(watcher.container_id).logs
        wait_until(lambda: "baseline" in logs().decode(), 30, "the watcher's baseline")
        before = len(changes(docker_client, watcher.container_id))
        node = watcher.node or ""
        cluster.processes[node].stop()  # the watcher's agent goes away...
        try:
            client.scale("ingestor", 3, labels=["dev"])  # ...while its peers change...
            wait_until(lambda: len(registered(client, "ingestor")) == 3, 3, "the change registered")
        finally:
            cluster.restart(node)  # ...and comes back, with the same flags (host volumes)
        wait_until(
            lambda: sum(d for d, _ in changes(docker_client, watcher.container_id)[before:]) == 1,
            60,
            "the watcher to hear +1 after its agent came back",
        )
