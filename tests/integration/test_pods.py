"""Pods on a real 3-node cluster (issue: PODS): two busybox containers that talk over
``localhost`` in one network namespace, published once; one member's death ends the whole
pod and a replacement comes up with every member; removal leaves no container (infrastructure
included); an agent restart adopts the pod; logs per member."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy, running, wait_running
from theseus.agent.drivers.base import DriverError, Launch, MemberLaunch, Owner, PortBinding
from theseus.agent.drivers.docker import DockerDriver
from theseus.api.client import ApiError, ServerClient
from theseus.api.schemas import TaskInfo
from theseus.images.containers import remove_cluster_containers

pytestmark = pytest.mark.integration

NODES = {"pod-1": "127.0.0.51", "pod-2": "127.0.0.52", "pod-3": "127.0.0.53"}
IMAGE = "theseus/busybox:latest"
# "server" answers on 127.0.0.1 only: only a container in its network namespace reaches it.
SERVER = (
    "trap 'exit 0' TERM; mkdir -p /www; echo \"hello from $THESEUS_CONTAINER\" > /www/hello.txt;"
    " echo server ready; httpd -f -p 127.0.0.1:8080 -h /www & wait $!"
)
# "client" fetches from the server over localhost and serves what it got on the pod's port.
CLIENT = (
    "trap 'exit 0' TERM; mkdir -p /out; httpd -p 8081 -h /out;"
    " while :; do wget -qO /out/got.tmp http://127.0.0.1:8080/hello.txt"
    ' && mv /out/got.tmp /out/got.txt && echo "client fetched: $(cat /out/got.txt)";'
    " sleep 0.3 & wait $!; done"
)
POD: dict[str, Any] = {
    "ports": {"http": 8081},
    "environment": {"GREETING": "group"},
    "task_kill_grace_period_seconds": 2,
    "containers": [
        {"name": "server", "image": IMAGE, "command": SERVER, "cpus": 0.05, "mem": 32},
        {"name": "client", "image": IMAGE, "command": CLIENT, "cpus": 0.05, "mem": 32},
    ],
}


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents = {name: {"address": address} for name, address in NODES.items()}
    cluster = start_cluster(Path(tmp_path_factory.mktemp("pods")), agents)
    yield cluster
    cluster.stop()


@pytest.fixture
def client(pods: Cluster, docker_client: docker.DockerClient) -> Iterator[ServerClient]:
    """Each test ends with no group and no container of the cluster left."""
    with pods.client() as client:
        yield client
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        wait_until(lambda: not cluster_containers(docker_client, client), 60, "no container")


def cluster_containers(
    docker_client: docker.DockerClient, client: ServerClient, **labels: str
) -> list[dict[str, Any]]:
    wanted = [f"theseus.cluster={client.health().cluster_id}"]
    wanted += [f"theseus.{key}={value}" for key, value in labels.items()]
    return list(docker_client.api.containers(all=True, filters={"label": wanted}))


def pod_containers(docker_client: docker.DockerClient, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's containers by member name ("" for the infrastructure container)."""
    found = docker_client.api.containers(all=True, filters={"label": f"theseus.task={task_id}"})
    return {c["Labels"].get("theseus.pod.member", ""): c for c in found}


