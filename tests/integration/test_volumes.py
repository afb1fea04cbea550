"""Volumes on the real cluster: a spec mounts a host volume its node declares, by name
(``theseus agent --host-volume NAME=/path[:ro]``); it is mounted in every task and kept
through a scale and a rolling update (the original dropped volumes on both), a declared
read-only volume is never writable, and a task goes only to nodes that declare what it
mounts, or waits saying why. The session cluster's volumes are in ``conftest.HOST_VOLUMES``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import wait_running
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

LOOP = "while true; do sleep 0.2; done"


def deploy(client: ServerClient, service: str, spec: dict[str, object]) -> None:
    client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")


def test_volumes_survive_scale_and_rolling_update(cluster: Cluster, host_volumes: Path) -> None:
    shared = host_volumes / "shared" / "keeper"
    shared.mkdir()
    shared.chmod(0o777)
    spec = {
        "image": "theseus/busybox:latest",
        "instances": 1,
        "cpus": 0.05,
        "mem": 32,
        "volumes": ["shared:/data"],
        "command": f'echo "$ROUND" > "/data/keeper/$CONTAINER_NAME"; {LOOP}',
        "environment": {"ROUND": "1"},
    }

    def written() -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in shared.iterdir()}

    with cluster.client() as client:
        deploy(client, "keeper", spec)
        first = wait_running(client, "keeper", 1)
        client.scale("keeper", 2)
        scaled = wait_running(client, "keeper", 2)
        wait_until(lambda: set(written()) >= {t.id for t in scaled}, 30, "both wrote")
        deploy(client, "keeper", {**spec, "instances": 2, "environment": {"ROUND": "2"}})

        def rolled() -> list[str] | None:
            tasks = wait_running(client, "keeper", 2)
            ids = [t.id for t in tasks]
            return ids if not set(ids) & {t.id for t in scaled} else None

        new_ids = wait_until(rolled, 60, "the rolling update done")
        wait_until(lambda: all(written().get(i) == "2" for i in new_ids), 30, "new tasks wrote")
        client.remove("keeper")
    assert written()[first[0].id] == "1"


def test_a_read_only_host_volume_is_never_writable(cluster: Cluster, host_volumes: Path) -> None:
    report = host_volumes / "shared" / "readonly-probe"
    spec = {
        "image": "theseus/busybox:latest",
        "cpus": 0.05,
        "mem": 32,
        # No mode given: a volume the node declares :ro is mounted read-only.
        "volumes": ["shared:/out", "readonly:/ro"],
        "command": "if touch /ro/x 2>/dev/null; then echo writable; else echo read-only; fi"
        f" > /out/readonly-probe; {LOOP}",
    }
    with cluster.client() as client:
        deploy(client, "roprobe", spec)
        wait_until(lambda: report.exists() and report.read_text().strip(), 30, "the probe")
        assert report.read_text().strip() == "read-only"
        assert not (host_volumes / "readonly" / "x").exists()


def test_a_task_goes_only_to_nodes_that_declare_its_volume(cluster: Cluster) -> None:
    spec = {"image": "theseus/busybox:latest", "cpus": 0.05, "mem": 32, "command": LOOP}
    with cluster.client() as client:
        deploy(client, "needsdata", {**spec, "instances": 2, "volumes": ["data:/data"]})
        tasks = wait_running(client, "needsdata", 2)
        assert {t.node for t in tasks} == {"node-3"}  # spread would use two nodes otherwise

        pending = {
            "nowhere": (["nowhere:/x"], "3 nodes: no host volume 'nowhere' (--host-volume "),
            "writesro": (["readonly:/x:rw"], "3 nodes: host volume 'readonly' is read-only here"),
        }
        for service, (volumes, _) in pending.items():
            deploy(client, service, {**spec, "volumes": volumes})

        def reasons() -> dict[str, str] | None:
            found = {
                t.service: t.pending_reason or ""
                for t in client.tasks().tasks
                if t.service in pending and t.state == "pending"
            }
            return found if len(found) == len(pending) else None

        found = wait_until(reasons, 30, "both groups pending with their reason")
        for service, (_, reason) in pending.items():
            assert found[service].startswith("0/3 nodes can run it: "), found[service]
            assert reason in found[service], found[service]


def test_nodes_show_their_host_volumes(cluster: Cluster, host_volumes: Path) -> None:
    with cluster.client() as client:
        nodes = {n.name: n for n in client.nodes().nodes}
    three = {v.name: v for v in nodes["node-3"].gates.host_volumes}
    assert sorted(three) == ["data", "readonly", "shared"]
    assert three["readonly"].read_only and not three["data"].read_only
    assert three["data"].path == str((host_volumes / "data").resolve())
    assert "data" not in {v.name for v in nodes["node-1"].gates.host_volumes}
