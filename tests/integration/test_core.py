"""Core behaviour on a real 3-node cluster with real containers (issue: Core).

Deploy the README's ingestor example, heal a killed container, scale without restarts, roll
an update without dropping below ``instances``, remove, reject bad documents without
changing etcd, and keep tasks that fit nowhere pending until capacity appears.
"""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy, etcd_dump, running, wait_running
from theseus.api.client import ApiError
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration


def answer_of(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


INGESTOR: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "ports": {"ssh": 22, "api": 5000},
    "environment": {
        "APP_NAME": "Ingestor",
        "KEYSPACE_NAME": "flask_keyspace2",
        "TABLE_NAME": "flask_table2",
    },
    "instances": 4,
    "cpus": 0.1,
    "mem": 128,
    "labels": ["dev"],
}


def group_containers(
    docker_client: docker.DockerClient, service: str, status: str = "running"
) -> list[dict[str, Any]]:
    """Containers of a service, listed without a per-container inspect (which would race
    with the removals a rollout makes)."""
    filters: dict[str, Any] = {"label": f"theseus.service={service}"}
    if status != "any":
        filters["status"] = status
    return list(docker_client.api.containers(all=True, filters=filters))


def test_ingestor_example_runs_spread_and_answers_on_each_node(
    cluster: Cluster, docker_client: docker.DockerClient
) -> None:
    with cluster.client() as client:
        # The original's own test, verbatim: curl -X POST -H "Content-Type: application/json"
        body = json.dumps({"deploy": {"ingestor": INGESTOR}})
        answer = httpx.post(
            f"{cluster.server_url}/deploy",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200
        assert answer.json()["result"] == {"status": 200}
        assert answer.json()["changes"][0]["action"] == "created"

        tasks = wait_running(client, "ingestor", 4)
        assert {t.node for t in tasks} == set(cluster.nodes)
        for task in tasks:
            assert task.address == cluster.nodes[task.node or ""]
            url = f"http://{task.address}:{task.ports['api'].host_port}/"
            # Running is not listening: the image's server may take a moment to bind (a
            # loaded machine once answered a connection reset first).
            page = wait_until(partial(answer_of, url), 15, f"{task.id} answering on {url}")
            assert page.status_code == 200 and task.id in page.text

        inspected = docker_client.containers.get(tasks[0].container_id).attrs
        env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        assert env["SERVICE_NAME"] == "ingestor"
        assert env["CONTAINER_NAME"] == tasks[0].id
        assert env["CONTAINER_HOST_ADDRESS"] == tasks[0].address
        assert json.loads(env["LABELS"]) == ["dev"]
        assert env["PORT_API"] == str(tasks[0].ports["api"].host_port)
        assert env["APP_NAME"] == "Ingestor"
        assert inspected["HostConfig"]["NanoCpus"] == 100_000_000
        assert inspected["HostConfig"]["Memory"] == 128 * 1024 * 1024
        bindings = inspected["HostConfig"]["PortBindings"]["5000/tcp"]
        assert bindings == [
            {"HostIp": tasks[0].address, "HostPort": str(tasks[0].ports["api"].host_port)}
        ]


def test_a_killed_container_is_replaced(
    cluster: Cluster, docker_client: docker.DockerClient
) -> None:
    with cluster.client() as client:
        deploy(client, ingestor=INGESTOR)
        before = wait_running(client, "ingestor", 4)
        victim = before[0]
        docker_client.containers.get(victim.container_id).kill()

        def replaced() -> list[TaskInfo] | None:
            tasks = running(client, "ingestor")
            ids = {t.id for t in tasks}
            return tasks if len(tasks) == 4 and victim.id not in ids else None

        after = wait_until(replaced, 30, "the killed task replaced")
        assert len({t.id for t in after} - {t.id for t in before}) == 1
        history = {t.id: t for t in client.tasks("ingestor", include_stopped=True).tasks}
        assert history[victim.id].state == "exited"
        assert history[victim.id].exit_code == 137


def test_scale_redeploy_roll_and_remove(
    cluster: Cluster, docker_client: docker.DockerClient
) -> None:
    with cluster.client() as client:
        assert deploy(client, ingestor=INGESTOR) == ["created"]
        first = {t.id: t.container_id for t in wait_running(client, "ingestor", 4)}

        assert deploy(client, ingestor={**INGESTOR, "instances": 6}) == ["scaled"]
        six = {t.id: t.container_id for t in wait_running(client, "ingestor", 6)}
        assert first.items() <= six.items()  # scaling up restarted nothing

        assert client.scale("ingestor", 2, labels=["dev"]).changes[0].action == "scaled"
        two = {t.id: t.container_id for t in wait_running(client, "ingestor", 2)}
        assert two.items() <= six.items()  # scaling down restarted nothing

        deploy(client, ingestor=INGESTOR)
        four = {t.id for t in wait_running(client, "ingestor", 4)}
        # An identical re-deploy changes nothing at all: same tasks, same containers.
        assert deploy(client, ingestor=INGESTOR) == ["unchanged"]
        assert {t.id for t in running(client, "ingestor")} == four

        # An environment change rolls every task, never with fewer than 4 running.
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(len(group_containers(docker_client, "ingestor")))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            changed = {
                **INGESTOR,
                "environment": {**INGESTOR["environment"], "APP_NAME": "Ingestor2"},
            }
            assert deploy(client, ingestor=changed) == ["updated"]
            group = client.groups("ingestor").groups[0]
            wait_until(
                lambda: (
                    len(running(client, "ingestor", group.version)) == 4
                    and len(client.tasks("ingestor").tasks) == 4
                ),
                90,
                "the rollout to finish",
            )
        finally:
            done.set()
            sampler.join()
        rolled = running(client, "ingestor")
        assert not {t.id for t in rolled} & four
        assert len(samples) > 10 and min(samples) >= 4, samples
        env = docker_client.containers.get(rolled[0].container_id).attrs["Config"]["Env"]
        assert "APP_NAME=Ingestor2" in env

        removal = client.deploy(
            json.dumps({"remove": {"ingestor": {"labels": ["dev"]}}}), "application/json"
        )
        assert removal.changes[0].action == "removed"
        wait_until(
            lambda: not group_containers(docker_client, "ingestor", status="any"),
            30,
            "no container of ingestor left",
        )


def test_remove_leaves_other_groups_of_the_service(cluster: Cluster) -> None:
    with cluster.client() as client:
        deploy(client, ingestor=INGESTOR)
        client.deploy(
            json.dumps(
                {"deploy": {"ingestor": {**INGESTOR, "labels": ["prod", "eu"], "instances": 1}}}
            ),
            "application/json",
        )
        wait_until(lambda: len(running(client, "ingestor")) == 5, 60, "both groups running")
        client.remove("ingestor", labels=["dev"])
        wait_running(client, "ingestor", 1)
        (left,) = running(client, "ingestor")
        assert left.labels == ["eu", "prod"]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"deploy": {"ingestor": {**INGESTOR, "image": None}}}, "deploy.ingestor.image"),
        (
            {"deploy": {"ingestor": {k: v for k, v in INGESTOR.items() if k != "image"}}},
            "deploy.ingestor.image",
        ),
        ({"deploy": {"ingestor": {**INGESTOR, "instances": -2}}}, "deploy.ingestor.instances"),
        ({"deploy": {"ingestor": {**INGESTOR, "ports": {"api": 0}}}}, "deploy.ingestor.ports.api"),
        (
            {"deploy": {"ingestor": {**INGESTOR, "ports": {"api": 65536}}}},
            "deploy.ingestor.ports.api",
        ),
        ({"deploy": {"ingestor": {**INGESTOR, "labels": ["dev", 7]}}}, "deploy.ingestor.labels.1"),
        ({"deploy": {"ingestor": {**INGESTOR, "cpus": "lots"}}}, "deploy.ingestor.cpus"),
        ({"deploy": {"ingestor": {**INGESTOR, "cpu": 0.1}}}, "deploy.ingestor.cpu"),
        ({"deploy": {"ok": INGESTOR, "ingestor": {**INGESTOR, "mem": -1}}}, "deploy.ingestor.mem"),
    ],
)
def test_bad_documents_are_rejected_naming_the_field_and_change_nothing(
    cluster: Cluster, document: dict[str, Any], path: str
) -> None:
    before = etcd_dump(cluster, "/theseus/groups/")
    with cluster.client() as client, pytest.raises(ApiError) as caught:
        client.deploy(json.dumps(document), "application/json")
    assert caught.value.status == 422
    assert path in {d["path"] for d in caught.value.details}, caught.value.details
    assert etcd_dump(cluster, "/theseus/groups/") == before


