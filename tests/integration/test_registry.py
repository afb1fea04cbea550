"""The service registry in etcd, derived from task state (issue: Service discovery).

Entries appear when tasks run and disappear when they stop, die, are removed or their node
is lost; hand-made damage is repaired by ``/cleanup`` (which reports it) and by the leader.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import etcd_dump
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

INGESTOR: dict[str, Any] = {
    "image": "theseus/busybox:latest",
    "ports": {"ssh": 22, "api": 5000},
    "instances": 4,
    "cpus": 0.1,
    "mem": 64,
    "labels": ["dev"],
}
DEV = '/services/ingestor/["dev"]'


def etcd_registry(cluster: Cluster) -> dict[str, Any]:
    """The registry as etcd holds it: key -> decoded JSON value (etcdctl, as confd would)."""
    return {
        base64.b64decode(key).decode(): json.loads(base64.b64decode(value))
        for key, value, _ in etcd_dump(cluster, "/services/")
    }


def etcdctl(cluster: Cluster, *args: str) -> None:
    subprocess.run(
        ["etcdctl", f"--endpoints=127.0.0.1:{cluster.etcd_port}", *args],
        check=True,
        capture_output=True,
    )


def containers(entries: dict[str, Any], prefix: str = DEV) -> dict[str, Any]:
    return {k: v for k, v in entries.items() if k.startswith(prefix + "/containers/")}


def running_ids(client: ServerClient, service: str) -> set[str]:
    return {
        t.id for t in client.tasks(service).tasks if t.state == "running" and t.desired == "run"
    }


def deploy(client: ServerClient, **services: dict[str, Any]) -> None:
    client.deploy(json.dumps({"deploy": services}), "application/json")


def test_entries_follow_tasks(cluster: Cluster, docker_client: docker.DockerClient) -> None:
    with cluster.client() as client:
        deploy(client, ingestor=INGESTOR)
        wait_until(lambda: len(running_ids(client, "ingestor")) == 4, 60, "4 running")

        def registered() -> dict[str, Any] | None:
            entries = etcd_registry(cluster)
            ids = {v["instance_name"] for v in containers(entries).values()}
            return entries if ids == running_ids(client, "ingestor") else None

        entries = wait_until(registered, 10, "the registry to list the 4 running tasks")
        assert entries[DEV + "/config"]["image"] == INGESTOR["image"]
        for task in client.tasks("ingestor").tasks:
            info = entries[f"{DEV}/containers/{task.id}/info"]
            assert info["service_name"] == "ingestor" and info["labels"] == ["dev"]
            assert info["instance_host"] == task.address and info["node"] == task.node
            api = info["port_mapping"]["api"]
            assert api["host_port"] == task.ports["api"].host_port
            assert api["external"] == [task.address, f"{task.ports['api'].host_port}/tcp"]
            assert api["exposed"] == "5000/tcp" and api["container_port"] == 5000

        # A killed container leaves the registry; its replacement joins it.
        victim = client.tasks("ingestor").tasks[0]
        docker_client.containers.get(victim.container_id).kill()
        wait_until(
            lambda: (
                (e := registered()) is not None
                and f"{DEV}/containers/{victim.id}/info" not in e
                and len(containers(e)) == 4
            ),
            30,
            "the victim unregistered and its replacement registered",
        )

        # Scaling down unregisters; a second group of the service is kept apart.
        client.scale("ingestor", 2, labels=["dev"])
        deploy(client, ingestor={**INGESTOR, "labels": ["frontend", "dev"], "instances": 1})
        two = '/services/ingestor/["dev","frontend"]'
        wait_until(
            lambda: (
                len(containers(etcd_registry(cluster))) == 2
                and len(containers(etcd_registry(cluster), two)) == 1
            ),
            30,
            "2 + 1 entries",
        )

        # Removing a group removes its config and containers, and only those.
        client.remove("ingestor", labels=["dev"])
        wait_until(
            lambda: not any(k.startswith(DEV + "/") for k in etcd_registry(cluster)),
            30,
            "the dev group gone from the registry",
        )
        assert len(containers(etcd_registry(cluster), two)) == 1
        assert two + "/config" in etcd_registry(cluster)


def test_the_leader_repairs_hand_made_damage_by_itself(cluster: Cluster) -> None:
    with cluster.client() as client:
        deploy(client, ingestor={**INGESTOR, "instances": 2})
        wait_until(lambda: len(containers(etcd_registry(cluster))) == 2, 60, "2 entries")
        real = sorted(containers(etcd_registry(cluster)))[0]
        bogus = f"{DEV}/containers/ingestor.bogus/info"
        etcdctl(cluster, "del", real)
        etcdctl(cluster, "put", bogus, '{"instance_name": "ingestor.bogus"}')
        wait_until(
            lambda: real in (e := etcd_registry(cluster)) and bogus not in e,
            15,
            "the leader to repair the registry",
        )


@pytest.fixture(scope="module")
def quiet_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes, a short liveness timeout, and no periodic registry repair (so that only
    /cleanup can repair, and the test can see what it reports)."""
    cluster = start_cluster(
        Path(tmp_path_factory.mktemp("quiet-cluster")),
        {"q-1": {"address": "127.0.0.6"}, "q-2": {"address": "127.0.0.7"}},
        liveness_timeout=2,
        registry_repair_interval=3600,
    )
    yield cluster
    with cluster.client() as client:
        cluster_id = client.health().cluster_id
        for group in client.groups().groups:
            client.remove(group.service)
    cluster.stop()
    engine = docker.from_env()
    try:
        for item in engine.api.containers(
            all=True, filters={"label": f"theseus.cluster={cluster_id}"}
        ):
            engine.api.remove_container(item["Id"], force=True)
    finally:
        engine.close()


