"""Fixtures for integration tests: a real Docker Engine, the locally built busybox image, and
one 3-node cluster (etcd + server + three docker agents at 127.0.0.2-4) per test session.

Its nodes declare host volumes (``HOST_VOLUMES``, in directories of ``host_volumes``): every
node ``shared`` and ``readonly`` (``:ro``), and only node-3 ``data``, so that placement by
host volume can be seen. No node allows privileges beyond the defaults.

Each test starts from an empty cluster: after it, every group is removed and the fixture waits
until no task and no container of the cluster is left, also when the test failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import WaitTimeout, wait_until
from theseus.images.build import build_busybox_image, build_image

IMAGE = "theseus/busybox:latest"
NODES = {"node-1": "127.0.0.2", "node-2": "127.0.0.3", "node-3": "127.0.0.4"}
# Node -> the host volumes its agent declares (name -> directory under ``host_volumes``).
HOST_VOLUMES = {
    "node-1": {"shared": "shared", "readonly": "readonly:ro"},
    "node-2": {"shared": "shared", "readonly": "readonly:ro"},
    "node-3": {"shared": "shared", "readonly": "readonly:ro", "data": "data"},
}


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"integration tests need a running Docker Engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    asyncio.run(build_busybox_image(IMAGE))
    return IMAGE


@pytest.fixture(scope="session")
def example_image(busybox_image: str) -> str:
    """theseus/example (on theseus/python-base): guestutils, the watcher, watch_methods."""
    for name in ("python-base", "example"):
        built = asyncio.run(build_image(name))
    return built.tag


@pytest.fixture(scope="session")
def host_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the cluster's host volumes (``shared``, ``readonly``, ``data``), each
    writable by any user; apart from the cluster's state, which no agent may declare."""
    root = tmp_path_factory.mktemp("volumes")
    for name in ("shared", "readonly", "data"):
        (root / name).mkdir()
        (root / name).chmod(0o777)
    return root


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, host_volumes: Path
) -> Iterator[Cluster]:
    agents = {
        name: {
            "address": address,
            "cpus": 1.0,
            "mem": 2048,
            "host_volumes": {
                volume: f"{host_volumes}/{where}" for volume, where in HOST_VOLUMES[name].items()
            },
        }
        for name, address in NODES.items()
    }
    cluster = start_cluster(Path(tmp_path_factory.mktemp("cluster")), agents)
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_id(cluster: Cluster) -> str:
    with cluster.client() as client:
        cid = client.health().cluster_id
    assert cid
    return cid


def containers_of(docker_client: docker.DockerClient, cluster_id: str) -> list[object]:
    """The cluster's containers, without a per-container inspect (which races removals)."""
    label = f"theseus.cluster={cluster_id}"
    return list(docker_client.api.containers(all=True, filters={"label": label}))


@pytest.fixture(autouse=True)
def empty_cluster_after(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    docker_client: docker.DockerClient = request.getfixturevalue("docker_client")
    with cluster.client() as client:
        cid = client.health().cluster_id or ""
        for service in {g.service for g in client.groups().groups}:
            client.remove(service)
        try:
            wait_until(
                lambda: not client.tasks(include_stopped=True).tasks, 60, "all tasks collected"
            )
            wait_until(lambda: not containers_of(docker_client, cid), 60, "all containers removed")
        except WaitTimeout:
            print(cluster.logs())
            raise
