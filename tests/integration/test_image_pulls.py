"""Agents pull images from a real private registry (Debian's docker-registry 2.8, TLS from a
test CA, a bcrypt password: ``tests/kit/image_registry.py``), with the login stored in the
cluster (``theseus registry-login``).

One secure cluster for the module (one docker agent at 127.0.0.10; the session's cluster uses
127.0.0.2-4, test_security's 127.0.0.5-9), whose agent asks the server for the login at every
pull (``--registry-login-cache 0``) and runs its pods' network container from the registry
(``--pod-infra-image``). The registry listens on 127.0.0.1. Every test first removes the local
tags of the images it wants pulled; everything made here (the registry, the tags pushed and
pulled in the local engine, the certs.d directory) is removed at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster, start_secure_cluster
from tests.kit.image_registry import (
    ImageRegistry,
    build_marked_image,
    push_images,
    start_image_registry,
    stop_image_registry,
    trust_registry,
)
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy, failed_with, wait_running
from theseus.api.access_client import AccessApi
from theseus.api.schemas import TaskInfo
from theseus.cluster.ports import free_port
from theseus.security.tls import client_context
from theseus.security.tokens import Scope

pytestmark = pytest.mark.integration

NODE, ADDRESS = "puller-1", "127.0.0.10"
# Below dockerd's own TLS handshake timeout (10 s), so that a registry that never answers
# times out on the agent's clock; pulls from loopback take well under a second.
PULL_TIMEOUT = 8
SLEEPING = {"command": "echo marker=$MARKER; exec sleep 3600", "cpus": 0.1, "mem": 32}


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[ImageRegistry]:
    """The registry, trusted by the local engine, with theseus/busybox pushed to it."""
    workdir = Path(tmp_path_factory.mktemp("image-registry"))
    started = start_image_registry(workdir, "127.0.0.1", free_port())
    trusted: Path | None = None
    try:
        trusted = trust_registry(started)
        push_images(started, [busybox_image])
        yield started
    finally:
        stop_image_registry(started)
        if trusted is not None:
            shutil.rmtree(trusted, ignore_errors=True)
        mine = (started.host + "/", "theseus/pull-test-")
        for image in docker_client.images.list():
            # Only the names made here: theseus/busybox itself carries one of them.
            names = [*image.tags, *image.attrs.get("RepoDigests", [])]
            for name in [n for n in names if n.startswith(mine)]:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(name)


@pytest.fixture(scope="module")
def pulling(tmp_path_factory: pytest.TempPathFactory, registry: ImageRegistry) -> Iterator[Cluster]:
    images = {
        "registry_login_cache": 0,
        "pull_timeout": PULL_TIMEOUT,
        "pod_infra_image": registry.image("theseus/busybox:latest"),
    }
    agents = {NODE: {"address": ADDRESS, "cpus": 2.0, "mem": 2048, "images": images}}
    cluster = start_secure_cluster(Path(tmp_path_factory.mktemp("pulls")), agents)
    try:
        with cluster.client() as client:
            AccessApi(client).registry_login(registry.host, registry.username, registry.password)
        yield cluster
    finally:
        with contextlib.suppress(Exception), cluster.client() as client:
            for service in {g.service for g in client.groups().groups}:
                client.remove(service)
            wait_until(lambda: not client.tasks().tasks, 60, "the pull tests' tasks removed")
        cluster.stop()


@pytest.fixture(autouse=True)
def removed_services(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "pulling" not in request.fixturenames:
        return
    cluster: Cluster = request.getfixturevalue("pulling")
    with cluster.client() as client:
        for service in {g.service for g in client.groups().groups}:
            client.remove(service)
        wait_until(lambda: not client.tasks().tasks, 60, "the test's tasks removed")


def untag(docker_client: docker.DockerClient, *names: str) -> None:
    """Remove local tags, so that the node has to pull them."""
    for name in names:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(name)


def etcd_files(cluster: Cluster) -> dict[Path, bytes]:
    """Every file of every etcd member's data directory, as bytes."""
    return {
        path: path.read_bytes()
        for data_dir in cluster.etcd_data_dirs()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }


def agent_log(cluster: Cluster) -> str:
    return cluster.processes[NODE].log.read_text(errors="replace")