def test_cleanup_re_adds_missing_and_removes_stale_entries(quiet_cluster: Cluster) -> None:
    with quiet_cluster.client() as client:
        deploy(client, ingestor={**INGESTOR, "instances": 2})
        wait_until(lambda: len(containers(etcd_registry(quiet_cluster))) == 2, 60, "2 entries")
        assert client.cleanup().model_dump(exclude={"result"}) == {
            "added": [],
            "removed": [],
            "updated": [],
        }
        real = sorted(containers(etcd_registry(quiet_cluster)))[0]
        bogus = f"{DEV}/containers/ingestor.bogus/info"
        stray = '/services/ghost/["x"]/config'
        etcdctl(quiet_cluster, "del", real)
        etcdctl(quiet_cluster, "put", bogus, "{}")
        etcdctl(quiet_cluster, "put", stray, "{}")

        report = client.cleanup()
        assert report.added == [real]
        assert report.removed == sorted([bogus, stray])
        entries = etcd_registry(quiet_cluster)
        assert real in entries and bogus not in entries and stray not in entries


def test_a_lost_node_leaves_the_registry(quiet_cluster: Cluster) -> None:
    with quiet_cluster.client() as client:
        deploy(client, lost=dict(INGESTOR, instances=2, labels=[]))
        prefix = "/services/lost/[]"
        wait_until(
            lambda: len(containers(etcd_registry(quiet_cluster), prefix)) == 2, 60, "2 entries"
        )
        on_q2 = {
            t.id for t in client.tasks("lost").tasks if t.node == "q-2" and t.state == "running"
        }
        assert on_q2, "the group was spread over both nodes"
        quiet_cluster.processes["q-2"].stop(signal.SIGKILL)  # the machine is gone

        def moved() -> bool:
            entries = containers(etcd_registry(quiet_cluster), prefix)
            nodes = {v["node"] for v in entries.values()}
            ids = {v["instance_name"] for v in entries.values()}
            return nodes == {"q-1"} and len(ids) == 2 and not ids & on_q2

        wait_until(moved, 30, "the lost node's entries replaced by entries on q-1")