def test_yaml_documents_and_unreadable_bodies(cluster: Cluster) -> None:
    with cluster.client() as client:
        yaml_doc = (
            "deploy:\n  tiny:\n    image: theseus/busybox:latest\n"
            "    instances: 1\n    cpus: 0.05\n    mem: 32\n"
        )
        assert [c.action for c in client.deploy(yaml_doc).changes] == ["created"]
        wait_running(client, "tiny", 1)
        with pytest.raises(ApiError) as caught:
            client.deploy("deploy: [unclosed", "application/x-yaml")
        assert caught.value.status == 422


def test_surplus_waits_pending_with_a_reason_until_capacity_appears(cluster: Cluster) -> None:
    filler = {"image": "theseus/busybox:latest", "instances": 6, "cpus": 0.5, "mem": 64}
    extra = {"image": "theseus/busybox:latest", "instances": 2, "cpus": 0.5, "mem": 64}
    with cluster.client() as client:
        deploy(client, filler=filler)
        wait_running(client, "filler", 6)
        deploy(client, extra=extra)

        def pending_with_reason() -> list[TaskInfo] | None:
            tasks = [t for t in client.tasks("extra").tasks if t.state == "pending"]
            return tasks if len(tasks) == 2 and all(t.pending_reason for t in tasks) else None

        pending = wait_until(pending_with_reason, 20, "extra pending with a reason")
        assert "insufficient cpus" in (pending[0].pending_reason or "")
        assert client.groups("extra").groups[0].status == "pending"

        client.remove("filler")
        wait_running(client, "extra", 2)


def test_openapi_document_describes_the_api(cluster: Cluster) -> None:
    document = httpx.get(f"{cluster.server_url}/openapi.json", timeout=5).json()
    for path in ("/deploy", "/v1/groups", "/v1/tasks", "/v1/tasks/{task_id}", "/v1/nodes"):
        assert path in document["paths"], path
    body = document["paths"]["/deploy"]["post"]["requestBody"]["content"]
    assert "deploy" in body["application/json"]["schema"]["properties"]
