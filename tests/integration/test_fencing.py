"""A cut-off agent fences itself, on loopback with real processes (issue 14, ahead of its
netns test bed): etcd, one server, two docker agents, one of which reaches the server only
through a TCP proxy (``tests/kit/tcp_proxy.py``) that the test cuts, as a dropping firewall
would, while its containers run on.

Then: the server declares the node lost and replaces its tasks on the other node; the cut-off
agent stops the tasks of a group with ``stop_after_server_loss_seconds`` once that long has
passed without a server, and keeps those of a ``never`` group; its discovery socket says that
it cannot reach the server rather than serving a stale view. Healed, the agent registers
again, stops what was replaced, starts nothing on its own: no duplicate remains and the
registry equals the running tasks. The window during which each group ran more than its
``instances`` containers (Docker's word) is measured and printed.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster, free_port, new_cluster
from tests.kit.tcp_proxy import TcpProxy
from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING, containers, deploy, running, wait_running
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

LIVENESS_TIMEOUT = 3  # the server's default
FENCE_AFTER = 8  # the fenced group's setting: past the node's loss and its replacement
DIRECT, CUT = "fence-1", "fence-2"
NODES = {DIRECT: "127.0.0.41", CUT: "127.0.0.42"}
GROUPS: dict[str, dict[str, Any]] = {
    "fenced": {**LOOPING, "instances": 2, "stop_after_server_loss_seconds": FENCE_AFTER},
    "steadfast": {**LOOPING, "instances": 2, "stop_after_server_loss_seconds": "never"},
}


@contextlib.contextmanager
def cut_off_cluster(
    root: Path, docker_client: docker.DockerClient, through: str
) -> Iterator[tuple[Cluster, TcpProxy]]:
    """etcd, servers and the two agents, ``CUT`` on the far side of the proxy: ``through``
    "agent", its agent reaches the one server only through it; "etcd", there are two servers,
    server-2 reaches etcd only through it and ``CUT``'s agent knows only server-2. Everything
    it made is removed afterwards, also when the test fails (containers, which agents leave
    running, too)."""
    cluster = new_cluster(root)
    proxy = TcpProxy(cluster.etcd_port if through == "etcd" else cluster.server_port).start()
    try:
        cluster.start_etcd()
        cluster.start_server(LIVENESS_TIMEOUT, name="server-1")
        servers = [proxy.url]
        if through == "etcd":
            port = free_port()
            etcd = [f"127.0.0.1:{proxy.port}"]
            cluster.start_server(LIVENESS_TIMEOUT, name="server-2", port=port, etcd=etcd)
            servers = [cluster.url_of("server-2")]
        cluster.start_agent(DIRECT, NODES[DIRECT], servers=[cluster.url_of("server-1")])
        cluster.start_agent(CUT, NODES[CUT], servers=servers)
        cluster.wait_nodes_ready()
        yield cluster, proxy
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        proxy.heal()
        _remove_everything(cluster, docker_client)
        cluster.stop()
        proxy.close()


def _remove_everything(cluster: Cluster, docker_client: docker.DockerClient) -> None:
    cluster_id = ""
    try:
        with cluster.client() as client:
            cluster_id = client.health().cluster_id or ""
            for group in client.groups().groups:
                client.remove(group.service, group.labels)
            wait_until(
                lambda: not containers(docker_client, cluster_id, "any"),
                60,
                "every container of the test removed",
            )
    except Exception as exc:  # the cluster is broken: Docker removes what it left
        print(f"cleaning up through Docker: {exc}")
    if cluster_id:
        for container in containers(docker_client, cluster_id, "any"):
            docker_client.api.remove_container(container["Id"], force=True)


def running_on(docker_client: docker.DockerClient, cluster_id: str, node: str) -> Counter[str]:
    """Running containers per service on ``node``."""
    return Counter(
        c["Labels"]["theseus.service"]
        for c in containers(docker_client, cluster_id)
        if c["Labels"].get("theseus.node") == node
    )


class OverInstances:
    """Samples in a thread, every 0.1 s, how many containers of each group run (Docker) and
    keeps the longest stretch during which a group ran more than its ``instances``."""

    def __init__(self, docker_client: docker.DockerClient, cluster_id: str) -> None:
        self.longest: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
        self._since: dict[str, float | None] = dict.fromkeys(GROUPS)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._sample, args=(docker_client, cluster_id), daemon=True
        )
        self._thread.start()

    def _sample(self, docker_client: docker.DockerClient, cluster_id: str) -> None:
        while not self._stop.wait(0.1):
            counts = Counter(
                c["Labels"]["theseus.service"] for c in containers(docker_client, cluster_id)
            )
            self._note(counts, time.monotonic())

    def _note(self, counts: Counter[str], now: float) -> None:
        for service, spec in GROUPS.items():
            since = self._since[service]
            if counts[service] > spec["instances"]:
                self._since[service] = now if since is None else since
                continue
            if since is not None:
                self.longest[service] = max(self.longest[service], now - since)
            self._since[service] = None

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        self._note(Counter(), time.monotonic())  # a stretch still open ends now
        return self.longest


def ask_discovery(socket_path: Path, service: str, answer: dict[str, Any]) -> None:
    """A container's registry read through the agent's discovery socket; its status, body
    and duration go into ``answer``."""
    started = time.monotonic()
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=30) as http:
        response = http.get(f"/v1/registry/{service}")
    answer.update(status=response.status_code, body=response.json())
    answer["seconds"] = time.monotonic() - started


def refuses_reads(url: str) -> bool:
    """Whether the server at ``url`` answers a read with 503 (its view may be stale)."""
    return httpx.get(f"{url}/v1/tasks", timeout=5).status_code == 503


def registered(client: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in client.registry(service).groups for c in g.containers}


def cut_and_heal(
    cluster: Cluster, proxy: TcpProxy, docker_client: docker.DockerClient, refusal: str
) -> dict[str, Any]:
    """The scenario of the module's docstring; what it measured. ``refusal``: what the cut
    agent's discovery socket says during the cut."""
    with cluster.client() as client:  # server-1, which etcd follows throughout
        cluster_id = client.health().cluster_id or ""
        deploy(client, **GROUPS)
        stranded: dict[str, str] = {}  # service -> its task on the node to be cut off
        for service in GROUPS:
            tasks = wait_running(client, service, 2)
            assert {t.node for t in tasks} == set(NODES), "spread: one task per node"
            (stranded[service],) = [t.id for t in tasks if t.node == CUT]

        over = OverInstances(docker_client, cluster_id)
        discovery: dict[str, Any] = {}
        socket_path = cluster.root / "agents" / CUT / "discovery" / "agent.sock"
        asking = threading.Thread(
            target=ask_discovery, args=(socket_path, "fenced", discovery), daemon=True
        )
        proxy.cut()
        cut_at = time.monotonic()
        try:

            def replaced() -> bool:
                for service in GROUPS:
                    tasks = running(client, service)
                    if len(tasks) != 2 or any(t.node == CUT for t in tasks):
                        return False
                    if registered(client, service) != {t.id for t in tasks}:
                        return False
                return True

            wait_until(replaced, 30, f"{CUT} lost, its tasks replaced and unregistered")
            replaced_after = time.monotonic() - cut_at
            assert client.node(CUT).status == "lost"
            if "server-2" in cluster.servers:
                # Its server refuses only once it has gone ``OUT_OF_TOUCH`` (3 s) without
                # proof that it follows etcd; the replacement can be done sooner than that.
                wait_until(
                    lambda: refuses_reads(cluster.url_of("server-2")),
                    10,
                    "server-2 refusing to answer from a view it cannot vouch for",
                )
            # A container asks once the other side has moved on: its registry is stale now.
            asking.start()

            deadline = FENCE_AFTER + 5  # the target: its setting plus 5 s
            wait_until(
                lambda: running_on(docker_client, cluster_id, CUT)["fenced"] == 0,
                max(0.0, cut_at + deadline - time.monotonic()),
                f"{CUT} stopping its fenced task within {deadline} s of the cut",
            )
            fenced_after = time.monotonic() - cut_at
            # Not before its setting: the last heartbeat answered was at most ~1 s before.
            assert fenced_after >= FENCE_AFTER - 2
            assert running_on(docker_client, cluster_id, CUT)["steadfast"] == 1, "never: kept"

            asking.join(30)
            assert discovery.get("status") == 503, discovery
            assert refusal in discovery["body"]["message"]
        finally:
            proxy.heal()
        healed_at = time.monotonic()

        wait_until(lambda: client.node(CUT).status == "ready", 30, f"{CUT} registered again")

        def settled() -> bool:
            on_docker = Counter(
                c["Labels"]["theseus.task"] for c in containers(docker_client, cluster_id)
            )
            assert max(on_docker.values(), default=1) == 1, f"a task runs twice: {on_docker}"
            for service in GROUPS:
                tasks = {t.id for t in running(client, service)}
                if len(tasks) != 2 or registered(client, service) != tasks:
                    return False
            active = {t.id for t in client.tasks().tasks if t.desired == "run"}
            return set(on_docker) == active and not set(stranded.values()) & set(on_docker)

        wait_until(settled, 30, "no duplicate; registry == running tasks == containers")
        converged_after = time.monotonic() - healed_at
        windows = over.stop()
        # Nothing fenced came back, nor ran again afterwards.
        assert running_on(docker_client, cluster_id, CUT)["fenced"] == 0

        def fence_reported() -> tuple[str | None] | None:
            """The fenced task's message once the agent's report of it has arrived (its
            reports back off up to 5 s), or (None,) if the task was collected meanwhile."""
            history = {t.id: t for t in client.tasks(include_stopped=True).tasks}
            task = history.get(stranded["fenced"])
            if task is None:
                return (None,)
            return (task.message,) if (task.message or "").endswith("(fenced)") else None

        (fenced_message,) = wait_until(fence_reported, 15, "the fence reported after the heal")

    measured = {
        "replaced_after_cut_s": round(replaced_after, 2),
        "fenced_after_cut_s": round(fenced_after, 2),
        "setting_s": FENCE_AFTER,
        "over_instances_s": {s: round(w, 2) for s, w in windows.items()},
        "converged_after_heal_s": round(converged_after, 2),
        "discovery_answer_s": round(discovery["seconds"], 2),
        "fenced_task_message": fenced_message,
    }
    print(json.dumps(measured))
    # The fenced group ran over its instances only from its replacement to the fence; the
    # "never" group until the heal, when the returning agent stopped its replaced task.
    assert windows["fenced"] <= FENCE_AFTER + 1
    assert windows["steadfast"] >= windows["fenced"]
    return measured


