"""Volumes (the original's key) on the real cluster: mounted in every task, and kept through
a scale and a rolling update (the original dropped them on both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import wait_running

pytestmark = pytest.mark.integration


def test_volumes_survive_scale_and_rolling_update(cluster: Cluster, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    spec = {
        "image": "theseus/busybox:latest",
        "instances": 1,
        "cpus": 0.05,
        "mem": 32,
        "volumes": [f"{shared}:/data"],
        "command": 'echo "$ROUND" > "/data/$CONTAINER_NAME"; while true; do sleep 0.2; done',
        "environment": {"ROUND": "1"},
    }

    def written() -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in shared.iterdir()}

    with cluster.client() as client:
        client.deploy(json.dumps({"deploy": {"keeper": spec}}), "application/json")
        first = wait_running(client, "keeper", 1)
        client.scale("keeper", 2)
        scaled = wait_running(client, "keeper", 2)
        wait_until(lambda: set(written()) >= {t.id for t in scaled}, 30, "both wrote")
        rolled_spec = {**spec, "instances": 2, "environment": {"ROUND": "2"}}
        client.deploy(json.dumps({"deploy": {"keeper": rolled_spec}}), "application/json")

        def rolled() -> list[str] | None:
            tasks = wait_running(client, "keeper", 2)
            ids = [t.id for t in tasks]
            return ids if not set(ids) & {t.id for t in scaled} else None

        new_ids = wait_until(rolled, 60, "the rolling update done")
        wait_until(lambda: all(written().get(i) == "2" for i in new_ids), 30, "new tasks wrote")
        client.remove("keeper")
    assert written()[first[0].id] == "1"
