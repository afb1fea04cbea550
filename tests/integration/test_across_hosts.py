"""Theseus across machine boundaries, on the test bed (``tests/testbed``): 3 hosts that are
network namespaces, each with its own Docker Engine and sshd, set up by ``theseus cluster
bootstrap`` over SSH (h1: etcd, a server and an agent; h2 and h3: agents), their images pulled
from the bed's private registry.

In order: a host added to a running cluster by bootstrap; the original's curl deploy spread over
the 3 hosts and their 3 engines; a container on h1 reaching its peers on the other hosts at the
addresses guestutils gives, and its watcher hearing a change on another host; a drain; and last
a whole host killed (its namespace's processes, engine and containers included), whose tasks
run elsewhere and leave the registry. That last test leaves h3 dead, so it takes the bed down:
a module that runs later gets a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.image_registry import build_marked_image
from tests.kit.wait import wait_until
from tests.kit.workloads import failed_with
from tests.testbed import state, up
from tests.testbed.faults import kill_host
from tests.testbed.fixture import Testbed, TestbedSession, testbed_session  # noqa: F401
from tests.testbed.plan import HostPlan
from theseus.api.access_client import AccessApi
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo
from theseus.cli import contexts
from theseus.security.tls import client_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

INGESTOR: dict[str, Any] = {
    "instances": 3,
    "ports": {"api": 5000},
    "cpus": 0.05,
    "mem": 32,
    "labels": ["dev"],
    "constraints": [["hostname", "UNIQUE"]],
}


class BedCluster:
    """The bootstrapped cluster on the bed, reached as the CLI reaches it: its context."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        context = contexts.resolve(None)
        assert context is not None and context.ca is not None and context.token is not None
        self.context = context

    def client(self) -> ServerClient:
        tls = client_context(ca_pem=(self.context.ca or "").encode())
        return ServerClient(self.context.servers, tls=tls, token=self.context.token, timeout=30)

    def host(self, node: str | None) -> HostPlan:
        return self.bed.plan.host(node or "")

    def deploy(self, service: str, spec: dict[str, Any]) -> None:
        with self.client() as client:
            client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")


def cluster_command(bed: Testbed, action: str, hosts_file: Path, *extra: str) -> float:
    """``theseus cluster ACTION`` on the bed, as a user runs it; its duration in seconds."""
    plan = bed.plan
    argv = [up.theseus_command(), "cluster", action, "-f", str(hosts_file)]
    argv += ["--state-dir", str(plan.cluster_state_dir), *extra]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return time.monotonic() - started


def bootstrapped(bed: Testbed) -> bool:
    return bool(bed.state().bootstrap_done)


@pytest.fixture(scope="module")
def bed(testbed_session: TestbedSession) -> Iterator[Testbed]:  # noqa: F811
    yield testbed_session.ensure_up()
    # Down at the module's end (the last test does it already): the bed's cluster is the CLI's
    # current context, which later modules, running the `theseus` command against their own
    # clusters, must not inherit. ``down`` puts the contexts back as they were.
    testbed_session.down()


@pytest.fixture
def bed_cluster(bed: Testbed) -> BedCluster:
    """The 3-host cluster, bootstrapped if no earlier test did."""
    if not bootstrapped(bed):
        bed.bootstrap()
    return BedCluster(bed)


def ready_nodes(cluster: BedCluster) -> set[str]:
    with cluster.client() as client:
        return {n.name for n in client.nodes().nodes if n.status == "ready"}


def running(client: ServerClient, service: str) -> list[TaskInfo]:
    return [t for t in client.tasks(service).tasks if t.state == "running" and t.desired == "run"]


def registered(client: ServerClient, service: str) -> dict[str, str]:
    """Task id -> the address the registry gives for it."""
    return {
        c.instance_name: c.instance_host
        for g in client.registry(service).groups
        for c in g.containers
    }


def test_bootstrap_adds_a_host_to_a_running_cluster(bed: Testbed) -> None:
    plan = bed.plan
    if bootstrapped(bed):  # by `scripts/testbed up` before the session: start from nothing
        cluster_command(bed, "teardown", plan.hosts_file, "--yes", "--keep-packages")
    first_two = bed.hosts_file(["h1", "h2"])
    try:
        bed.bootstrap(first_two)
    finally:
        first_two.unlink()
    cluster = BedCluster(bed)
    assert ready_nodes(cluster) == {"h1", "h2"}

    took = bed.bootstrap()  # the whole file: h3 is new
    assert ready_nodes(cluster) == {"h1", "h2", "h3"}
    print(f"one more host joined by bootstrap in {took:.1f} s")