def test_a_cut_off_agent_fences_itself_and_rejoins_without_duplicates(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    """The agent's link to its server drops: nothing answers it."""
    root = Path(tmp_path_factory.mktemp("fencing"))
    with cut_off_cluster(root, docker_client, "agent") as (cluster, proxy):
        cut_and_heal(cluster, proxy, docker_client, "cannot reach the Theseus server")


def test_a_server_cut_off_from_etcd_does_not_vouch_for_its_agents(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    """The agent reaches its server, but that server has lost etcd: it answers 503 (it
    cannot write that it heard the node), and the server that has etcd declares the node
    lost. The agent fences itself all the same, and the 503 reaches its containers."""
    root = Path(tmp_path_factory.mktemp("fencing-etcd"))
    with cut_off_cluster(root, docker_client, "etcd") as (cluster, proxy):
        cut_and_heal(cluster, proxy, docker_client, "its view may be stale")


def test_an_agent_restarted_while_cut_off_fences_what_it_adopted(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    """The cut-off agent is killed and started again during the cut: it has no assignments
    and reaches no server, so it adopts its containers and fences them by the setting each
    container carries in its labels, counting from its own start."""
    root = Path(tmp_path_factory.mktemp("fencing-restart"))
    with (
        cut_off_cluster(root, docker_client, "agent") as (cluster, proxy),
        cluster.client() as client,
    ):
        cluster_id = client.health().cluster_id or ""
        deploy(client, **GROUPS)
        for service in GROUPS:
            wait_running(client, service, 2)
        assert running_on(docker_client, cluster_id, CUT) == {"fenced": 1, "steadfast": 1}
        proxy.cut()
        try:
            cluster.processes[CUT].stop(signal.SIGKILL)
            cluster.restart(CUT)
            restarted_at = time.monotonic()
            deadline = FENCE_AFTER + 5
            wait_until(
                lambda: running_on(docker_client, cluster_id, CUT)["fenced"] == 0,
                deadline,
                f"the restarted {CUT} to fence its adopted task within {deadline} s",
            )
            fenced_after = time.monotonic() - restarted_at
            assert fenced_after >= FENCE_AFTER - 2, "before its setting"
            assert running_on(docker_client, cluster_id, CUT)["steadfast"] == 1
        finally:
            proxy.heal()
        wait_until(lambda: client.node(CUT).status == "ready", 30, f"{CUT} back")

        def settled() -> bool:
            on_docker = Counter(
                c["Labels"]["theseus.task"] for c in containers(docker_client, cluster_id)
            )
            active = {t.id for t in client.tasks().tasks if t.desired == "run"}
            return set(on_docker) == active and max(on_docker.values(), default=1) == 1

        wait_until(settled, 30, "no duplicate: containers == the tasks meant to run")
        print(f"the restarted agent fenced its adopted task {fenced_after:.1f} s after start")