def test_an_image_is_pulled_on_its_first_start(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    image = registry.image("theseus/busybox:latest")
    untag(docker_client, image)
    with pulling.client() as client:
        deploy(client, first={**SLEEPING, "image": image})
        task = wait_running(client, "first", 1)[0]
    assert docker_client.images.get(image)
    assert f"pulling {image} with stored credentials" in agent_log(pulling)
    assert task.node == NODE


def test_always_pulls_the_new_image_under_the_same_tag(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    local = "theseus/pull-test-always:latest"
    image = registry.image(local)
    one = build_marked_image(docker_client, local, "one")
    push_images(registry, [local])
    untag(docker_client, image)  # push_images tagged it under the registry's name
    with pulling.client() as client:
        deploy(client, always={**SLEEPING, "image": image, "pull": "always"})
        first = wait_running(client, "always", 1)[0]
        assert first.container_id is not None
        assert docker_client.containers.get(first.container_id).image.id == one
        # A new image under the same tag; the node keeps the old one under that tag.
        two = build_marked_image(docker_client, local, "two")
        push_images(registry, [local])
        docker_client.images.get(one).tag(image)
        docker_client.containers.get(first.container_id).kill()  # replaced: a new start

        def replaced() -> TaskInfo | None:
            tasks = [t for t in wait_running(client, "always", 1) if t.id != first.id]
            return tasks[0] if tasks else None

        second = wait_until(replaced, 60, "a replacement of the killed task")
    assert second.container_id is not None
    container = docker_client.containers.get(second.container_id)
    assert container.image.id == two
    wait_until(lambda: b"marker=two" in container.logs(), 10, "the new image's marker")
    untag(docker_client, local)


def test_a_wrong_password_is_refused_with_its_reason(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    image = registry.image("theseus/busybox:latest")
    untag(docker_client, image)
    with pulling.client() as client:
        access = AccessApi(client)
        access.registry_login(registry.host, registry.username, "not-the-password")
        try:
            deploy(client, refused={**SLEEPING, "image": image})
            reason = f"registry {registry.host} refused the credentials for {image}"
            wait_until(lambda: failed_with(client, "refused", reason), 60, "a refusal")
            assert f"failed ({reason})" in ps(pulling)
        finally:
            access.registry_login(registry.host, registry.username, registry.password)
        # With the login right again, a retry (with backoff) pulls it.
        wait_running(client, "refused", 1, timeout=90)


def test_a_missing_image_is_refused_with_its_reason(
    pulling: Cluster, registry: ImageRegistry
) -> None:
    image = registry.image("theseus/no-such-image:1")
    with pulling.client() as client:
        deploy(client, missing={**SLEEPING, "image": image})
        reason = f"image not found in registry {registry.host}: {image}"
        wait_until(lambda: failed_with(client, "missing", reason), 60, "image not found")


def test_an_unreachable_registry_is_named_with_dockers_reason(pulling: Cluster) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    image = f"{host}/theseus/busybox:latest"
    with pulling.client() as client:
        deploy(client, unreachable={**SLEEPING, "image": image})
        reason = f"registry {host} unreachable: "
        task = wait_until(lambda: failed_with(client, "unreachable", reason), 60, "unreachable")
    assert "connection refused" in (task.message or "")


def test_a_missing_image_without_a_registry_host_is_not_pulled(pulling: Cluster) -> None:
    image = "theseus/not-built-anywhere:1"
    with pulling.client() as client:
        deploy(client, unqualified={**SLEEPING, "image": image})
        text = f"image '{image}' is not present on node {NODE} and names no registry host"
        wait_until(lambda: failed_with(client, "unqualified", text), 60, "not pulled")
    assert f"pulling {image}" not in agent_log(pulling)


def test_two_tasks_of_one_image_on_one_node_pull_it_once(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    local = "theseus/pull-test-twice:latest"
    image = registry.image(local)
    build_marked_image(docker_client, local, "twice")
    push_images(registry, [local])
    untag(docker_client, image, local)
    with pulling.client() as client:
        deploy(client, twice={**SLEEPING, "image": image, "instances": 2})
        wait_running(client, "twice", 2)
    assert agent_log(pulling).count(f"pulling {image}") == 1


def test_a_pods_network_image_comes_from_the_registry(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    image = registry.image("theseus/busybox:latest")
    untag(docker_client, image)
    pod = {
        "containers": [
            {"name": "app", "image": image, "command": "exec sleep 3600", "mem": 32},
        ]
    }
    with pulling.client() as client:
        deploy(client, pod=pod)
        wait_running(client, "pod", 1)
    assert f"pulling {image}" in agent_log(pulling)


def test_a_pull_in_progress_shows_and_one_that_hangs_times_out(
    pulling: Cluster, registry: ImageRegistry
) -> None:
    # A "registry" that accepts connections (the kernel completes them) and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", free_port()))
        silent.listen(16)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        image = f"{host}/theseus/busybox:latest"
        with pulling.client() as client:
            deploy(client, hanging={**SLEEPING, "image": image})
            shown = f"starting (pulling {image})"
            wait_until(lambda: shown in ps(pulling), 30, "the pull shown in theseus ps")
            reason = f"pull of {image} timed out after {PULL_TIMEOUT} s"
            wait_until(lambda: failed_with(client, "hanging", reason), 30, "the time-out")
            client.remove("hanging")


def ps(cluster: Cluster, *args: str) -> str:
    """``theseus ps`` (or another read command) as a user runs it, with the admin token."""
    assert cluster.pki is not None and cluster.admin_token is not None
    result = subprocess.run(
        [
            sys.executable, "-m", "theseus", "--server", cluster.server_url,
            "--ca-cert", str(cluster.pki.ca_cert), "--token", cluster.admin_token,
            *(args or ("ps", "--all")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def raw(
    cluster: Cluster, method: str, path: str, token: str | None, **kwargs: Any
) -> httpx.Response:
    assert cluster.pki is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=client_context(cluster.pki), timeout=10, headers=headers) as http:
        return http.request(method, cluster.server_url + path, **kwargs)


def test_the_login_is_managed_by_the_cli_and_its_password_shown_nowhere(
    pulling: Cluster, registry: ImageRegistry, docker_client: docker.DockerClient
) -> None:
    assert pulling.pki is not None and pulling.admin_token is not None
    image = registry.image("theseus/busybox:latest")
    untag(docker_client, image)
    with pulling.client() as client:
        deploy(client, shown={**SLEEPING, "image": image, "pull": "always"})
        task = wait_running(client, "shown", 1)[0]
    assert task.container_id is not None
    container = json.dumps(docker_client.api.inspect_container(task.container_id))
    base = [
        sys.executable, "-m", "theseus", "--server", pulling.server_url,
        "--ca-cert", str(pulling.pki.ca_cert), "--token", pulling.admin_token,
    ]  # fmt: skip
    login = subprocess.run(
        [*base, "registry-login", registry.host, "-u", registry.username, "--password-stdin"],
        input=registry.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    listed = ps(pulling, "registry-logins", "--json")
    assert json.loads(listed)[0]["host"] == registry.host
    with pulling.client() as client:
        reader = AccessApi(client).create_token("pull-reader", [Scope.READ], None).token
    path = f"/v1/agent/{NODE}/registry-logins/{registry.host}"
    for token in (reader, pulling.admin_token):  # no token reads a password
        assert raw(pulling, "GET", path, token).status_code == 403
    assert raw(pulling, "PUT", f"/v1/acl/registry-logins/{registry.host}", reader, json={
        "username": "x", "password": "y"}).status_code == 403  # fmt: skip
    answers = [
        raw(pulling, "GET", "/v1/acl/registry-logins", reader).text,
        raw(pulling, "GET", "/v1/tasks?all=true", pulling.admin_token).text,
        raw(pulling, "GET", "/v1/nodes", pulling.admin_token).text,
        raw(pulling, "GET", "/v1/audit", pulling.admin_token).text,
        listed,
        login.stdout + login.stderr,
        ps(pulling),
        ps(pulling, "ps", "--all", "--json"),
        ps(pulling, "audit"),
        raw(pulling, "GET", f"/v1/tasks/{task.id}", pulling.admin_token).text,
        ps(pulling, "logs", task.id),
        container,  # its environment above all
    ]
    audit = raw(pulling, "GET", "/v1/audit", pulling.admin_token).json()["records"]
    assert any(
        r["method"] == "PUT" and r["path"] == f"/v1/acl/registry-logins/{registry.host}"
        and r["who"] == "token:bootstrap"
        for r in audit
    )  # fmt: skip
    logs = {
        name: process.log.read_text(errors="replace") for name, process in pulling.processes.items()
    }
    for text in answers + list(logs.values()):
        assert registry.password not in text
    assert "not-the-password" not in "".join(logs.values())
    # Nor in etcd's own files (the WAL, written at commit, before the login was answered;
    # its db): the login's record is there, its password sealed (theseus.security.sealing).
    record_key = f"/theseus/acl/registries/{registry.host}".encode()

    def written() -> dict[Path, bytes] | None:
        files = etcd_files(pulling)
        return files if any(record_key in data for data in files.values()) else None

    files = wait_until(written, 10, "the login's record in etcd's data files")
    holding = [str(path) for path, data in files.items() if registry.password.encode() in data]
    assert not holding, f"the registry password is readable in {holding}"