def test_the_originals_curl_deploy_spreads_over_three_hosts_and_engines(
    bed_cluster: BedCluster,
    tmp_path: Path,
) -> None:
    cluster = bed_cluster
    bed = cluster.bed
    ca = tmp_path / "ca.pem"
    ca.write_text(cluster.context.ca or "")
    body = json.dumps({"deploy": {"ingestor": {**INGESTOR, "image": bed.image()}}})
    # The original's test, with what a secure cluster adds: its CA and a token.
    answer = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca), "-X", "POST", "-H", "Content-Type: application/json"]
        + ["-H", "@-", "--data-binary", body, f"{cluster.context.servers[0]}/deploy"],
        input=f"Authorization: Bearer {cluster.context.token}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(answer.stdout)["result"] == {"status": 200}, answer.stdout

    with cluster.client() as client:
        tasks = wait_until(
            lambda: len(found := running(client, "ingestor")) == 3 and found, 120, "3 running"
        )
        assert {t.node for t in tasks} == {"h1", "h2", "h3"}
        for task in tasks:
            host = cluster.host(task.node)
            assert task.address == host.address
            # Its container is in its own host's engine, and in no other.
            for other in bed.hosts:
                ids = {c.id for c in bed.engine(other).containers.list()}
                assert (task.container_id in ids) == (other is host), (task.id, other.name)
            url = f"http://{task.address}:{task.ports['api'].host_port}/"
            page = wait_until(partial(answer_of, url), 20, f"{task.id} answering on {url}")
            assert task.id in page.text


def answer_of(url: str) -> httpx.Response | None:
    with contextlib.suppress(httpx.HTTPError):
        answer = httpx.get(url, timeout=3)
        return answer if answer.status_code == 200 else None
    return None


def in_container(engine: docker.DockerClient, container_id: str | None, code: str) -> Any:
    """Python run inside the container with guestutils imported; its JSON output."""
    script = "import json, urllib.request\nfrom guestutils import *\n" + code
    exit_code, output = engine.containers.get(container_id).exec_run(["python3", "-c", script])
    text = output.decode(errors="replace")
    assert exit_code == 0, text
    return json.loads(text.strip().splitlines()[-1])


def test_a_container_reaches_its_peers_on_other_hosts_and_hears_them_change(
    bed_cluster: BedCluster,
) -> None:
    cluster = bed_cluster
    bed = cluster.bed
    cluster.deploy("ingestor", {**INGESTOR, "image": bed.image()})
    watcher_spec = {
        "image": bed.image("theseus/example:latest"),
        "instances": 1,
        "cpus": 0.05,
        "mem": 64,
        "ports": {"api": 5000},
        "environment": {"WATCHES": "ingestor"},
        "constraints": [["hostname", "IS", "h1"]],
    }
    cluster.deploy("watcher", watcher_spec)
    with cluster.client() as client:
        wait_until(lambda: len(registered(client, "ingestor")) == 3, 120, "3 ingestors registered")
        (watcher,) = wait_until(lambda: running(client, "watcher"), 120, "the watcher running")
        h1 = bed.engine(cluster.host("h1"))
        logs = h1.containers.get(watcher.container_id).logs
        wait_until(lambda: "baseline" in logs().decode(), 60, "the watcher's baseline")

        # Its peers on h2 and h3, at the addresses and ports guestutils gives, from inside.
        ingestors = {t.id: t for t in running(client, "ingestor")}
        code = (
            "pages = [urllib.request.urlopen('http://' + e + '/', timeout=5).read().decode()"
            " for e in get_node_list('ingestor', ['api'])]\nprint(json.dumps(pages))"
        )
        pages = in_container(h1, watcher.container_id, code)
        assert len(pages) == 3
        for task in ingestors.values():  # each page names its task: every peer answered
            assert sum(task.id in page for page in pages) == 1

        # A change on h2 (its ingestor's container killed there) is heard on h1.
        before = logs().decode().count("service_change('ingestor'")
        victim = next(t for t in ingestors.values() if t.node == "h2")
        bed.engine(cluster.host("h2")).containers.get(victim.container_id).kill()
        wait_until(
            lambda: logs().decode().count("service_change('ingestor'") >= before + 2,
            60,
            "the watcher on h1 to hear h2's ingestor go and come back",
        )
        client.remove("watcher")


