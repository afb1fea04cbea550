"""etcd with three members (issue: Resilience): losing the member a server talks to does not
stop the cluster. The server moves to another member, deploys and scales still go through it,
running tasks are untouched, and the member rejoins when restarted. A member that hangs is
left the same way, and the server's watch with it.

Real processes throughout: three etcd members, one server given all three, two docker agents,
real containers. How long the API answered 503 after each kill is printed (``pytest -s``).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.kit.cluster import Cluster, start_ha_cluster
from tests.kit.wait import WaitTimeout, wait_until
from tests.kit.workloads import LOOPING, assert_exact, containers, deploy, wait_running
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.api.schemas import DeployResult

pytestmark = pytest.mark.integration

NODES = {"he-1": "127.0.0.51", "he-2": "127.0.0.52"}


@pytest.fixture(scope="module")
def three_members(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> Iterator[Cluster]:
    agents = {name: {"address": address} for name, address in NODES.items()}
    root = Path(tmp_path_factory.mktemp("ha-etcd"))
    cluster = start_ha_cluster(root, agents, servers=1, etcd_members=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def client(three_members: Cluster, docker_client: docker.DockerClient) -> Iterator[ServerClient]:
    with three_members.client() as client:
        yield client
        cluster_id = client.health().cluster_id or "?"
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        try:
            wait_until(
                lambda: not containers(docker_client, cluster_id, "any"),
                60,
                "every container of the test removed",
            )
        except WaitTimeout:
            print(three_members.logs())
            raise


def scaled(client: ServerClient, service: str, instances: int) -> DeployResult | None:
    """The scale's answer, or None while the server cannot reach etcd (503)."""
    try:
        return client.scale(service, instances)
    except ApiError as exc:
        assert exc.status == 503, exc
        return None
    except ServerUnreachable:
        return None


def log_since(path: Path, offset: int) -> str:
    return path.read_bytes()[offset:].decode(errors="replace")


def member_in_use(cluster: Cluster) -> str:
    """The member the server talks to: the last one it says it connected to."""
    log = cluster.processes["server-1"].log.read_text(errors="replace")
    endpoint = re.findall(r"connected to etcd member (\S+)", log)[-1]
    return next(n for n, port in cluster.etcd_members.items() if endpoint.endswith(f":{port}"))


def leads(client: ServerClient) -> bool:
    try:
        return client.health().leader
    except (ServerUnreachable, ApiError):
        return False


def test_losing_the_member_the_server_uses_does_not_stop_the_cluster(
    three_members: Cluster, client: ServerClient, docker_client: docker.DockerClient
) -> None:
    cluster = three_members
    cluster_id = client.health().cluster_id or ""
    deploy(client, steady={**LOOPING, "instances": 2})
    first = {t.id: t.container_id for t in wait_running(client, "steady", 2)}

    # Twice: kill the member the server uses, see it carry on, restart the member.
    victims: list[str] = []
    for instances in (3, 4):
        victim = member_in_use(cluster)
        victims.append(victim)
        lose_member(cluster, client, victim, instances)
        running = {t.id: t.container_id for t in wait_running(client, "steady", instances)}
        assert first.items() <= running.items(), "running tasks were restarted or replaced"
        assert deploy(client, **{f"after-{victim}": {**LOOPING, "instances": 1}}) == ["created"]
        wait_running(client, f"after-{victim}", 1)
        wait_until(lambda: leads(client), 15, "the only server leads")
        assert {n.status for n in client.nodes().nodes} == {"ready"}
        assert_exact(client, cluster_id, docker_client)

        cluster.restart(victim)
        cluster.wait_etcd_member(victim)
    assert victims[0] != victims[1], "the server moved to another member"


def lose_member(cluster: Cluster, client: ServerClient, victim: str, instances: int) -> None:
    """SIGKILL ``victim``, see the server leave it, and scale ``steady`` through the server."""
    server_log = cluster.processes["server-1"].log
    endpoint = f"127.0.0.1:{cluster.etcd_members[victim]}"
    seen = server_log.stat().st_size
    killed_at = time.monotonic()
    cluster.kill(victim)
    wait_until(
        lambda: f"etcd member {endpoint} failed" in log_since(server_log, seen),
        15,
        f"the server notices that {victim} ({endpoint}), its member, is gone",
    )
    wait_until(lambda: scaled(client, "steady", instances), 20, "a scale is accepted")
    print(f"\n{victim} killed: a scale was accepted {time.monotonic() - killed_at:.2f} s later")


def deployed(client: ServerClient, service: str) -> bool:
    """Whether a deploy of one looping task went through (False while the server answers 503
    or cannot be reached)."""
    try:
        deploy(client, **{service: {**LOOPING, "instances": 1}})  # again: "unchanged"
        return True
    except ApiError as exc:
        assert exc.status == 503, exc
        return False
    except ServerUnreachable:
        return False


def test_a_frozen_member_is_left_and_the_watch_goes_with_the_server(
    three_members: Cluster, client: ServerClient
) -> None:
    """A member that hangs (SIGSTOP: its connections stay open and say nothing, and its
    kernel still answers TCP) is left like a dead one, and the server's watch, which only
    reads, is cut there and resumes on the next member: the server's view goes on following
    etcd, so a new task is seen running."""
    cluster = three_members
    victim = member_in_use(cluster)
    server_log = cluster.processes["server-1"].log
    endpoint = f"127.0.0.1:{cluster.etcd_members[victim]}"
    seen = server_log.stat().st_size
    cluster.kill(victim, signal.SIGSTOP)
    try:
        wait_until(
            lambda: f"etcd member {endpoint} failed" in log_since(server_log, seen),
            30,
            f"the server leaves {victim} ({endpoint}), frozen",
        )
        wait_until(lambda: deployed(client, "after-frozen"), 30, "a deploy is accepted")
        wait_running(client, "after-frozen", 1)
    finally:
        cluster.kill(victim, signal.SIGCONT)
    cluster.wait_etcd_member(victim)
