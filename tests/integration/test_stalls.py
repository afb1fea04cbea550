"""A stall of the leader is never blamed on the nodes (issue 17, first point).

The one server is frozen (SIGSTOP) for 15 s: it answers no heartbeat meanwhile, so no node is
heard for five times its TTL (``theseus.server.liveness``). Woken, the leader knows that it was
stalled (``theseus.server.stall``): it counts no node unheard since before the stall's end, and
declares none lost within the grace after it, in which the agents are heard again. No task is
replaced, no container is touched, and the registry keeps them (real etcd, server and Docker
agents).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import docker
import pytest

from tests.kit.cluster import start_cluster
from tests.kit.wait import unless_unavailable, wait_until
from tests.kit.workloads import LOOPING, deploy, etcd_dump, etcd_revision, wait_running
from theseus.api.client import ServerClient
from theseus.store import keys

pytestmark = pytest.mark.integration

AGENTS = {"stall-1": {"address": "127.0.0.51"}, "stall-2": {"address": "127.0.0.52"}}
STALL_SECONDS = 15  # the fault itself: the three 20 MB bodies stall a leader this long
HOLD_SECONDS = 8  # the grace (TTL 3 s + one heartbeat) and then some: nothing may move


def registered(client: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in client.registry(service).groups for c in g.containers}


def test_a_stalled_leader_replaces_no_task_on_live_nodes(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    cluster = start_cluster(tmp_path, AGENTS, liveness_timeout=3)
    cluster_id = None
    try:
        with cluster.client() as client:
            cluster_id = client.health().cluster_id
            deploy(client, steady={**LOOPING, "instances": 4})
            before = {t.id for t in wait_running(client, "steady", 4)}
            wait_until(lambda: registered(client, "steady") == before, 30, "4 registered")
            containers = {
                c.id
                for c in docker_client.containers.list(
                    filters={"label": f"theseus.cluster={cluster_id}"}
                )
            }
            cluster.kill("server", signal.SIGSTOP)
            try:
                # The stall: its length is the fault being injected, not a wait for anything.
                # A second into it (a write the server had sent before it stopped is in),
                # what the server last wrote of the nodes it heard...
                time.sleep(1.0)
                heard_before = etcd_dump(cluster, keys.HEARD)
                time.sleep(STALL_SECONDS - 1.0)
                # ...is still all: no node was heard for 14 s, nearly five TTLs.
                assert heard_before and etcd_dump(cluster, keys.HEARD) == heard_before
            finally:
                cluster.kill("server", signal.SIGCONT)
            woken_at = time.monotonic()
            # What etcd holds at the wake. The woken server answers as soon as its cache
            # follows etcd again, so "ready" means: ready in a view that has it all.
            woken_revision = etcd_revision(cluster)
            wait_until(
                unless_unavailable(
                    lambda: (
                        client.health().revision >= woken_revision
                        and all(n.status == "ready" for n in client.nodes().nodes)
                        and len(client.nodes().nodes) == 2
                    )
                ),
                30,
                "both nodes ready again",
            )
            ready_after = time.monotonic() - woken_at
            # Held over a window (not a wait): past the grace, nothing was lost or replaced.
            while time.monotonic() - woken_at < HOLD_SECONDS:
                tasks = client.tasks("steady").tasks
                assert {t.id for t in tasks if t.desired == "run"} == before, tasks
                assert all(t.state == "running" for t in tasks), [
                    (t.id, t.node, t.state, t.desired) for t in tasks
                ]
                time.sleep(0.25)
            assert registered(client, "steady") == before
            after = {
                c.id
                for c in docker_client.containers.list(
                    filters={"label": f"theseus.cluster={cluster_id}"}
                )
            }
            assert after == containers, "a container was replaced"
            print(f"stalled {STALL_SECONDS} s; both nodes ready {ready_after:.1f} s after it")
            client.remove("steady")
    finally:
        cluster.stop()
        if cluster_id is not None:
            for container in docker_client.containers.list(
                all=True, filters={"label": f"theseus.cluster={cluster_id}"}
            ):
                container.remove(force=True)