def files_holding(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(str(path))
    return found


def test_hosts_pull_from_the_beds_registry_over_tls_with_its_password(
    bed_cluster: BedCluster, docker_client: docker.DockerClient
) -> None:
    """On hosts whose engines have never seen the image: the first start pulls it, ``always``
    pulls the new image pushed under the same tag, a wrong password and a missing image are
    refused with their reasons, and the password is in no file of any host."""
    cluster = bed_cluster
    bed = cluster.bed
    local = "theseus/pull-test-bed:latest"
    image = bed.image(local)
    sleeping = {"command": "echo marker=$MARKER; exec sleep 3600", "cpus": 0.05, "mem": 16}
    one = build_marked_image(docker_client, local, "one")
    pushed = bed.push([local])
    h2 = bed.engine(cluster.host("h2"))
    try:
        with cluster.client() as client:
            on_h2 = {**sleeping, "image": image, "constraints": [["hostname", "IS", "h2"]]}
            cluster.deploy("fresh", {**on_h2, "pull": "always"})
            (first,) = wait_until(lambda: running(client, "fresh"), 120, "a first start on h2")
            assert h2.containers.get(first.container_id).image.id == one

            two = build_marked_image(docker_client, local, "two")
            bed.push([local])
            h2.containers.get(first.container_id).kill()  # its replacement pulls again
            second = wait_until(
                lambda: next((t for t in running(client, "fresh") if t.id != first.id), None),
                120,
                "a replacement on h2",
            )
            container = h2.containers.get(second.container_id)
            assert container.image.id == two
            wait_until(lambda: b"marker=two" in container.logs(), 20, "the new image's marker")
            client.remove("fresh")

            access = AccessApi(client)
            login = bed.registry
            access.registry_login(login.host, login.username, "not-the-password")
            try:
                on_h3 = {**on_h2, "constraints": [["hostname", "IS", "h3"]]}
                cluster.deploy("refused", {**on_h3, "pull": "always"})
                reason = f"registry {login.host} refused the credentials for {image}"
                wait_until(lambda: failed_with(client, "refused", reason), 90, "the refusal")
            finally:
                access.registry_login(login.host, login.username, login.password)
            wait_until(lambda: running(client, "refused"), 120, "a retry with the right login")
            client.remove("refused")

            missing = bed.image("theseus/no-such-image:1")
            cluster.deploy("missing", {**on_h3, "image": missing})
            reason = f"image not found in registry {login.host}: {missing}"
            wait_until(lambda: failed_with(client, "missing", reason), 90, "image not found")
            client.remove("missing")

            answers = json.dumps(client.tasks(include_stopped=True).model_dump(mode="json"))
            assert login.password not in answers
        secret = login.password.encode()
        for host in bed.hosts:  # its install: configuration, state, every log
            assert files_holding(host.paths.prefix, secret) == [], host.name
        assert files_holding(bed.plan.cluster_state_dir, secret) == []
    finally:
        for tag in [*pushed, local]:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(tag)


def test_a_drained_host_hands_its_tasks_to_the_others(bed_cluster: BedCluster) -> None:
    cluster = bed_cluster
    bed = cluster.bed
    spec = {**INGESTOR, "image": bed.image(), "instances": 4, "constraints": []}
    cluster.deploy("spread", spec)
    with cluster.client() as client:
        wait_until(lambda: len(running(client, "spread")) == 4, 120, "4 running")
        client.drain_node("h3")
        try:
            tasks = wait_until(
                lambda: (
                    len(found := running(client, "spread")) == 4
                    and all(t.node != "h3" for t in found)
                    and found
                ),
                60,
                "4 running, none on h3",
            )
            assert {t.node for t in tasks} == {"h1", "h2"}
            h3 = bed.engine(cluster.host("h3"))
            ids = {t.container_id for t in tasks}
            assert not ids & {c.id for c in h3.containers.list()}
        finally:
            client.drain_node("h3", enable=False)
        client.remove("spread")


def test_a_whole_host_dies_and_its_tasks_run_elsewhere(
    bed_cluster: BedCluster,
    testbed_session: TestbedSession,  # noqa: F811
) -> None:
    cluster = bed_cluster
    bed = cluster.bed
    cluster.deploy("survivor", {**INGESTOR, "image": bed.image(), "constraints": []})
    try:
        with cluster.client() as client:
            wait_until(lambda: len(registered(client, "survivor")) == 3, 120, "3 registered")
            on_h3 = {t.id for t in running(client, "survivor") if t.node == "h3"}
            if not on_h3:  # spread puts one on each host; make sure of it for the test
                pytest.fail(f"no task on h3: {[t.node for t in running(client, 'survivor')]}")
            killed_at = time.monotonic()
            assert kill_host(cluster.host("h3")) > 0

            def replaced() -> bool:
                tasks = running(client, "survivor")
                addresses = registered(client, "survivor")
                return (
                    len(tasks) == 3
                    and all(t.node != "h3" for t in tasks)
                    and not on_h3 & set(addresses)
                    and len(addresses) == 3
                    and cluster.host("h3").address not in addresses.values()
                )

            wait_until(replaced, 60, "h3's task running elsewhere and out of the registry")
            took = time.monotonic() - killed_at
            print(f"a dead host's task ran elsewhere, registered, in {took:.1f} s")
            lost = {n.name: n.status for n in client.nodes().nodes}
            assert lost["h3"] == "lost"
    finally:
        testbed_session.down()  # h3 is dead: a later module gets a fresh bed


@pytest.fixture(autouse=True)
def _no_leftover_groups(bed: Testbed) -> Iterator[None]:
    yield
    if state.load(bed.plan.state_file) is None or not bootstrapped(bed):
        return  # the bed was taken down, or has no cluster
    with contextlib.suppress(Exception), BedCluster(bed).client() as client:
        for service in {t.service for t in client.tasks().tasks}:
            client.remove(service)