def fetched(task: TaskInfo) -> str | None:
    """What the client member got from the server, read through the pod's published port."""
    port = task.ports["http"].host_port
    try:
        response = httpx.get(f"http://{task.address}:{port}/got.txt", timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def one_pod(client: ServerClient) -> TaskInfo:
    deploy(client, pod=POD)
    (task,) = wait_running(client, "pod", 1)
    return task


def test_members_share_localhost_and_the_published_port(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    assert wait_until(lambda: fetched(task), 30, "the client fetched") == "hello from server\n"
    containers = pod_containers(docker_client, task.id)
    assert set(containers) == {"", "server", "client"}
    infra = containers[""]
    assert task.container_id == infra["Id"]  # the task's handle
    assert {c["Labels"]["theseus.node"] for c in containers.values()} == {task.node}
    for name in ("server", "client"):
        inspected = docker_client.api.inspect_container(containers[name]["Id"])
        assert inspected["HostConfig"]["NetworkMode"] == f"container:{infra['Id']}"
        env = dict(e.split("=", 1) for e in inspected["Config"]["Env"])
        assert (env["THESEUS_CONTAINER"], env["GREETING"]) == (name, "group")
        assert env["PORT_HTTP"] == str(task.ports["http"].host_port)
    # The port is published once, by the infrastructure container.
    bindings = docker_client.api.inspect_container(infra["Id"])["HostConfig"]["PortBindings"]
    assert bindings == {
        "8081/tcp": [{"HostIp": task.address, "HostPort": str(task.ports["http"].host_port)}]
    }
    (group,) = client.registry("pod").groups
    (entry,) = group.containers
    assert entry.instance_name == task.id
    assert entry.port_mapping["http"].host_port == task.ports["http"].host_port


def test_logs_interleave_members_or_show_one(
    pods: Cluster, client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    wait_until(lambda: fetched(task), 30, "the client fetched")
    # The client writes what it fetched, then logs it: its line may come a moment later.
    logged = "client | client fetched: hello from server"

    def logs_with_the_clients_line() -> list[str] | None:
        lines = list(client.logs(task.id))
        return lines if logged in lines else None

    lines = wait_until(logs_with_the_clients_line, 30, "the client's line in the pod's logs")
    assert "server | server ready" in lines
    # Following: both members' streams, merged as lines arrive (read in a thread, so that a
    # stream that never delivers fails the test instead of hanging it).
    seen: set[str] = set()

    def follow() -> None:
        with pods.client() as reader:
            for line in reader.logs(task.id, follow=True, tail=1):
                seen.add(line.split(" | ", 1)[0])
                if seen == {"server", "client"}:
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(30)
    assert seen == {"server", "client"}
    server_only = list(client.logs(task.id, container="server"))
    assert server_only == ["server ready"]
    with pytest.raises(ApiError, match="no container 'nope'"):
        list(client.logs(task.id, container="nope"))
    argv = [sys.executable, "-m", "theseus", "--server", pods.server_url, "logs", task.id]
    cli = subprocess.run(
        [*argv, "--container", "client", "--tail", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == "client fetched: hello from server\n"


def test_one_member_dying_ends_the_pod_and_a_whole_new_pod_replaces_it(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    # The client member has fetched once (and logged it) before the server member dies: the
    # old pod's logs are read back below.
    assert wait_until(lambda: fetched(task), 30, "the client fetched") == "hello from server\n"
    since = time.time() - 1
    members = pod_containers(docker_client, task.id)
    docker_client.api.kill(members["server"]["Id"])

    def ended() -> TaskInfo | None:
        old = client.task(task.id)
        return old if old.state == "exited" else None

    old = wait_until(ended, 30, "the pod task exited")
    assert (old.exit_code, old.message) == (137, "container 'server' exited with code 137")
    (new,) = wait_running(client, "pod", 1)
    assert new.id != task.id
    assert wait_until(lambda: fetched(new), 30, "the new pod serves") == "hello from server\n"
    fresh = pod_containers(docker_client, new.id)
    assert {n: c["State"] for n, c in fresh.items()} == {
        "": "running",
        "server": "running",
        "client": "running",
    }
    # The old pod's other member was stopped gracefully (by the agent, as the pod ends
    # whole); its containers stay, stopped, for `theseus logs`, until its record goes.
    wait_until(
        lambda: {c["State"] for c in pod_containers(docker_client, task.id).values()} == {"exited"},
        30,
        "the old pod stopped",
    )
    assert list(client.logs(task.id, container="client"))  # still readable
    events = docker_client.events(
        since=since,
        until=time.time(),
        decode=True,
        filters={"container": members["client"]["Id"], "event": ["kill"]},
    )
    signals = [e["Actor"]["Attributes"].get("signal") for e in events]
    assert signals[:1] == ["15"], signals


def test_removing_the_group_removes_every_container(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    deploy(client, pod={**POD, "instances": 2})
    tasks = wait_running(client, "pod", 2)
    assert len(cluster_containers(docker_client, client, service="pod")) == 6
    assert {len(pod_containers(docker_client, t.id)) for t in tasks} == {3}
    client.remove("pod")
    started = time.monotonic()
    wait_until(
        lambda: not cluster_containers(docker_client, client, service="pod"),
        30,
        "every container of the pods removed, infrastructure ones included",
    )
    assert time.monotonic() - started < 15  # members stop on SIGTERM, not at the grace's end


def test_an_agent_restart_adopts_the_pod(
    pods: Cluster, client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    assert task.node is not None
    before = {
        name: docker_client.api.inspect_container(c["Id"])["State"]["StartedAt"]
        for name, c in pod_containers(docker_client, task.id).items()
    }
    pods.processes[task.node].stop(signal.SIGKILL)
    pods.start_agent(task.node, NODES[task.node])
    pods.wait_nodes_ready()

    log = pods.processes[task.node].log
    adoption = f"adopted {task.id} (running)"
    wait_until(lambda: adoption in log.read_text(), 30, "the restarted agent adopted the pod")
    assert [t.id for t in running(client, "pod")] == [task.id]
    after = {
        name: docker_client.api.inspect_container(c["Id"])["State"]["StartedAt"]
        for name, c in pod_containers(docker_client, task.id).items()
    }
    assert after == before, "same containers, never restarted"
    assert client.task(task.id).container_id == task.container_id
    assert wait_until(lambda: fetched(task), 30, "still serving") == "hello from server\n"


def test_a_pod_removed_while_its_agent_was_away_is_cleaned_up(
    pods: Cluster, client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    assert task.node is not None
    pods.processes[task.node].stop(signal.SIGKILL)
    client.remove("pod")  # decided while the agent is away: its pod is now a stray
    assert len(pod_containers(docker_client, task.id)) == 3
    pods.start_agent(task.node, NODES[task.node])
    wait_until(
        lambda: not pod_containers(docker_client, task.id), 30, "the stray pod removed whole"
    )


async def test_exec_runs_in_the_named_member_or_the_first(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    assert task.node is not None and task.address is not None and task.container_id
    wait_until(lambda: fetched(task), 30, "the client fetched")
    driver = DockerDriver()
    await driver.open(Owner(task.node, task.address, client.health().cluster_id), print)
    try:
        handle = task.container_id
        assert await driver.exec(handle, "echo $THESEUS_CONTAINER", 5, "client") == (
            0,
            "client\n",
        )
        assert await driver.exec(handle, "echo $THESEUS_CONTAINER; exit 3", 5) == (3, "server\n")
        # The members share the network: the client reaches the server's 127.0.0.1 address.
        wget = "wget -qO- http://127.0.0.1:8080/hello.txt"
        assert await driver.exec(handle, wget, 5, "client") == (0, "hello from server\n")
        with pytest.raises(DriverError, match="no container 'nope'"):
            await driver.exec(handle, "true", 5, "nope")
    finally:
        await driver.close()


async def test_theseus_down_removes_every_container_of_a_pod(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    task = one_pod(client)
    cluster_id = client.health().cluster_id
    assert cluster_id
    removed = await remove_cluster_containers(cluster_id)  # what `theseus down` calls
    assert removed >= 3
    assert not pod_containers(docker_client, task.id)


async def test_a_pod_that_cannot_start_leaves_nothing_behind(
    docker_client: docker.DockerClient, busybox_image: str
) -> None:
    owner = Owner("pod-driver", NODES["pod-1"], f"pods-{uuid.uuid4().hex[:8]}")
    members = [
        MemberLaunch("a", busybox_image, {}, 0.05, 32, command="sleep 30"),
        MemberLaunch("b", "theseus/no-such-image:1", {}, 0.05, 32),
    ]
    task_id = f"pod.{uuid.uuid4().hex[:12]}"
    base = Launch(task_id, busybox_image, {}, labels_of(owner, task_id), [], 0.1, 64)
    driver = DockerDriver()
    await driver.open(owner, print)
    taken = socket.socket()
    try:
        with pytest.raises(DriverError, match="container 'b': image 'theseus/no-such-image:1'"):
            await driver.start(replace(base, members=members))
        assert not await driver.list_tasks()
        taken.bind((owner.address, 0))
        taken.listen()
        port = PortBinding("http", 8080, taken.getsockname()[1])
        with pytest.raises(DriverError, match="could not start the pod's network container"):
            await driver.start(replace(base, members=members[:1], ports=[port]))
        assert not await driver.list_tasks()
    finally:
        taken.close()
        await driver.close()
        for container in docker_client.api.containers(
            all=True, filters={"label": f"theseus.cluster={owner.cluster_id}"}
        ):
            docker_client.api.remove_container(container["Id"], force=True)


def labels_of(owner: Owner, task_id: str) -> dict[str, str]:
    return {
        "theseus.task": task_id,
        "theseus.node": owner.node,
        "theseus.cluster": owner.cluster_id,
    }


def test_a_members_failing_health_check_runs_in_that_member_and_replaces_the_pod(
    client: ServerClient, docker_client: docker.DockerClient
) -> None:
    """A COMMAND check of the "client" member runs inside that member (the directory it
    tests exists only there, not in "server", the first member); when it fails, the pod
    leaves the registry and is replaced whole."""
    check = {
        "protocol": "COMMAND",
        "command": "test -d /out",
        "interval_seconds": 0.5,
        "timeout_seconds": 2,  # a docker exec on a loaded machine can take over 1 s
        "grace_period_seconds": 10,
        "max_consecutive_failures": 3,
    }
    members = [POD["containers"][0], dict(POD["containers"][1], health_checks=[check])]
    deploy(client, pod={**POD, "containers": members})

    def healthy_task() -> TaskInfo | None:
        tasks = [t for t in running(client, "pod") if t.health == "healthy"]
        return tasks[0] if len(tasks) == 1 else None

    task = wait_until(healthy_task, 30, "a healthy pod")
    wait_until(lambda: registered(client) == {task.id}, 10, "the pod registered")
    member = pod_containers(docker_client, task.id)["client"]
    # Renamed, not removed: the client's loop writes into /out every 0.3 s, and a file it
    # creates while `rm -rf` runs leaves the directory in place (its rmdir then fails).
    moved = docker_client.containers.get(member["Id"]).exec_run(["mv", "/out", "/out.gone"])
    assert moved.exit_code == 0, moved.output

    wait_until(lambda: task.id not in registered(client), 10, "the pod out of the registry")
    replacement = wait_until(
        lambda: (t := healthy_task()) is not None and t.id != task.id and t, 30, "a new pod"
    )
    assert set(pod_containers(docker_client, replacement.id)) == {"", "server", "client"}
    gone = client.task(task.id)
    assert gone.stop_reason is not None and "health checks" in gone.stop_reason
    wait_until(lambda: registered(client) == {replacement.id}, 10, "the new pod registered")


def registered(client: ServerClient) -> set[str]:
    return {c.instance_name for g in client.registry("pod").groups for c in g.containers}
